"""A course that changes during the term: modules added, removed, first messages rewritten."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock

EMAIL = "ada@example.edu"


def thread_of(fake: FakeOpenWebUI, module: str) -> object:
    (chat,) = [c for c in fake.chats_of(EMAIL) if c.chat[MARKER_KEY]["module"] == module]
    return chat


def opening(fake: FakeOpenWebUI, module: str) -> str:
    chat = thread_of(fake, module)
    history = chat.chat["history"]  # type: ignore[attr-defined]
    return str(history["messages"][history["currentId"]]["content"])


async def run_updating(settings: Settings, clock: FastClock, course: Course) -> list[Any]:
    """``--update-unreplied``: a provisioner with that option, its own client."""
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        updating = Provisioner(api, settings, sleep=clock.sleep, update_unreplied=True)
        return list(await updating.provision_user([course], EMAIL))


def with_first_message(course: Course, text: str) -> Course:
    modules = [course.modules[0].model_copy(update={"first_message": text}), *course.modules[1:]]
    return course.model_copy(update={"modules": tuple(modules)})


async def test_a_module_added_to_the_course_reaches_an_existing_user(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    first_only = course.model_copy(update={"modules": course.modules[:1]})
    await provisioner.provision_user([first_only], EMAIL)

    results = await provisioner.provision_user([course], EMAIL)

    assert [(r.module, r.status) for r in results] == [("intro", "existing"), ("next", "created")]
    assert all(c.archived for c in fake.chats_of(EMAIL))
    assert len(fake.chats_of(EMAIL)) == 2


async def test_a_module_removed_from_the_course_is_left_alone_and_reported(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    await provisioner.provision_user([course], EMAIL)
    first_only = course.model_copy(update={"modules": course.modules[:1]})

    with capture_logs() as logs:
        results = await provisioner.provision_user([first_only], EMAIL)

    assert [r.module for r in results] == ["intro"]
    assert len(fake.chats_of(EMAIL)) == 2
    kept = thread_of(fake, "next")
    reports = [entry for entry in logs if entry["event"].startswith("left alone")]
    assert [(r["course"], r["module"], r["chat_id"]) for r in reports] == [
        ("demo", "next", kept.id)  # type: ignore[attr-defined]
    ]


async def test_a_changed_first_message_is_applied_only_when_asked(
    provisioner: Provisioner,
    fake: FakeOpenWebUI,
    course: Course,
    settings: Settings,
    clock: FastClock,
) -> None:
    first = await provisioner.provision_user([course], EMAIL)
    changed = with_first_message(course, "Welcome back, **new text**.")

    again = await provisioner.provision_user([changed], EMAIL)
    assert opening(fake, "intro") == "Hello **student**!"
    assert fake.count("POST", r"/api/v1/chats/[^/]+") == 2  # the creates only: no update

    updated = await run_updating(settings, clock, changed)

    assert opening(fake, "intro") == "Welcome back, **new text**."
    assert opening(fake, "next") == "Second module."
    assert [r.chat_id for r in updated] == [r.chat_id for r in first] == [r.chat_id for r in again]
    assert all(c.archived for c in fake.chats_of(EMAIL))
    body = thread_of(fake, "intro").chat  # type: ignore[attr-defined]
    assert [m["content"] for m in body["messages"]] == ["Welcome back, **new text**."]


async def test_a_thread_the_user_has_continued_is_never_changed(
    provisioner: Provisioner,
    fake: FakeOpenWebUI,
    course: Course,
    settings: Settings,
    clock: FastClock,
) -> None:
    await provisioner.provision_user([course], EMAIL)
    chat = thread_of(fake, "intro")
    history = chat.chat["history"]  # type: ignore[attr-defined]
    root = history["currentId"]
    history["messages"]["u1"] = {"id": "u1", "parentId": root, "role": "user", "content": "hi"}
    history["messages"][root]["childrenIds"] = ["u1"]
    history["currentId"] = "u1"
    before = fake.count("POST", r"/api/v1/chats/[^/]+")

    await run_updating(settings, clock, with_first_message(course, "Rewritten."))

    assert history["messages"][root]["content"] == "Hello **student**!"
    assert history["currentId"] == "u1"
    assert fake.count("POST", r"/api/v1/chats/[^/]+") == before


@pytest.mark.parametrize("own_chats", [0, 120], ids=["one look", "title lists (100+ chats)"])
async def test_threads_titled_the_old_way_are_recognised_after_upgrading(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course, own_chats: int
) -> None:
    """Threads made with the visible tag, archived or not: no duplicate, none retitled."""
    user = fake.add_user(EMAIL)
    for n in range(own_chats):
        fake.add_chat(user, {"title": f"homework {n}"}, archived=n % 2 == 0, created_at=n)
    old = [
        fake.add_chat(user, build_chat(course, module, title_tag="visible"), archived=archived)
        for module, archived in zip(course.modules, (True, False), strict=True)
    ]

    results = await provisioner.provision_user([course], EMAIL)

    assert [(r.chat_id, r.status) for r in results] == [(c.id, "existing") for c in old]
    assert fake.count("POST", "/api/v1/chats/new") == 0
    assert [c.title for c in old] == [f"{m.title} [demo/{m.id}]" for m in course.modules]
    assert all(c.archived for c in old)
    assert len(fake.chats_of(EMAIL)) == own_chats + 2
