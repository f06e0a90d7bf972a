"""A shared school computer: the next person, after one whose sign-in ended without Sign Out.

Ada's session at the relying party and the provider ends (it timed out, or she closed the
tab and the cookies went), but OpenWebUI's own ``token`` cookie and the token in its
``localStorage`` stay in the browser. Grace signs in on the same browser: she must land as
herself, and Ada's token, still sent by the page, must not let anything be done as Ada.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.pageload import progress
from tests.e2e.test_browser import UI_TIMEOUT_MS, whoami
from tests.e2e.test_oidc_chain import Chain, Shots, browser, log_in_at_provider, running_chain

__all__ = ["browser"]

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.nginx]

STATE = ARTIFACTS / "oidc-shared"


@pytest.fixture(scope="module")
def shared(stack: Stack) -> Iterator[Chain]:
    with running_chain(stack, STATE) as chain:
        yield chain


def test_the_next_person_lands_as_themselves_when_the_last_never_signed_out(
    shared: Chain, browser: Browser
) -> None:
    ada, grace = shared.users
    context = browser.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    context.route(re.compile(r"^https://fonts\.(googleapis|gstatic)\.com/"), lambda r: r.abort())
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    progress(page)
    shots = Shots(page, STATE)
    try:
        progress(page).goto(shared.public_url + "/")
        log_in_at_provider(page, shared, ada, shots)
        me = whoami(page)
        assert me["status"] == 200, me
        assert me["body"]["email"] == ada.email, me
        ada_token = progress(page).evaluate("() => localStorage.token")
        assert ada_token
        # Ada's single sign-on ends without Sign Out: every cookie but OpenWebUI's token goes.
        kept = [c for c in context.cookies() if c["name"] == "token"]
        assert kept, "OpenWebUI set no token cookie"
        context.clear_cookies()
        context.add_cookies(kept)  # type: ignore[arg-type]
        progress(page).goto(shared.public_url + "/")
        log_in_at_provider(page, shared, grace, shots)
        shots.shot("grace")
        me = whoami(page)
        assert me["status"] == 200, me
        assert me["body"]["email"] == grace.email, me
        # Ada's token, if the page still held it, does nothing as Ada for Grace's browser.
        ada_call = page.evaluate(
            """async (token) => {
                const r = await fetch('/api/v1/auths/',
                                      {headers: {Authorization: 'Bearer ' + token}});
                return {status: r.status, body: await r.text()};
            }""",
            ada_token,
        )
        assert ada_call["status"] in (401, 403), ada_call
        assert ada.email not in ada_call["body"]
    except BaseException:
        shots.failed()
        raise
    finally:
        context.close()
