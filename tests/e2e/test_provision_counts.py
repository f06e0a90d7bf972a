"""What provisioning costs against the real OpenWebUI, counted in the proxy's audit lines.

The internal listener writes exactly one ``internal_audit`` line per request, naming the
act-as user: the calls made for a user are counted there, outside the provisioner.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.e2e.conftest import COURSE, COURSE_FILE, assert_course_threads, fresh_email, provision

pytestmark = pytest.mark.e2e

MODULES = len(COURSE["modules"])


def audit_calls(the_stack: Stack, email: str) -> list[str]:
    """``METHOD /path`` of every relayed request made as ``email``, from the proxy's log."""
    log = Path(the_stack.logs) / "proxy.log"
    calls = []
    for line in log.read_text(errors="replace").splitlines():
        if '"internal_audit"' not in line:
            continue
        entry = json.loads(line)
        if entry.get("event") == "internal_audit" and entry.get("act_as") == email:
            calls.append(f"{entry['method']} {entry['path']}")
    return calls


def settled_calls(the_stack: Stack, email: str, expected: int) -> list[str]:
    """The audit lines once the proxy has written all of them (each after its answer): at
    least the ``expected`` number (30 s at most: a loaded proxy may write the last ones a
    while after the provisioner has its answers), then until no more arrive."""
    deadline = time.monotonic() + 30
    calls = audit_calls(the_stack, email)
    while len(calls) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        calls = audit_calls(the_stack, email)
    for _ in range(20):
        time.sleep(0.1)
        again = audit_calls(the_stack, email)
        if again == calls:
            return calls
        calls = again
    return calls


def test_a_new_user_costs_three_calls_and_two_a_module_and_a_rerun_two(proxy: Stack) -> None:
    email = fresh_email("counted")
    first = provision(proxy, "user", str(COURSE_FILE), email)
    assert first.returncode == 0, first.stderr
    new = settled_calls(proxy, email, 3 + 2 * MODULES)

    assert len(new) == 3 + 2 * MODULES, new
    assert new[0] == "POST /api/v1/auths/signin"
    assert new.count("GET /api/v1/chats/all") == 2
    assert sum(call.startswith("POST /api/v1/chats/new") for call in new) == MODULES
    assert sum(call.endswith("/archive") for call in new) == MODULES

    again = provision(proxy, "user", str(COURSE_FILE), email)
    assert again.returncode == 0, again.stderr
    rerun = settled_calls(proxy, email, len(new) + 2)[len(new) :]
    assert rerun == ["POST /api/v1/auths/signin", "GET /api/v1/chats/all"]
    assert_course_threads(proxy, email)


def test_five_bulk_runs_at_once_over_one_roster_leave_one_thread_per_module(
    proxy: Stack, tmp_path: Path
) -> None:
    emails = [fresh_email("five") for _ in range(6)]
    roster = tmp_path / "roster.csv"
    roster.write_text("email\n" + "".join(f"{email}\n" for email in emails), encoding="utf-8")
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(
            pool.map(
                lambda _: provision(
                    proxy, "bulk", str(COURSE_FILE), str(roster), "--concurrency", "3", timeout=300
                ),
                range(5),
            )
        )
    for result in results:
        assert result.returncode == 0, result.stderr
    for email in emails:
        assert_course_threads(proxy, email)
