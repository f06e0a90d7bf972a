"""The proxy's own pages (proxy/pages.py) in Chromium, a real page load of each kind.

A gate of the module's own (``private_gate``: demo IdP, proxy) admits ``school.test`` only and
reaches the session's real OpenWebUI through a relay that can fail on demand
(``fault_relay``). In headless Chromium with a browser language set, as a student would see
them:

- a person outside the school: the refusal page in German, naming them, whose sign-out link
  really signs them out at the IdP (the next visit asks for a sign-in again);
- OpenWebUI down (French), timing out (Spanish), replaced by a release the proxy refuses
  (German), the auth service stopped (English);
- and OpenWebUI's own web UI once all is well again: the pages never stand in for it.

Screenshots of each page: ``artifacts/e2e/latest/pages/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS, fresh_email
from tests.e2e.fault_relay import REFUSED_RELEASE, FaultRelay
from tests.e2e.private_gate import private_gate
from tests.e2e.test_browser import UI_TIMEOUT_MS, browser  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOTS = ARTIFACTS / "pages"
SCHOOL = "school.test"


@pytest.fixture(scope="module")
def relay(stack: Stack) -> Iterator[FaultRelay]:
    assert stack.openwebui is not None
    fault = FaultRelay(stack.openwebui.url)
    fault.start()
    yield fault
    fault.stop()


@pytest.fixture(scope="module")
def gate(stack: Stack, relay: FaultRelay) -> Iterator[Stack]:
    settings = {
        "OWUI_PROXY_UPSTREAM": relay.url,
        "OWUI_PROXY_ALLOWED_EMAIL_DOMAINS": SCHOOL,
        "OWUI_PROXY_RESPONSE_TIMEOUT_S": "3",
    }
    with private_gate(stack, ARTIFACTS / "pages-gate", proxy_env=settings, webhook=False) as own:
        yield own


@pytest.fixture
def normal(relay: FaultRelay, gate: Stack) -> Iterator[FaultRelay]:
    """The relay passing everything, and the proxy knowing the release is the real one."""
    relay.mode = "normal"
    _ready_again(gate)
    yield relay
    relay.mode = "normal"
    _ready_again(gate)


def _ready_again(gate: Stack) -> None:
    """Wait until the proxy's own background check has seen the real OpenWebUI again.

    ``/readyz`` answers from that check (every 5 s) without reading anything itself, and a
    proxy that last saw a refused release reads it again at most once a second: a page
    loaded right after the fault is cleared may still get the maintenance page. With the
    one worker this gate runs, ``/readyz`` at 200 means the next request is relayed.
    """
    deadline = time.monotonic() + 30
    while httpx.get(f"{gate.admin_url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the proxy did not become ready again in 30 s"
        time.sleep(0.25)


def signed_in(browser: Browser, gate: Stack, email: str, locale: str) -> Page:  # noqa: F811
    """A fresh browser (its language ``locale``) signed in at the IdP as ``email``, sent
    back to the proxy."""
    # No service worker: a reload must reach the proxy, never a cached copy of the web UI.
    context = browser.new_context(locale=locale, service_workers="block")
    page = context.new_page()
    page.goto(gate.public_url + "/", timeout=UI_TIMEOUT_MS)
    expect(page).to_have_url(re.compile("^" + re.escape(f"{gate.idp_url}/login")))
    page.fill("#email", email)
    page.fill("#name", email.split("@")[0])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile("^" + re.escape(gate.public_url)), timeout=UI_TIMEOUT_MS)
    return page


def shows(page: Page, name: str, status: int, lang: str, title: str) -> None:
    """The page loaded is the proxy's ``title`` page, in ``lang``, answered ``status``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    response = page.reload(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert response is not None
    assert response.status == status
    assert response.headers["content-language"] == lang
    assert page.locator("html").get_attribute("lang") == lang
    expect(page.locator("h1")).to_have_text(title)
    expect(page).to_have_title(title)
    # The reference support asks for is the request's id.
    assert response.headers["x-request-id"] in page.locator("body").inner_text()


def test_refused_person_gets_a_german_page_whose_sign_out_link_works(
    browser: Browser,  # noqa: F811 - the fixture
    gate: Stack,
    normal: FaultRelay,
) -> None:
    email = fresh_email("outsider")  # @example.com: not the school's
    page = signed_in(browser, gate, email, "de-DE")
    shows(page, "access-denied-de", 403, "de", "Kein Zugang")
    expect(page.locator("strong")).to_have_text(email)
    link = page.get_by_role("link", name="melden Sie sich ab")
    assert link.get_attribute("href") == f"{gate.idp_url}/logout"
    link.click()
    expect(page.locator("h1")).to_have_text("Signed out", timeout=UI_TIMEOUT_MS)
    page.goto(gate.public_url + "/", timeout=UI_TIMEOUT_MS)  # signed out: asked to sign in
    expect(page).to_have_url(re.compile("^" + re.escape(f"{gate.idp_url}/login")))
    page.context.close()


def test_openwebui_down_page_in_french(
    browser: Browser,  # noqa: F811 - the fixture
    gate: Stack,
    normal: FaultRelay,
) -> None:
    page = signed_in(browser, gate, _student(), "fr-FR")
    normal.mode = "down"
    shows(page, "openwebui-down-fr", 502, "fr", "Le service de chat est injoignable")
    expect(page.get_by_role("link", name="rechargez cette page")).to_be_visible()
    page.context.close()


def test_openwebui_timeout_page_in_spanish(
    browser: Browser,  # noqa: F811 - the fixture
    gate: Stack,
    normal: FaultRelay,
) -> None:
    page = signed_in(browser, gate, _student(), "es-ES")
    normal.mode = "hang"
    shows(page, "openwebui-timeout-es", 504, "es", "El servicio de chat tarda demasiado")
    page.context.close()


def test_refused_release_page_in_german(
    browser: Browser,  # noqa: F811 - the fixture
    gate: Stack,
    normal: FaultRelay,
) -> None:
    page = signed_in(browser, gate, _student(), "de-CH")
    normal.mode = "old_release"
    # OpenWebUI's release is re-read in the background (every 5 s): /readyz, then every
    # request, turns to the refusal once that read has seen the old release.
    assert _readyz_names(gate, f"OpenWebUI {REFUSED_RELEASE} has no", within_s=30)
    shows(page, "openwebui-release-de", 503, "de", "Der Chat-Dienst ist wegen Wartung geschlossen")
    page.context.close()


def test_auth_service_down_page_in_english_then_openwebui_again(
    browser: Browser,  # noqa: F811 - the fixture
    gate: Stack,
    normal: FaultRelay,
) -> None:
    page = signed_in(browser, gate, _student(), "en-GB")
    gate.services.pop("idp").stop()
    try:
        shows(page, "auth-down-en", 503, "en", "Sign-in is not available right now")
    finally:
        gate.start_idp()
    # All well again: a new sign-in lands in OpenWebUI's own web UI, not on a page of ours.
    page.context.close()
    page = signed_in(browser, gate, _student(), "en-GB")
    page.locator("#chat-input").wait_for(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(SHOTS / "openwebui-again.png"))
    page.context.close()


def _readyz_names(gate: Stack, problem: str, within_s: float) -> bool:
    """Whether the proxy's /readyz answers 503 naming ``problem`` within ``within_s`` seconds
    (an earlier test's fault may still be what it names for one background check)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answer = httpx.get(f"{gate.admin_url}/readyz", timeout=10)
        if answer.status_code == 503 and problem in answer.text:
            return True
        time.sleep(0.5)
    return False


def _student() -> str:
    return fresh_email("student").replace("@example.com", f"@{SCHOOL}")
