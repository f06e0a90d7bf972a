"""A thread whose opening message the person rewrote is theirs: never deleted as "pristine",
never overwritten by ``--update-unreplied``.

OpenWebUI lets every user edit any message of their own chats, the assistant's included
(the edit button; ``POST /api/v1/chats/{id}`` stores the edited ``history``). A thread still
holding one assistant message is not necessarily ours any more: its text may be the
person's. Before this, "pristine" only counted messages, so ``remove`` (without
``--including-replied``) deleted the person's text, a duplicate holding it was deleted as a
leftover, and ``--update-unreplied`` wrote the course's text over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, OPENING_KEY, as_thread, build_chat, plan, update_for
from proxy.chat_update import refusal
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import LOOKUP_EMAIL
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock

EMAIL = "ada@example.edu"
THEIR_TEXT = "My own notes for the exam: do not lose these."


def edit_opening(chat: dict[str, Any], text: str) -> None:
    """What OpenWebUI stores when the person edits the assistant's message in place."""
    history = chat["history"]
    message = history["messages"][history["currentId"]]
    message["content"] = text
    chat["messages"] = [message]


def whole(chat: dict[str, Any], chat_id: str = "c1", created_at: int = 1) -> dict[str, Any]:
    return {"id": chat_id, "created_at": created_at, "archived": True, "chat": chat}


def test_an_edited_opening_is_not_pristine(course: Course) -> None:
    module = course.modules[0]
    chat = build_chat(course, module)
    edit_opening(chat, THEIR_TEXT)

    thread = as_thread(whole(chat), "demo", module.id)

    assert thread is not None
    assert thread.replied
    assert update_for(thread, course, module) is None


def test_an_untouched_opening_is_still_pristine(course: Course) -> None:
    module = course.modules[0]
    thread = as_thread(whole(build_chat(course, module)), "demo", module.id)
    assert thread is not None
    assert thread.pristine


def test_a_duplicate_holding_the_persons_text_is_kept_not_deleted(course: Course) -> None:
    module = course.modules[0]
    first = as_thread(whole(build_chat(course, module), "a", 1), "demo", module.id)
    edited = build_chat(course, module)
    edit_opening(edited, THEIR_TEXT)
    second = as_thread(whole(edited, "b", 2), "demo", module.id)
    assert first is not None
    assert second is not None

    decided = plan([first, second])

    assert decided is not None
    assert decided.delete == ()
    assert [t.id for t in decided.keep] == ["b"]


def test_our_update_is_one_the_internal_listener_relays_and_the_thread_stays_ours(
    course: Course,
) -> None:
    """``--update-unreplied`` changes content, model and modelName, and the digest to the
    new content's (the internal listener refuses anything else, ``proxy/chat_update.py``):
    the rewritten thread is pristine again, so a later change of the text is applied too."""
    module = course.modules[0]
    chat = build_chat(course, module)
    changed = module.model_copy(update={"first_message": "New text."})
    new_course = course.model_copy(update={"modules": (changed, *course.modules[1:])})
    stored = whole(chat)
    thread = as_thread(stored, "demo", module.id)
    assert thread is not None
    update = update_for(thread, new_course, changed)
    assert update is not None
    assert refusal(json.dumps({"chat": update}).encode(), stored) is None
    merged = {**chat, **update}  # top-level keys replace; the one message is replaced whole
    merged["history"] = {**chat["history"], "messages": update["history"]["messages"]}

    again = as_thread(whole(merged), "demo", module.id)

    assert again is not None
    assert again.pristine
    assert again.ours_with(changed.first_message)
    assert update_for(again, new_course, changed) is None  # up to date
    later = changed.model_copy(update={"first_message": "Newer text."})
    later_course = course.model_copy(update={"modules": (later, *course.modules[1:])})
    assert update_for(again, later_course, later) is not None  # the next change applies too
    decided = plan([again], changed.first_message)
    assert decided is not None


def test_a_duplicate_holding_the_current_text_is_still_deleted(course: Course) -> None:
    module = course.modules[0]
    first = as_thread(whole(build_chat(course, module), "a", 1), "demo", module.id)
    rewritten = build_chat(course, module)
    edit_opening(rewritten, module.first_message + " ")
    edit_opening(rewritten, module.first_message)  # the text is the course's own again
    rewritten["history"]["messages"][rewritten["history"]["currentId"]].pop(OPENING_KEY)
    second = as_thread(whole(rewritten, "b", 2), "demo", module.id)
    assert first is not None
    assert second is not None

    decided = plan([first, second], module.first_message)

    assert decided is not None
    assert [t.id for t in decided.delete] == ["b"]


async def test_remove_keeps_a_thread_whose_opening_the_person_rewrote(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    user = fake.add_user(EMAIL)
    intro = build_chat(course, course.modules[0])
    edit_opening(intro, THEIR_TEXT)
    kept = fake.add_chat(user, intro, archived=True, created_at=1)
    gone = fake.add_chat(user, build_chat(course, course.modules[1]), archived=True, created_at=1)

    result = await run(env, "remove", str(course_file), EMAIL)

    assert result.rc == 0, result.err
    assert sorted((line["result"], line["chat_id"]) for line in result.lines()) == sorted(
        [("kept", kept.id), ("deleted", gone.id)]
    )
    (left,) = fake.chats_of(EMAIL)
    assert left.chat["history"]["messages"][left.chat["history"]["currentId"]]["content"] == (
        THEIR_TEXT
    )


async def test_update_unreplied_leaves_an_edited_opening_alone(
    fake: FakeOpenWebUI, course: Course, settings: Settings, clock: FastClock
) -> None:
    user = fake.add_user(EMAIL)
    intro = build_chat(course, course.modules[0])
    edit_opening(intro, THEIR_TEXT)
    chat = fake.add_chat(user, intro, archived=True, created_at=1)
    fake.add_chat(user, build_chat(course, course.modules[1]), archived=True, created_at=1)
    changed = course.modules[0].model_copy(update={"first_message": "Rewritten by staff."})
    new_course = course.model_copy(update={"modules": (changed, *course.modules[1:])})

    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        updating = Provisioner(api, settings, sleep=clock.sleep, update_unreplied=True)
        await updating.provision_user([new_course], EMAIL)

    stored = fake.chats[chat.id].chat
    assert stored["history"]["messages"][stored["history"]["currentId"]]["content"] == THEIR_TEXT
    assert stored[MARKER_KEY]["module"] == "intro"


def test_a_digest_the_person_wrote_oddly_is_not_ours(course: Course) -> None:
    module = course.modules[0]
    for odd in ("é" * 64, None, 7, ["x"]):
        chat = build_chat(course, module)
        history = chat["history"]
        history["messages"][history["currentId"]]["owui_gate_sha256"] = odd
        thread = as_thread(whole(chat), "demo", module.id)
        assert thread is not None
        assert thread.replied
