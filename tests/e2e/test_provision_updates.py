"""Course changes and titles against the real OpenWebUI: --update-unreplied, hidden tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from demo.stack import Stack
from provisioner.threads import tag, tag_prefixes
from tests.e2e.conftest import (
    COURSE,
    COURSE_FILE,
    archived_chats,
    direct_client,
    first_message,
    fresh_email,
    provision,
)

pytestmark = pytest.mark.e2e

OLD = "Welcome to the **end-to-end** course! This thread was created for you."
NEW = "Welcome back: the **intro** has new text this term."


def changed_course(tmp_path: Path) -> Path:
    text = COURSE_FILE.read_text(encoding="utf-8")
    assert OLD in text
    path = tmp_path / "course.toml"
    path.write_text(text.replace(OLD, NEW), encoding="utf-8")
    return path


def by_module(the_stack: Stack, email: str) -> dict[str, dict[str, Any]]:
    chats = {}
    for chat in archived_chats(the_stack, email):
        chats[chat["chat"]["owui_gate"]["module"]] = chat
    return chats


def test_update_unreplied_rewrites_untouched_threads_and_never_a_continued_one(
    proxy: Stack, tmp_path: Path
) -> None:
    untouched, continued = fresh_email("untouched"), fresh_email("continued")
    for email in (untouched, continued):
        assert provision(proxy, "user", str(COURSE_FILE), email).returncode == 0
    # The second student replies in the intro thread, through OpenWebUI's own update call.
    chat = by_module(proxy, continued)["intro"]
    root = first_message(chat)
    reply = {"id": "reply-1", "parentId": root["id"], "childrenIds": [], "role": "user"}
    reply |= {"content": "I have a question", "timestamp": 1}
    history = chat["chat"]["history"]
    history["messages"][root["id"]]["childrenIds"] = ["reply-1"]
    history["messages"]["reply-1"] = reply
    history["currentId"] = "reply-1"
    with direct_client(proxy, continued) as client:
        update = {"chat": {"history": history, "messages": [root, reply]}}
        client.post(f"/api/v1/chats/{chat['id']}", json=update).raise_for_status()

    course = str(changed_course(tmp_path))
    plain = provision(proxy, "user", course, untouched)
    assert plain.returncode == 0, plain.stderr
    assert first_message(by_module(proxy, untouched)["intro"])["content"] == OLD

    for email in (untouched, continued):
        result = provision(proxy, "user", course, email, "--update-unreplied")
        assert result.returncode == 0, result.stderr
        assert {json.loads(line)["status"] for line in result.stdout.splitlines()} == {"existing"}

    updated = by_module(proxy, untouched)
    assert first_message(updated["intro"])["content"] == NEW
    assert updated["intro"]["chat"]["messages"][0]["content"] == NEW
    assert first_message(updated["practice"])["content"] == COURSE["modules"][1]["first_message"]
    kept = by_module(proxy, continued)["intro"]
    assert first_message(kept)["content"] == OLD
    assert kept["chat"]["history"]["currentId"] == "reply-1"


def test_titles_carry_no_visible_id_and_the_hidden_tag_is_found_by_the_archived_query(
    proxy: Stack,
) -> None:
    email = fresh_email("titles")
    assert provision(proxy, "user", str(COURSE_FILE), email).returncode == 0
    titles = sorted(chat["title"] for chat in archived_chats(proxy, email))
    assert titles == sorted(
        f"{m['title']} {tag('e2e-course', m['id'], 'hidden')}" for m in COURSE["modules"]
    )
    assert not any("e2e-course" in title or "[" in title for title in titles)
    # The query the provisioner uses for users with 100 chats or more finds all three.
    with direct_client(proxy, email) as client:
        found = client.get(
            "/api/v1/chats/archived", params={"query": tag_prefixes("e2e-course")[1]}
        )
        found.raise_for_status()
        assert sorted(chat["title"] for chat in found.json()) == titles
        other = client.get(
            "/api/v1/chats/archived", params={"query": tag_prefixes("e2e-course-2")[1]}
        )
        assert other.json() == []
