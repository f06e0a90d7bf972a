"""Pure policy: winner choice, thread recognition, backoff, Retry-After. Tables."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from provisioner.course import Course
from provisioner.retry import backoff_delay, is_transient
from provisioner.threads import (
    MARKER_KEY,
    Thread,
    as_thread,
    build_chat,
    plan,
    tag,
    tag_prefixes,
    title_matches,
)
from proxy.retry_after import parse_retry_after


def T(chat_id: str, created_at: int, *, archived: bool = True, pristine: bool = True) -> Thread:
    return Thread(chat_id, created_at, archived, pristine)


@pytest.mark.parametrize(
    ("threads", "winner", "deleted", "kept"),
    [
        pytest.param([], None, [], [], id="nothing"),
        pytest.param([T("a", 5)], "a", [], [], id="one"),
        pytest.param([T("b", 5), T("a", 9)], "b", ["a"], [], id="oldest wins over smaller id"),
        pytest.param([T("b", 5), T("a", 5)], "a", ["b"], [], id="tie: smallest id"),
        pytest.param(
            [T("a", 5, archived=False), T("b", 6, archived=True)],
            "a",
            ["b"],
            [],
            id="state plays no part (it changes while processes look)",
        ),
        pytest.param(
            [T("a", 5), T("b", 6, pristine=False), T("c", 7)],
            "a",
            ["c"],
            ["b"],
            id="a duplicate with user messages is kept",
        ),
        pytest.param(
            [T("b", 6), T("a", 5, pristine=False)],
            "a",
            ["b"],
            [],
            id="the winner may hold user messages",
        ),
    ],
)
def test_plan(
    threads: list[Thread], winner: str | None, deleted: list[str], kept: list[str]
) -> None:
    decision = plan(threads)
    if winner is None:
        assert decision is None
        return
    assert decision is not None
    assert decision.winner.id == winner
    assert [t.id for t in decision.delete] == deleted
    assert [t.id for t in decision.keep] == kept


def test_plan_is_the_same_whatever_order_threads_are_seen_in() -> None:
    threads = [T("c", 3), T("a", 3), T("b", 2), T("d", 9)]
    winners = set()
    for order in (threads, threads[::-1], sorted(threads, key=str)):
        decision = plan(order)
        assert decision is not None
        winners.add(decision.winner.id)
    assert winners == {"b"}


def _chat(course: Course, **changes: Any) -> dict[str, Any]:
    body = build_chat(course, course.modules[0])
    body.update(changes.pop("body", {}))
    return {"id": "x", "created_at": 10, "archived": False, "chat": body} | changes


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, "thread", id="ours"),
        pytest.param(
            {"body": {MARKER_KEY: {"course": "demo", "module": "next"}}}, None, id="other module"
        ),
        pytest.param(
            {"body": {MARKER_KEY: {"course": "other", "module": "intro"}}}, None, id="other course"
        ),
        pytest.param({"body": {MARKER_KEY: None}}, None, id="no marker"),
        pytest.param({"body": {"originalChatId": "x"}}, None, id="a clone or fork"),
        pytest.param({"created_at": "10"}, None, id="odd created_at"),
    ],
)
def test_as_thread(course: Course, changes: dict[str, Any], expected: str | None) -> None:
    thread = as_thread(_chat(course, **changes), "demo", "intro")
    assert (thread is not None) == (expected == "thread")


def test_pristine_until_the_user_writes(course: Course) -> None:
    chat = _chat(course)
    assert as_thread(chat, "demo", "intro").pristine  # type: ignore[union-attr]
    chat["chat"]["history"]["messages"]["u"] = {"id": "u", "role": "user", "content": "hi"}
    assert not as_thread(chat, "demo", "intro").pristine  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Module 1: Intro [demo/intro]", True),
        ("renamed but tag kept [demo/intro]", True),
        ("Module 1: Intro [demo/intro-2]", False),
        ("Module 1: Intro [demo/intr]", False),
        ("Module 1: Intro", False),
        (None, False),
        (f"Module 1: Intro {tag('demo', 'intro', 'hidden')}", True),
        (f"Module 1: Intro {tag('demo', 'intro-2', 'hidden')}", False),
        (f"Module 1: Intro {tag('demo-2', 'intro', 'hidden')}", False),
        (f"Module 1: Intro {tag('demo', 'intr', 'hidden')}", False),
    ],
)
def test_title_matches(title: object, expected: bool) -> None:
    assert title_matches(title, "demo", "intro") is expected


def test_the_hidden_tag_shows_nothing_but_the_title(course: Course) -> None:
    """After the title and a space, only invisible format characters (category Cf)."""
    title = build_chat(course, course.modules[0])["title"]
    shown, hidden = title[: len("Module 1: Intro ")], title[len("Module 1: Intro ") :]
    assert shown == "Module 1: Intro "
    assert hidden
    assert {unicodedata.category(char) for char in hidden} == {"Cf"}
    visible = build_chat(course, course.modules[0], title_tag="visible")["title"]
    assert visible == "Module 1: Intro [demo/intro]"


@pytest.mark.parametrize("course_id", ["demo", "a", "z9-x", "-" * 64])
def test_course_prefixes_start_every_tag_of_the_course(course_id: str) -> None:
    for form, prefix in zip(("visible", "hidden"), tag_prefixes(course_id), strict=True):
        assert tag(course_id, "intro", form).startswith(prefix)  # type: ignore[arg-type]
        assert not tag(course_id + "x", "intro", form).startswith(prefix)  # type: ignore[arg-type]


def test_chat_json_is_consistent(course: Course) -> None:
    body = build_chat(course, course.modules[1], now=1_700_000_000.5, message_id="m1")
    message = body["history"]["messages"]["m1"]
    assert body["history"]["currentId"] == "m1"
    assert body["messages"] == [message]
    assert message["model"] == message["modelName"] == "other-model"
    assert body["models"] == ["other-model"]
    assert message["timestamp"] == 1_700_000_000
    assert body["timestamp"] == 1_700_000_000_500


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (501, False),
        (400, False),
        (401, False),
        (404, False),
        (407, False),
        (422, False),
    ],
)
def test_is_transient(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 2026 00:00:10 GMT", 10.0),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("-3", None),
        ("\u0665", None),  # ARABIC-INDIC DIGIT FIVE: float() would read it as 5
        ("9" * 5000, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_767_225_600.0) == expected


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (1, 1.0, None, 0.5),
        (2, 1.0, None, 1.0),
        (3, 0.5, None, 1.0),
        (10, 1.0, None, 10.0),  # capped
        (1, 0.0, None, 0.0),  # full jitter
        (1, 0.0, 4.0, 4.0),  # Retry-After is a floor
        (5, 1.0, 1.0, 8.0),
    ],
)
def test_backoff_delay(
    attempt: int, rand: float, retry_after: float | None, expected: float
) -> None:
    delay = backoff_delay(
        attempt, base_s=0.5, max_s=10, retry_after_s=retry_after, rand=lambda: rand
    )
    assert delay == pytest.approx(expected)
