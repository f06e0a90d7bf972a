"""Provisioning against the real OpenWebUI, through the proxy's internal listener."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from demo.stack import Stack
from tests.e2e.conftest import (
    COURSE,
    COURSE_FILE,
    archived_chats,
    assert_course_threads,
    fresh_email,
    provision,
)

pytestmark = pytest.mark.e2e


def _lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_user_gets_one_archived_thread_per_module_and_a_rerun_changes_nothing(proxy: Stack) -> None:
    """`owui-provision user` creates one archived thread per module; a rerun finds them."""
    email = fresh_email()
    first = provision(proxy, "user", str(COURSE_FILE), email, "--name", "Ada Lovelace")
    assert first.returncode == 0, first.stderr
    lines = _lines(first)
    assert sorted(line["module"] for line in lines) == sorted(m["id"] for m in COURSE["modules"])
    assert {line["status"] for line in lines} == {"created"}
    assert all(line["archived"] is True and line["email"] == email for line in lines)
    assert_course_threads(proxy, email)
    created_ids = {line["chat_id"] for line in lines}

    again = provision(proxy, "user", str(COURSE_FILE), email)
    assert again.returncode == 0, again.stderr
    lines = _lines(again)
    assert {line["status"] for line in lines} == {"existing"}
    assert {line["chat_id"] for line in lines} == created_ids
    assert_course_threads(proxy, email)
    # The service token and the user's OpenWebUI token never show up in the output.
    token = proxy.service_token_file.read_text().strip()
    assert token not in first.stdout + first.stderr + again.stdout + again.stderr
    assert "eyJ" not in first.stdout + first.stderr + again.stdout + again.stderr


@pytest.fixture(scope="module")
def concurrent_run(proxy: Stack) -> tuple[str, list[subprocess.CompletedProcess[str]]]:
    """Five `owui-provision user` processes started at once for one new user."""
    email = fresh_email("concurrent")
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(
            pool.map(lambda _: provision(proxy, "user", str(COURSE_FILE), email), range(5))
        )
    return email, results


def test_five_concurrent_processes_leave_exactly_one_thread_per_module(
    proxy: Stack, concurrent_run: tuple[str, list[subprocess.CompletedProcess[str]]]
) -> None:
    email, results = concurrent_run
    for result in results:
        assert result.returncode == 0, result.stderr
    assert_course_threads(proxy, email)


def test_concurrent_processes_all_report_the_thread_that_survived(
    proxy: Stack, concurrent_run: tuple[str, list[subprocess.CompletedProcess[str]]]
) -> None:
    """A chat_id printed by any of them is the one left standing, not one deleted later."""
    email, results = concurrent_run
    survivors = {chat["id"] for chat in archived_chats(proxy, email)}
    reported: dict[str, set[str]] = {}
    for result in results:
        for line in _lines(result):
            reported.setdefault(line["module"], set()).add(line["chat_id"])
    stale = {module: ids - survivors for module, ids in reported.items() if ids - survivors}
    assert stale == {}, f"reported chat ids that no longer exist: {stale}"


def test_an_account_openwebui_cannot_sign_in_is_named_with_its_fix(proxy: Stack) -> None:
    """OpenWebUI on SQLite can leave a user without its credentials record when writes
    collide (measured: 3 of 200 accounts under five provisioners at once); from then on its
    trusted sign-in answers "email or password incorrect". Made here the way it happens, by
    the credentials row missing, the real OpenWebUI's answer is turned into the fix."""
    email = fresh_email("no-credentials")
    first = provision(proxy, "user", str(COURSE_FILE), email)
    assert first.returncode == 0, first.stderr
    database = proxy.config.state_dir / "openwebui-data" / "webui.db"
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        assert db.execute("DELETE FROM auth WHERE email = ?", (email,)).rowcount == 1
    again = provision(proxy, "user", str(COURSE_FILE), email)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "refuses to sign it in" in again.stderr
    assert "delete this user in Admin Panel > Users" in again.stderr
