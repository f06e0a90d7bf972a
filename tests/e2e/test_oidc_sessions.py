"""Sessions that last, and sessions that end, with a real relying party (issue 20, 1).

The chain of ``test_oidc_chain.py`` (Chromium, the shipped nginx, the proxy, Apache with
mod_auth_openidc, npm oidc-provider, the real OpenWebUI), with sessions kept the way
oauth2-proxy keeps them by default: in the browser's cookie. mod_auth_openidc's
client-cookie sessions carry their own inactivity deadline, and the access and refresh
tokens; every answer to the proxy's forward-auth call renews the cookie (``Set-Cookie``),
and a refresh replaces the tokens inside it. The provider's access tokens live
:data:`ACCESS_TOKEN_S` seconds and each refresh token works once (rotation; a used one
presented again revokes the grant), bound to the provider's session.

- An active user stays signed in for several token lifetimes and inactivity timeouts,
  through page loads and API calls: only possible if each renewed cookie reaches the
  browser, whatever the answer was.
- An idle user is sent to log in once the inactivity timeout passes.
- A session ended by signing out cannot be revived by putting the old cookie back: its
  refresh is refused by the provider and mod_auth_openidc ends the session.

Before the proxy relayed the auth service's ``Set-Cookie`` the first test failed within
seconds: the browser kept the login's cookie, whose refresh token the first refresh used
up. Screenshots: ``artifacts/e2e/latest/oidc-sessions/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.pageload import progress
from tests.e2e.test_browser import UI_TIMEOUT_MS, whoami
from tests.e2e.test_oidc_chain import Chain, Shots, browser, log_in_at_provider, running_chain

__all__ = ["browser"]  # the Chromium fixture, shared with test_oidc_chain.py

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.nginx]

STATE = ARTIFACTS / "oidc-sessions"
ACCESS_TOKEN_S = 4  # the provider's access-token lifetime
REFRESH_BEFORE_S = 2  # mod_auth_openidc refreshes once the token has less than this left
INACTIVITY_S = 12  # mod_auth_openidc ends a session unused this long
ACTIVE_S = 30  # how long the active user keeps working: several of each of the above

SESSIONS = f"""\
OIDCSessionType client-cookie:store_id_token
OIDCSessionInactivityTimeout {INACTIVITY_S}
OIDCRefreshAccessTokenBeforeExpiry {REFRESH_BEFORE_S} logout_on_error
# Every sign-in shows the provider's login form, so being sent to log in is visible.
OIDCAuthRequestParams prompt=login"""


@pytest.fixture(scope="module")
def sessions(stack: Stack) -> Iterator[Chain]:
    with running_chain(stack, STATE, access_token_s=ACCESS_TOKEN_S, session=SESSIONS) as chain:
        yield chain


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    context.route(re.compile(r"^https://fonts\.(googleapis|gstatic)\.com/"), lambda r: r.abort())
    return context


def _provider_log(chain: Chain) -> str:
    return (chain.provider.state / "provider.log").read_text(encoding="utf-8", errors="replace")


def _refreshes(chain: Chain) -> int:
    return _provider_log(chain).count("grant.success refresh_token")


def _in_openwebui(page: Page, chain: Chain) -> None:
    """The page is OpenWebUI on the chat host, signed in (its chat input rendered)."""
    progress(page).app()
    assert page.url.startswith(chain.public_url + "/"), page.url


def _at_login_form(page: Page, chain: Chain) -> None:
    """The page is the provider's login form (the chat host sent the browser to log in)."""
    progress(page).visible(page.locator("input[name=login]"), "the provider's login form")
    assert page.url.startswith(f"{chain.provider.issuer}/interaction/"), page.url


def test_an_active_user_stays_signed_in_well_past_the_token_lifetime(
    sessions: Chain, browser: Browser
) -> None:
    ada, _grace = sessions.users
    context = _context(browser)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    progress(page)
    shots = Shots(page, STATE)
    logins: list[str] = []
    page.on("request", lambda r: logins.append(r.url) if "/interaction/" in r.url else None)
    try:
        progress(page).goto(sessions.public_url + "/")
        log_in_at_provider(page, sessions, ada, shots)
        shots.shot("signed-in")
        logins.clear()
        refreshes_before = _refreshes(sessions)
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < ACTIVE_S:
            rounds += 1
            if rounds % 5 == 0:
                # A page load: OpenWebUI's many parallel requests, each answered with a
                # renewed cookie.
                progress(page).goto(sessions.public_url + "/")
                _in_openwebui(page, sessions)
            me = whoami(page)
            elapsed = time.monotonic() - started
            assert me["status"] == 200, f"signed out after {elapsed:.0f} s: {me}"
            assert me["body"]["email"] == ada.email
            page.wait_for_timeout(1000)
        shots.shot("still-signed-in")
        assert logins == [], "the user was sent to log in again"
        # Several access tokens came and went: the session outlived each by refreshing.
        assert _refreshes(sessions) - refreshes_before >= ACTIVE_S // ACCESS_TOKEN_S - 1
    except BaseException:
        shots.failed()
        print("requests the browser gave up:", progress(page).failed)
        raise
    finally:
        context.close()


def test_an_idle_user_is_sent_to_log_in(sessions: Chain, browser: Browser) -> None:
    _ada, grace = sessions.users
    context = _context(browser)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    progress(page)
    shots = Shots(page, STATE / "idle")
    try:
        progress(page).goto(sessions.public_url + "/")
        log_in_at_provider(page, sessions, grace, shots)
        assert whoami(page)["status"] == 200
        progress(page).goto("about:blank")  # no page left open to talk to the chat host
        time.sleep(INACTIVITY_S + 3)
        progress(page).goto(sessions.public_url + "/")
        _at_login_form(page, sessions)
        shots.shot("sent-to-log-in")
    except BaseException:
        shots.failed()
        print("requests the browser gave up:", progress(page).failed)
        raise
    finally:
        context.close()


def test_an_ended_session_cannot_be_revived_with_the_old_cookie(
    sessions: Chain, browser: Browser
) -> None:
    ada, _grace = sessions.users
    context = _context(browser)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    progress(page)
    shots = Shots(page, STATE / "ended")
    try:
        progress(page).goto(sessions.public_url + "/")
        log_in_at_provider(page, sessions, ada, shots)
        assert whoami(page)["status"] == 200
        kept = context.cookies()
        kept_at = time.monotonic()
        page.get_by_role("button", name="User menu").first.click()
        page.get_by_role("menuitem", name="Sign Out").click()
        end = re.compile("^" + re.escape(f"{sessions.provider.issuer}/session/end"))
        progress(page).at(end, "the provider's sign-out page")
        page.get_by_role("button", name="Yes, sign me out").click()
        _at_login_form(page, sessions)
        shots.shot("signed-out")
        errors_before = _provider_log(sessions).count("grant.error")

        # The old cookie goes back, still inside its inactivity timeout, with a refresh due.
        progress(page).goto("about:blank")
        context.clear_cookies()
        context.add_cookies(kept)  # type: ignore[arg-type]  # playwright's own cookie shape
        wait = kept_at + ACCESS_TOKEN_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        assert time.monotonic() - kept_at < INACTIVITY_S - 2, "too slow to tell the causes apart"
        progress(page).goto(sessions.public_url + "/")
        _at_login_form(page, sessions)
        shots.shot("old-cookie-refused")
        # Refused by the provider (the refresh of an ended session), not by the timeout.
        assert _provider_log(sessions).count("grant.error") > errors_before
    except BaseException:
        shots.failed()
        print("requests the browser gave up:", progress(page).failed)
        raise
    finally:
        context.close()


def test_the_chain_logs_hold_no_session_cookie(sessions: Chain) -> None:
    text = Path(sessions.proxy.log).read_text(encoding="utf-8", errors="replace")
    assert "mod_auth_openidc_session" not in text
