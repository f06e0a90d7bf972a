"""The whole identity chain against a real OpenID Provider, in a real browser (issue 11).

    Chromium --TLS--> nginx (deploy/nginx) --/oauth2/--> Apache + mod_auth_openidc --> oidc-provider
                         \\--everything else--> owui-proxy --forward-auth: Apache /oauth2/auth
                                                   \\--> OpenWebUI 0.12.4

The production shape of an oauth2-proxy deployment with the login on the chat host, which
used to loop: the proxy sends an unauthenticated browser to ``/oauth2/start`` on the chat
host, nginx routes that prefix to the relying party, the provider's login and consent forms
are filled in, the callback sets the relying party's session and the browser lands in
OpenWebUI as that user (email, name and a group from the provider's claims). Signing out
of OpenWebUI ends the provider's session too: the next visit meets the login form again.
An API call without a session gets 401, and a page load a redirect chain that leaves for
the provider instead of coming back. Screenshots: ``artifacts/e2e/latest/oidc-chain/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from demo.stack import Stack
from tests.deploy.clients import RawResponse, raw_https
from tests.deploy.conftest import TestTLS, make_tls
from tests.deploy.edge import SERVER_NAME, Nginx, Proxy, free_port, nginx_binary
from tests.e2e.conftest import ARTIFACTS, fresh_email, operator_headers, owui_url
from tests.e2e.oidc.chain import Apache, OidcProvider, User
from tests.e2e.pageload import progress
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, whoami

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.nginx]

STATE = ARTIFACTS / "oidc-chain"


@dataclass
class Chain:
    stack: Stack
    provider: OidcProvider
    apache: Apache
    proxy: Proxy
    nginx: Nginx
    tls: TestTLS
    https: int
    public_url: str
    users: tuple[User, ...]
    group: str

    def get(self, target: str, *headers: str) -> RawResponse:
        """One request to nginx as ``SERVER_NAME``, by the book (TLS, SNI, our CA)."""
        return asyncio.run(
            raw_https(
                self.https,
                [f"GET {target} HTTP/1.1", f"Host: {SERVER_NAME}:{self.https}", *headers,
                 "Connection: close"],
                ctx=self.tls.client_context(),
            )
        )  # fmt: skip


def _create_group(stack: Stack, name: str) -> None:
    """OpenWebUI syncs memberships of existing groups only; this one is in a user's claims."""
    response = httpx.post(
        f"{owui_url(stack)}/api/v1/groups/create",
        headers=operator_headers(stack),
        json={"name": name, "description": "joined through the provider's groups claim"},
        timeout=30,
    )
    response.raise_for_status()


@pytest.fixture(scope="module")
def chain(stack: Stack) -> Iterator[Chain]:
    with running_chain(stack, STATE) as started:
        yield started


@contextlib.contextmanager
def running_chain(
    stack: Stack, state: Path, *, access_token_s: int | None = None, session: str = ""
) -> Iterator[Chain]:
    """The whole chain in front of ``stack``'s OpenWebUI, its files and logs under ``state``.

    ``access_token_s`` gives the provider short access tokens and rotating refresh tokens;
    ``session`` holds mod_auth_openidc's session directives (default: server-side sessions).
    """
    if nginx_binary() is None:
        pytest.fail("nginx is missing: scripts/test installs it", pytrace=False)
    state.mkdir(parents=True, exist_ok=True)
    group = f"oidc-course-{secrets.token_hex(3)}"
    _create_group(stack, group)
    users = (
        User(fresh_email("oidc-ada"), "Ada Lovelace", ("students", group)),
        User(fresh_email("oidc-grace"), "Grace Hopper-Müller", ("students",)),
    )
    https, http, public_port, admin = free_port(), free_port(), free_port(), free_port()
    public_url = f"https://{SERVER_NAME}:{https}"
    tls = make_tls(state / "tls")
    provider = OidcProvider(
        state / "provider",
        users,
        [f"{public_url}/oauth2/callback"],
        [f"{public_url}/"],
        access_token_s=access_token_s,
    )
    apache = Apache(provider, public_url, state, session=session)
    proxy = Proxy(
        {
            "OWUI_PROXY_UPSTREAM": owui_url(stack),
            "OWUI_PROXY_LISTEN": f"127.0.0.1:{public_port}",
            "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{apache.url}/oauth2/auth",
            "OWUI_PROXY_PUBLIC_URL": public_url,
            # On the chat host: allowed because nginx routes /oauth2/ to the relying party.
            "OWUI_PROXY_LOGIN_URL": f"{public_url}/oauth2/start",
            # mod_auth_openidc's logout: its redirect URI with ?logout=<where to land after>.
            "OWUI_PROXY_LOGOUT_URL": f"{public_url}/oauth2/callback?logout="
            + quote(f"{public_url}/", safe=""),
            "OWUI_PROXY_TRUSTED_PROXIES": "127.0.0.1/32",
            "OWUI_PROXY_SHUTDOWN_GRACE_S": "2",
        },
        state / "proxy.log",
    )
    nginx = Nginx(
        state / "nginx", f"127.0.0.1:{https}", f"127.0.0.1:{http}", f"127.0.0.1:{public_port}",
        tls.cert, tls.key, auth=f"127.0.0.1:{apache.port}",
    )  # fmt: skip
    try:
        provider.start()
        apache.start()
        proxy.start(("127.0.0.1", public_port))
        nginx.start(("127.0.0.1", https))
        yield Chain(stack, provider, apache, proxy, nginx, tls, https, public_url, users, group)
    finally:
        nginx.stop()
        proxy.stop()
        apache.stop()
        provider.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs chromium", pytrace=False)
    # owui.test is the chat host's name; it resolves to nginx on loopback.
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


class Shots:
    """Numbered screenshots of the flow, and a full-page one of the moment it failed."""

    def __init__(self, page: Page, folder: Path = STATE) -> None:
        self.page = page
        self.folder = folder
        self.count = 0
        for old in folder.glob("*.png"):
            old.unlink()

    def shot(self, label: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{label}.png"))

    def failed(self) -> None:
        name = f"FAILED-{self.count + 1:02d}.png"
        self.page.screenshot(path=str(self.folder / name), full_page=True)


def log_in_at_provider(page: Page, chain: Chain, user: User, shots: Shots) -> None:
    """From wherever the chain sent the browser: the provider's login form, then its consent
    form (asked once per user and client), then back on the chat host in OpenWebUI."""
    loading = progress(page)
    interaction = re.compile("^" + re.escape(f"{chain.provider.issuer}/interaction/"))
    loading.at(interaction, "the provider's login form")
    page.locator("input[name=login]").fill(user.email)
    page.locator("input[name=password]").fill("any password: the dev login form takes it")
    shots.shot("provider-login")
    page.get_by_role("button", name="Sign-in").click()
    home = re.compile("^" + re.escape(chain.public_url + "/"))
    consent = page.get_by_text("scopes:")
    loading.until(
        lambda: bool(home.match(page.url)) or consent.is_visible(),
        "the provider's consent form or the chat host",
    )
    if not home.match(page.url):
        shots.shot("provider-consent")
        page.get_by_role("button", name="Continue").click()
    loading.at(home, "back on the chat host")
    loading.app()


def group_names(page: Page) -> list[str]:
    """The groups OpenWebUI lists for the signed-in user (a non-admin sees their own)."""
    result: dict[str, Any] = progress(page).evaluate(
        """async () => {
            const r = await fetch('/api/v1/groups/', {
                headers: {Authorization: 'Bearer ' + localStorage.token}});
            return {status: r.status, body: await r.json()};
        }"""
    )
    assert result["status"] == 200, result
    return sorted(g["name"] for g in result["body"])


def test_api_call_without_a_session_is_401_and_a_page_load_leaves_for_the_provider(
    chain: Chain,
) -> None:
    """No loop: the page load's redirects leave the chat host for the provider's login."""
    api = chain.get("/api/v1/auths/", "Accept: application/json")
    assert api.status == 401
    assert api.header("Location") is None

    target = "/c/some-chat?x=1"
    hops: list[str] = []
    response = chain.get(target, "Accept: text/html")
    while response.status in (301, 302, 303, 307, 308) and len(hops) < 5:
        location = response.header("Location") or ""
        hops.append(location)
        if not location.startswith(chain.public_url + "/"):
            break  # left the chat host
        response = chain.get(location.removeprefix(chain.public_url), "Accept: text/html")
    start = urlsplit(hops[0])
    assert f"{start.scheme}://{start.netloc}{start.path}" == f"{chain.public_url}/oauth2/start"
    assert parse_qs(start.query)["rd"] == [chain.public_url + target]
    # The login start is answered by the relying party (nginx routed it), which sends the
    # browser to the provider's authorization endpoint: two hops and out, no loop.
    assert len(hops) == 2, hops
    authorize = chain.provider.discovery()["authorization_endpoint"]
    assert hops[1].startswith(authorize + "?"), hops
    query = urlsplit(hops[1]).query
    assert f"redirect_uri={quote(chain.public_url + '/oauth2/callback', safe='')}" in query


def test_browser_logs_in_at_the_provider_lands_as_the_user_and_logs_out_everywhere(
    chain: Chain, browser: Browser
) -> None:
    ada, grace = chain.users
    context = browser.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    # The provider's default pages load a web font; there is no internet here.
    context.route(re.compile(r"^https://fonts\.(googleapis|gstatic)\.com/"), lambda r: r.abort())
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    progress(page)  # watching the page's loads from its first request
    shots = Shots(page)
    try:
        progress(page).goto(chain.public_url + "/")
        log_in_at_provider(page, chain, ada, shots)
        shots.shot("landed")
        me = whoami(page)
        assert me["status"] == 200, me
        body = me["body"]
        assert (body["email"], body["name"], body["role"]) == (ada.email, ada.name, "user")
        assert chain.group in group_names(page)  # from the provider's groups claim
        page.get_by_role("button", name="User menu").first.click()
        expect(page.get_by_role("menu")).to_contain_text(ada.name)
        shots.shot("user-menu")

        # Sign out in OpenWebUI: the proxy answers with the relying party's logout, which
        # ends its session and sends the browser to the provider's end-session page.
        page.get_by_role("menuitem", name="Sign Out").click()
        loading = progress(page)
        end = re.compile("^" + re.escape(f"{chain.provider.issuer}/session/end"))
        loading.at(end, "the provider's sign-out page")
        shots.shot("provider-logout")
        page.get_by_role("button", name="Yes, sign me out").click()
        # Back on the chat host, which finds no session and starts a login: the provider
        # asks for the login form again, so its session ended too.
        loading.visible(page.locator("input[name=login]"), "the provider's login form again")
        assert page.url.startswith(f"{chain.provider.issuer}/interaction/"), page.url
        shots.shot("login-again")

        # Same browser, another person: lands as them.
        log_in_at_provider(page, chain, grace, shots)
        shots.shot("second-user")
        me = whoami(page)
        assert me["status"] == 200, me
        assert (me["body"]["email"], me["body"]["name"]) == (grace.email, grace.name)
        assert chain.group not in group_names(page)
    except BaseException:
        shots.failed()
        raise
    finally:
        context.close()


def test_proxy_log_holds_no_session_cookie(chain: Chain) -> None:
    """Sanity of what the chain writes: the proxy log holds no session cookie of the chain."""
    text = Path(chain.proxy.log).read_text(encoding="utf-8", errors="replace")
    assert "mod_auth_openidc_session=" not in text
