"""A marker of any shape in a person's chat JSON is read without an error.

The chat JSON is the person's to write (``POST /api/v1/chats/{id}`` stores top-level keys
as given, ``POST /api/v1/chats/import`` stores whole chats): a student could give one of
their chats ``{"owui_gate": {"course": ["demo"], ...}}``. Reading markers raised
``TypeError: unhashable type`` on that (``left_behind`` looked the value up in a set), which
is no :class:`ProvisionError`: it escaped ``bulk``'s per-user handling and stopped the whole
run, for every other person of the roster too, with a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.course import Course
from provisioner.threads import (
    MARKER_KEY,
    build_chat,
    course_threads,
    left_behind,
    threads_by_module,
)
from tests.provisioner.cli_helpers import run
from tests.provisioner.fake_owui import FakeOpenWebUI

ODD_MARKERS: list[Any] = [
    {"course": ["demo"], "module": "intro"},
    {"course": "demo", "module": ["intro"]},
    {"course": {"a": 1}, "module": {"b": 2}},
    {"course": None, "module": "intro"},
    ["demo", "intro"],
    "demo/intro",
    7,
]


@pytest.mark.parametrize("odd", ODD_MARKERS)
def test_odd_markers_are_nobodys_threads(course: Course, odd: Any) -> None:
    chat = build_chat(course, course.modules[0])
    chat[MARKER_KEY] = odd
    chats = [{"id": "x", "created_at": 1, "chat": chat}]
    wanted = [("demo", "intro"), ("demo", "next")]

    assert left_behind(chats, wanted) == []
    assert left_behind(chats, set(wanted)) == []
    assert threads_by_module(chats, wanted) == {key: [] for key in wanted}
    assert course_threads(chats, ["demo"]) == {}
    assert course_threads(chats, {"demo"}) == {}


async def test_one_students_odd_marker_does_not_stop_bulk_for_everyone(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    odd = fake.add_user("odd@example.edu")
    chat = build_chat(course, course.modules[0])
    chat[MARKER_KEY] = {"course": ["demo"], "module": "intro"}
    fake.add_chat(odd, chat)
    roster = tmp_path / "roster.csv"
    roster.write_text("email\nodd@example.edu\nada@example.edu\n", encoding="utf-8")

    result = await run(env, "bulk", str(course_file), str(roster))

    assert result.rc == 0, result.err
    assert "Traceback" not in result.err
    for email in ("odd@example.edu", "ada@example.edu"):
        modules = sorted(
            c.chat[MARKER_KEY]["module"]
            for c in fake.chats_of(email)
            if isinstance(c.chat.get(MARKER_KEY), dict)
            and c.chat[MARKER_KEY].get("course") == "demo"
        )
        assert modules == ["intro", "next"], email
