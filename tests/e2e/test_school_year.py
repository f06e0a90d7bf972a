"""A school year against the real OpenWebUI, through the real proxy: a dry run creates
nothing (no account, no chat), status matches what the person sees, remove leaves the
person's own chats, and a course kept in a sidebar folder lands there.

Every check of OpenWebUI's state is made directly in OpenWebUI (as the person, or in its
database), not through the provisioner.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from demo.stack import Stack
from provisioner.folders import folder_tag
from tests.e2e.conftest import (
    COURSE,
    COURSE_FILE,
    direct_client,
    find_user,
    first_message,
    fresh_email,
    provision,
)
from tests.e2e.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    Steps,
    sign_in_at_idp,
)

pytestmark = pytest.mark.e2e

FOLDER_COURSE_ID = "e2e-folder"
FOLDER_COURSE_TITLE = "E2E Folder Course"


@pytest.fixture(scope="module")
def lookup() -> dict[str, str]:
    """The ordinary account status, --dry-run and remove read the user directory as."""
    return {"OWUI_PROVISION_LOOKUP_EMAIL": fresh_email("lookup")}


def school(
    the_stack: Stack, lookup: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    return provision(the_stack, *(str(arg) for arg in args), env=lookup)


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def folder_course(tmp_path: Path, placement: str = "folder") -> Path:
    """The e2e course under another id and title, its threads in a sidebar folder."""
    text = COURSE_FILE.read_text(encoding="utf-8")
    text = text.replace('id = "e2e-course"', f'id = "{FOLDER_COURSE_ID}"')
    text = text.replace('title = "End-to-end course"', f'title = "{FOLDER_COURSE_TITLE}"')
    text = text.replace("[[modules]]", f'placement = "{placement}"\n\n[[modules]]', 1)
    path = tmp_path / f"{FOLDER_COURSE_ID}-{placement}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def counts(the_stack: Stack) -> tuple[int, int, int]:
    """Users, chats and folders in OpenWebUI's database: what any write would change."""
    database = the_stack.config.state_dir / "openwebui-data" / "webui.db"
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("user", "chat", "folder")
        )


def every_chat(the_stack: Stack, email: str) -> dict[str, dict[str, Any]]:
    """Every chat of ``email``, whole, as OpenWebUI gives it to them."""
    with direct_client(the_stack, email) as client:
        response = client.get("/api/v1/chats/all")
        response.raise_for_status()
        text = response.text
    found = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    return {chat["id"]: chat for chat in found}


def course_threads(chats: dict[str, dict[str, Any]], course_id: str) -> dict[str, dict[str, Any]]:
    return {
        chat["chat"]["owui_gate"]["module"]: chat
        for chat in chats.values()
        if chat["chat"].get("owui_gate", {}).get("course") == course_id
    }


def reply_in(the_stack: Stack, email: str, chat: dict[str, Any], text: str) -> None:
    """The person writes in a thread, through OpenWebUI's own chat update."""
    root = first_message(chat)
    reply = {"id": "reply-1", "parentId": root["id"], "childrenIds": [], "role": "user"}
    reply |= {"content": text, "timestamp": 1}
    history = chat["chat"]["history"]
    history["messages"][root["id"]]["childrenIds"] = ["reply-1"]
    history["messages"]["reply-1"] = reply
    history["currentId"] = "reply-1"
    with direct_client(the_stack, email) as client:
        update = {"chat": {"history": history, "messages": [root, reply]}}
        client.post(f"/api/v1/chats/{chat['id']}", json=update).raise_for_status()


def own_chat(the_stack: Stack, email: str, title: str) -> str:
    with direct_client(the_stack, email) as client:
        response = client.post("/api/v1/chats/new", json={"chat": {"title": title, "messages": []}})
        response.raise_for_status()
        return str(response.json()["id"])


def test_a_dry_run_creates_no_account_and_no_chat(
    proxy: Stack, lookup: dict[str, str], tmp_path: Path
) -> None:
    provisioned, newcomer = fresh_email("dry-done"), fresh_email("dry-new")
    assert school(proxy, lookup, "user", COURSE_FILE, provisioned).returncode == 0
    roster = tmp_path / "roster.csv"
    roster.write_text(f"email\n{provisioned}\n{newcomer}\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    # The lookup account exists from here on (its first use creates it, once).
    warm = school(proxy, lookup, "user", COURSE_FILE, provisioned, "--dry-run")
    assert warm.returncode == 0, warm.stderr
    before_chats = every_chat(proxy, provisioned)
    before = counts(proxy)

    result = school(proxy, lookup, "bulk", COURSE_FILE, roster, "--dry-run", "--report", report)

    assert result.returncode == 0, result.stderr
    assert counts(proxy) == before
    assert find_user(proxy, newcomer) is None
    assert every_chat(proxy, provisioned) == before_chats
    actions = {(line["email"], line["module"]): line["action"] for line in lines(result)}
    modules = [module["id"] for module in COURSE["modules"]]
    assert actions == {
        **{(provisioned, module): "already there" for module in modules},
        **{(newcomer, module): "create" for module in modules},
    }
    rows = {row["email"]: row for row in csv.DictReader(report.open(encoding="utf-8"))}
    assert rows[newcomer]["detail"] == "3 create (no account yet)"
    assert rows[provisioned]["result"] == "provisioned already"


def test_status_matches_what_the_person_sees(
    proxy: Stack, lookup: dict[str, str], tmp_path: Path
) -> None:
    email, nobody = fresh_email("status"), fresh_email("status-nobody")
    assert school(proxy, lookup, "user", COURSE_FILE, email).returncode == 0
    threads = course_threads(every_chat(proxy, email), "e2e-course")
    reply_in(proxy, email, threads["intro"], "I started module 1")
    with direct_client(proxy, email) as client:  # the person un-archives module 2
        client.post(f"/api/v1/chats/{threads['practice']['id']}/archive").raise_for_status()
    output = tmp_path / "status.csv"
    before = counts(proxy)

    result = school(
        proxy, lookup, "status", COURSE_FILE, email, nobody, "--format", "csv", "--output", output
    )

    assert result.returncode == 0, result.stderr
    assert counts(proxy) == before  # nothing written, no account made
    rows = {
        (row["email"], row["module"]): row for row in csv.DictReader(output.open(encoding="utf-8"))
    }
    # What the person's own OpenWebUI shows, module by module.
    seen = course_threads(every_chat(proxy, email), "e2e-course")
    for module in COURSE["modules"]:
        chat = seen[module["id"]]
        row = rows[(email, module["id"])]
        written = any(m["role"] == "user" for m in chat["chat"]["history"]["messages"].values())
        assert row["state"] == "present"
        assert row["chat_id"] == chat["id"]
        assert row["where"] == ("archived" if chat["archived"] else "chats")
        assert row["replied"] == ("yes" if written else "no")
        assert row["first_message_changed"] == "no"
    assert [rows[(email, m["id"])]["where"] for m in COURSE["modules"]] == [
        "archived",
        "chats",
        "archived",
    ]
    assert [rows[(email, m["id"])]["replied"] for m in COURSE["modules"]] == ["yes", "no", "no"]
    assert {rows[(nobody, m["id"])]["state"] for m in COURSE["modules"]} == {"no account"}
    assert "e2e-course/intro" in result.stderr


def test_remove_leaves_the_persons_own_chats(proxy: Stack, lookup: dict[str, str]) -> None:
    email = fresh_email("leaver")
    mine = own_chat(proxy, email, "My own notes")
    assert school(proxy, lookup, "user", COURSE_FILE, email).returncode == 0
    threads = course_threads(every_chat(proxy, email), "e2e-course")
    reply_in(proxy, email, threads["wrap-up"], "my answer")

    first = school(proxy, lookup, "remove", COURSE_FILE, email)

    assert first.returncode == 0, first.stderr
    assert sorted((line["result"], line["module"]) for line in lines(first)) == [
        ("deleted", "intro"),
        ("deleted", "practice"),
        ("kept", "wrap-up"),
    ]
    left = every_chat(proxy, email)
    assert mine in left
    assert list(course_threads(left, "e2e-course")) == ["wrap-up"]

    again = school(proxy, lookup, "remove", COURSE_FILE, email, "--including-replied")
    assert again.returncode == 0, again.stderr
    left = every_chat(proxy, email)
    assert course_threads(left, "e2e-course") == {}
    assert list(left) == [mine]


def test_folder_placement_puts_the_threads_in_the_course_folder(
    proxy: Stack, lookup: dict[str, str], tmp_path: Path
) -> None:
    email = fresh_email("folder")
    in_folder = folder_course(tmp_path)
    first = school(proxy, lookup, "user", in_folder, email)
    again = school(proxy, lookup, "user", in_folder, email)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert {line["status"] for line in lines(again)} == {"existing"}
    with direct_client(proxy, email) as client:
        folders = client.get("/api/v1/folders/").json()
        (folder,) = folders
        assert folder["name"].startswith(FOLDER_COURSE_TITLE + " ")
        assert folder_tag(FOLDER_COURSE_ID, "hidden") in folder["name"]
        assert folder["parent_id"] is None
        listed = client.get(f"/api/v1/chats/folder/{folder['id']}/list").json()
    threads = course_threads(every_chat(proxy, email), FOLDER_COURSE_ID)
    assert {chat["id"] for chat in listed} == {chat["id"] for chat in threads.values()}
    assert {(c["archived"], c["folder_id"]) for c in threads.values()} == {(False, folder["id"])}
    assert {line["folder_id"] for line in lines(first)} == {folder["id"]}

    back = school(proxy, lookup, "user", folder_course(tmp_path, "archived"), email)
    assert back.returncode == 0, back.stderr
    moved = course_threads(every_chat(proxy, email), FOLDER_COURSE_ID)
    assert {c["id"] for c in moved.values()} == {c["id"] for c in threads.values()}
    assert {(c["archived"], c["folder_id"]) for c in moved.values()} == {(True, None)}

    status = school(proxy, lookup, "status", folder_course(tmp_path), email)
    assert {line["where"] for line in lines(status)} == {"archived"}
    removed = school(proxy, lookup, "remove", folder_course(tmp_path), email)
    assert removed.returncode == 0, removed.stderr
    assert [line["result"] for line in lines(removed)].count("deleted folder") == 1
    with direct_client(proxy, email) as client:
        assert client.get("/api/v1/folders/").json() == []


@pytest.mark.browser
def test_the_student_sees_the_course_folder_and_its_first_message(
    gate: Stack, lookup: dict[str, str], tmp_path: Path
) -> None:
    """In Chromium: the student signs in and finds, in the sidebar, a folder named after the
    course holding its module threads; the first message renders as markdown."""
    email = fresh_email("folder-browser")
    provisioned = school(gate, lookup, "user", folder_course(tmp_path), email, "--name", "Fola")
    assert provisioned.returncode == 0, provisioned.stderr
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        steps = Steps(page, "course-folder")
        try:
            page.goto(gate.public_url + "/")
            sign_in_at_idp(page, gate, email, "Fola")
            steps.shot("landed")
            # 0.12.4 starts with the sidebar closed, and its Folders section closed.
            opener = page.get_by_role("button", name="Open Sidebar")
            if opener.is_visible():
                opener.click()
            page.get_by_role("button", name="Folders").click()
            folder = page.get_by_role("button", name=re.compile("^" + FOLDER_COURSE_TITLE))
            expect(folder.first).to_be_visible()
            steps.shot("course-folder")
            folder.first.click()  # the folder's page lists the chats inside it
            for module in COURSE["modules"]:
                expect(
                    page.get_by_text(re.compile(re.escape(module["title"]))).first
                ).to_be_visible()
            steps.shot("course-folder-open")
            intro = COURSE["modules"][0]
            page.get_by_text(re.compile(re.escape(intro["title"]))).first.click()
            page.wait_for_url(re.compile(r"/c/[0-9a-f-]+$"))
            message = page.locator("#messages-container")
            expect(message.locator("strong", has_text="end-to-end")).to_be_visible()
            expect(message).to_contain_text("Welcome to the end-to-end course!")
            expect(message).not_to_contain_text("**end-to-end**")
            steps.shot("first-message")
        except BaseException:
            steps.failed()
            raise
        finally:
            context.close()
            browser.close()
