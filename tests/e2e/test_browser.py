"""A real browser (Debian's headless Chromium, driven by playwright) through the whole gate.

Sign in at the demo IdP, land in OpenWebUI as that user, find the course threads the signup
webhook created under Settings > Archived Chats, open one and see its first message
rendered; sign out to the IdP's logout page; sign in as someone else in the same browser and
land as them. Screenshots of every step go to ``artifacts/e2e/latest/browser/`` (kept on failure,
with a ``FAILED-...`` one of the moment it broke). UI details: ``docs/e2e.md``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from demo.model_server import REPLY
from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS, COURSE, archived_chats, fresh_email, module_of
from tests.e2e.pageload import progress

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ARTIFACTS / "browser"
# For single steps on what is already on screen (a click, a menu). Waits for the app to load,
# for a page to arrive or for a reply to stream last as long as the page makes progress
# (tests/e2e/pageload.py): on a busy machine OpenWebUI's first load takes minutes.
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does it with apt)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Steps:
    """Numbered screenshots of a browser session, and one of the moment something failed."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.count = 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob(f"*{name}-*.png"):
            old.unlink()

    def shot(self, label: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(SHOTS / f"{self.name}-{self.count:02d}-{label}.png"))

    def failed(self) -> Path:
        path = SHOTS / f"FAILED-{self.name}-{self.count + 1:02d}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def sign_in_at_idp(page: Page, stack: Stack, email: str, name: str) -> None:
    """From wherever the proxy sent the browser: expect the IdP's form and submit it."""
    loading = progress(page)
    loading.at(re.compile("^" + re.escape(f"{stack.idp_url}/login")), "the IdP's login form")
    page.fill("#email", email)
    page.fill("#name", name)
    page.get_by_role("button", name="Sign in").click()
    loading.at(re.compile("^" + re.escape(stack.public_url)), "back on the chat host")
    loading.app()


def whoami(page: Page) -> dict[str, Any]:
    """Who OpenWebUI thinks this browser tab is: its own session check, with its own token."""
    result: dict[str, Any] = progress(page).evaluate(
        """async () => {
            const r = await fetch('/api/v1/auths/', {
                headers: {Authorization: 'Bearer ' + localStorage.token}});
            return {status: r.status, body: await r.json()};
        }"""
    )
    return result


def wait_for_threads(stack: Stack, email: str, stall: float = 90) -> None:
    """The IdP's signup webhook provisions in the background; wait for all modules, as long
    as a new one keeps appearing at least every ``stall`` seconds."""
    found: set[str] = set()
    last_new = time.monotonic()
    while time.monotonic() - last_new < stall:
        present = {m["id"] for c in archived_chats(stack, email) if (m := module_of(c["title"]))}
        if len(present) == len(COURSE["modules"]):
            return
        if present - found:
            found, last_new = present, time.monotonic()
        time.sleep(1)
    raise AssertionError(f"no new module for {stall} s; only {sorted(found)} exist for {email}")


def open_archived_chats(page: Page) -> Any:
    """0.12.4 shows archived chats as a tab of the Settings modal (user menu > Settings)."""
    page.get_by_role("button", name="User menu").first.click()
    page.get_by_role("menuitem", name="Settings").click()
    page.get_by_role("tab", name="Archived Chats").click()
    table = page.get_by_role("table", name="Archived Chats")
    progress(page).visible(table, "the Archived Chats table")
    return table


def test_browser_signs_in_finds_archived_threads_signs_out_and_switches_user(
    gate: Stack, browser: Browser
) -> None:
    first_email, second_email = fresh_email("browser"), fresh_email("browser2")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    loading = progress(page)
    steps = Steps(page, "browser")
    try:
        # Unauthenticated: the proxy sends the browser to the IdP's login page.
        progress(page).goto(gate.public_url + "/")
        steps.shot("idp-login")
        sign_in_at_idp(page, gate, first_email, "Browser Student")
        steps.shot("landed")
        me = whoami(page)
        assert me["status"] == 200, me
        assert (me["body"]["email"], me["body"]["role"]) == (first_email, "user")

        wait_for_threads(gate, first_email)
        table = open_archived_chats(page)
        for module in COURSE["modules"]:
            expect(
                table.get_by_role("link", name=re.compile(re.escape(module["title"])))
            ).to_be_visible()
        steps.shot("archived-chats")

        intro = COURSE["modules"][0]
        table.get_by_role("link", name=re.compile(re.escape(intro["title"]))).click()
        loading.at(re.compile(r".*/c/[0-9a-f-]+$"), "the course thread")
        # "Welcome to the **end-to-end** course! ..." rendered as markdown, not as raw text.
        message = page.locator("#messages-container")
        loading.visible(message.locator("strong", has_text="end-to-end"), "the first message")
        expect(message).to_contain_text("Welcome to the end-to-end course!")
        expect(message).not_to_contain_text("**end-to-end**")
        steps.shot("first-message")

        # The student answers in the course thread; the reply streams back over Socket.IO
        # through the proxy and ends up under the course's first message.
        page.locator("#chat-input").click()
        page.keyboard.type("Hi Ralph!")
        page.keyboard.press("Enter")
        expect(message).to_contain_text("Hi Ralph!")
        last_word = REPLY.split()[-1]
        loading.until(lambda: last_word in message.inner_text(), "the streamed reply")
        expect(message).to_contain_text("Welcome to the end-to-end course!")
        steps.shot("reply")

        # Sign out: OpenWebUI's UI follows the redirect_url the proxy answers with.
        page.get_by_role("button", name="User menu").first.click()
        page.get_by_role("menuitem", name="Sign Out").click()
        loading.at(re.compile("^" + re.escape(f"{gate.idp_url}/logout")), "the IdP's logout")
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        steps.shot("signed-out")

        # Same browser, another identity: lands as the new user, not the old one.
        progress(page).goto(gate.public_url + "/")
        sign_in_at_idp(page, gate, second_email, "Second Student")
        steps.shot("second-user")
        me = whoami(page)
        assert me["status"] == 200, me
        assert (me["body"]["email"], me["body"]["role"]) == (second_email, "user")
        page.get_by_role("button", name="User menu").first.click()
        expect(page.get_by_role("menu")).to_contain_text("Second Student")
        steps.shot("second-user-menu")
    except BaseException:
        steps.failed()
        raise
    finally:
        context.close()


def test_switching_identity_at_the_idp_without_signing_out_of_openwebui(
    gate: Stack, browser: Browser
) -> None:
    """The browser still holds A's OpenWebUI token (localStorage and cookie) when the IdP
    session becomes B's: the next visit must land as B, with no "User mismatch" dead end."""
    first_email, second_email = fresh_email("switch-a"), fresh_email("switch-b")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    steps = Steps(page, "switch")
    try:
        progress(page).goto(gate.public_url + "/")
        sign_in_at_idp(page, gate, first_email, "Switch A")
        assert whoami(page)["body"]["email"] == first_email
        steps.shot("as-a")
        # Only the IdP session changes (as when another person uses the IdP in this browser).
        progress(page).goto(f"{gate.idp_url}/logout")
        progress(page).goto(f"{gate.idp_url}/login?rd={gate.public_url}/")
        sign_in_at_idp(page, gate, second_email, "Switch B")
        steps.shot("as-b")
        me = whoami(page)
        assert me["status"] == 200, me
        assert me["body"]["email"] == second_email
        page.get_by_role("button", name="User menu").first.click()
        expect(page.get_by_role("menu")).to_contain_text("Switch B")
        steps.shot("as-b-menu")
    except BaseException:
        steps.failed()
        raise
    finally:
        context.close()
