"""Provisioning on first sign-in, against the real OpenWebUI: no IdP webhook involved.

The demo IdP here sends no signup event (like Keycloak, Entra ID or Google); the proxy's
first-sign-in hook is the only trigger. A brand-new user signs in through the proxy in
Chromium and, within seconds, finds exactly the threads of the courses their groups map to.
A second sign-in, a proxy restart (a process that has forgotten whom it saw) and a receiver
outage followed by recovery still leave exactly one thread per module.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from demo.stack import Stack
from tests.e2e.conftest import (
    COURSE,
    GROUP_COURSE,
    archived_chats,
    fresh_email,
    sign_in_through_proxy,
)
from tests.e2e.pageload import progress
from tests.e2e.test_browser import UI_TIMEOUT_MS, browser  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

GROUP = GROUP_COURSE["course"]["groups"][0]


def expected(groups: tuple[str, ...]) -> Counter[str]:
    """One thread per module of every course the groups select (COURSE is for everyone)."""
    courses = [COURSE] + ([GROUP_COURSE] if GROUP in groups else [])
    return Counter(module["title"] for course in courses for module in course["modules"])


def threads(stack: Stack, email: str) -> Counter[str]:
    """The user's archived threads by module title, read directly in OpenWebUI."""
    titles: Counter[str] = Counter()
    for chat in archived_chats(stack, email):
        title = chat["title"]
        module = next(
            (
                m["title"]
                for course in (COURSE, GROUP_COURSE)
                for m in course["modules"]
                if title == m["title"] or title.startswith(m["title"] + " ")
            ),
            None,
        )
        assert module is not None, f"unexpected archived chat {title!r} for {email}"
        assert chat["archived"] is True
        titles[module] += 1
    return titles


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def hook_sent(stack: Stack) -> float:
    """The proxy's count of delivered user.seen events (its current process)."""
    text = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    match = re.search(r'^owui_proxy_signin_hook_events_total\{outcome="sent"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def settle(stack: Stack, email: str, groups: tuple[str, ...]) -> None:
    """Wait for exactly the expected threads, then check nothing more arrives."""
    want = expected(groups)
    wait_until(lambda: threads(stack, email) == want, f"{email} gets {dict(want)}")
    time.sleep(2)
    assert threads(stack, email) == want


def test_a_new_user_finds_their_groups_courses_after_signing_in_in_the_browser(
    gate: Stack,
    browser: Browser,  # noqa: F811 - the fixture
) -> None:
    email = fresh_email("first-signin")
    assert threads(gate, email) == Counter()  # nobody has provisioned this user
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(gate.public_url + "/")
        expect(page).to_have_url(re.compile("^" + re.escape(f"{gate.idp_url}/login")))
        page.fill("#email", email)
        page.fill("#name", "First Signin")
        page.fill("#groups", GROUP)
        page.get_by_role("button", name="Sign in").click()
        progress(page).at(re.compile("^" + re.escape(gate.public_url)), "back on the chat host")
        progress(page).app()
        settle(gate, email, (GROUP,))

        # What the student's own browser sees: its token, through the proxy.
        seen: list[dict[str, Any]] = page.evaluate(
            """async () => {
                const r = await fetch('/api/v1/chats/archived',
                    {headers: {Authorization: 'Bearer ' + localStorage.token}});
                return await r.json();
            }"""
        )
        assert len(seen) == sum(expected((GROUP,)).values())
    finally:
        context.close()

    # A second sign-in (a fresh browser session) changes nothing.
    again = browser.new_context()
    try:
        page = again.new_page()
        page.goto(gate.public_url + "/")
        page.fill("#email", email)
        page.fill("#name", "First Signin")
        page.fill("#groups", GROUP)
        page.get_by_role("button", name="Sign in").click()
        progress(page).app()
    finally:
        again.close()
    settle(gate, email, (GROUP,))


def test_a_user_outside_the_group_gets_only_the_course_for_everyone(gate: Stack) -> None:
    email = fresh_email("no-group")
    with sign_in_through_proxy(gate, email):
        settle(gate, email, ())


def test_a_restarted_proxy_announces_again_and_nothing_is_duplicated(gate: Stack) -> None:
    email = fresh_email("restart")
    cookies = idp_login_with_group(gate, email)
    signin(gate, cookies)
    settle(gate, email, (GROUP,))

    gate.services.pop("proxy").stop()
    gate.start_proxy()  # a new process: it has never seen anyone
    assert hook_sent(gate) == 0
    signin(gate, cookies)
    wait_until(lambda: hook_sent(gate) >= 1, "the restarted proxy announces the user again")
    settle(gate, email, (GROUP,))


def test_a_receiver_outage_heals_once_it_is_back(gate: Stack) -> None:
    gate.services.pop("webhook").stop()
    email = fresh_email("outage")
    try:
        cookies = idp_login_with_group(gate, email)
        before = hook_sent(gate)
        signin(gate, cookies)  # answered at once: the hook retries in the background
        time.sleep(3)
        assert threads(gate, email) == Counter()
    finally:
        gate.start_webhook()
    wait_until(lambda: hook_sent(gate) > before, "the hook delivers after the receiver is back")
    settle(gate, email, (GROUP,))


def idp_login_with_group(stack: Stack, email: str) -> httpx.Cookies:
    with httpx.Client(base_url=stack.idp_url, timeout=30) as client:
        form = {"email": email, "name": "Hook Student", "groups": GROUP}
        response = client.post("/login", data={**form, "rd": stack.public_url + "/"})
        assert response.status_code in (302, 303), response.text[:300]
        return client.cookies


def signin(stack: Stack, cookies: httpx.Cookies) -> None:
    with httpx.Client(base_url=stack.public_url, cookies=cookies, timeout=60) as client:
        response = client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
        assert response.status_code == 200, response.text[:300]
