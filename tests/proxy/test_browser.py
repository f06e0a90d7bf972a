"""Browser and API-client behaviour at the public edge (issue 3): policy tables, then the app."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import browser, socketio
from proxy.target import canonical_path, read_target
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE
from tests.proxy.rawhttp import raw_request

PUBLIC = "https://chat.example.edu"
LOGIN = "https://idp.example.edu/login"
LOGOUT = "https://idp.example.edu/logout"

ORIGIN_ROWS = [
    ("same origin", "https://chat.example.edu", True),
    ("same origin, explicit default port", "https://chat.example.edu:443", True),
    ("same origin, upper case", "HTTPS://CHAT.EXAMPLE.EDU", True),
    ("other host", "https://evil.example", False),
    ("suffix trick", "https://chat.example.edu.evil.example", False),
    ("other scheme", "http://chat.example.edu", False),
    ("other port", "https://chat.example.edu:8443", False),
    ("null origin", "null", False),
    ("missing", None, False),
    ("garbage", "https://[::1", False),
]


@pytest.mark.parametrize(
    ("origin", "allowed"), [r[1:] for r in ORIGIN_ROWS], ids=[r[0] for r in ORIGIN_ROWS]
)
def test_websocket_origin_policy(origin, allowed) -> None:
    assert browser.origin_allowed(origin, browser.origin_of(PUBLIC)) is allowed


API_KEY_ROWS = [
    ("api key", ["Bearer sk-abc"], "/api/models", True),
    ("lower-case scheme", ["bearer sk-abc"], "/api/chat/completions", True),
    ("jwt bearer", ["Bearer eyJhbGciOi.x.y"], "/api/models", False),
    ("two authorizations", ["Bearer sk-a", "Bearer sk-b"], "/api/models", False),
    ("basic", ["Basic c2stYWJj"], "/api/models", False),
    ("none", [], "/api/models", False),
    ("sign-up refused", ["Bearer sk-x"], "/api/v1/auths/signup", False),
    ("sign-in refused", ["Bearer sk-x"], "/api/v1/auths/signin", False),
    ("encoded sign-up refused", ["Bearer sk-x"], "/api/v1/auths/%73ignup", False),
    ("dot-segment sign-up refused", ["Bearer sk-x"], "/api/x/../v1/auths/signup", False),
    ("case sign-up refused", ["Bearer sk-x"], "/API/v1/Auths/signup", False),
    ("leading double slash refused", ["Bearer sk-x"], "//api/v1/auths/signup", False),
    ("inner double slash refused", ["Bearer sk-x"], "/api/v1//auths/signup", False),
    ("auths prefix itself refused", ["Bearer sk-x"], "/api/v1/auths", False),
    ("similar name allowed", ["Bearer sk-x"], "/api/v1/authsx/list", True),
    ("oauth refused", ["Bearer sk-x"], "/oauth/google/login", False),
    # OpenWebUI splits the value on one space; what it cannot parse makes it fall back to
    # x-api-key, which may carry a stolen session token: only the one exact form passes.
    ("nbsp before the scheme", ["\u00a0Bearer sk-abc"], "/api/models", False),
    ("two spaces", ["Bearer  sk-abc"], "/api/models", False),
    ("leading space", [" Bearer sk-abc"], "/api/models", False),
    ("trailing space", ["Bearer sk-abc "], "/api/models", False),
    ("tab", ["Bearer\tsk-abc"], "/api/models", False),
    ("extra word", ["Bearer sk-abc x"], "/api/models", False),
    ("bare prefix", ["Bearer sk-"], "/api/models", False),
    ("non-ascii key", ["Bearer sk-\u00e9"], "/api/models", False),
    ("socket.io polling refused", ["Bearer sk-x"], "/ws/socket.io/", False),
    ("encoded socket.io refused", ["Bearer sk-x"], "/ws/socket%2Eio/", False),
]


@pytest.mark.parametrize(
    ("authorizations", "path", "allowed"),
    [r[1:] for r in API_KEY_ROWS],
    ids=[r[0] for r in API_KEY_ROWS],
)
def test_api_key_policy(authorizations, path, allowed) -> None:
    target = read_target(path)
    on_socketio = socketio.is_socketio_path(target.path)
    assert browser.api_key_allowed(authorizations, target, on_socketio) is allowed


NAVIGATION_ROWS = [
    ("page load", "GET", "text/html,application/xhtml+xml,*/*;q=0.8", False, True),
    ("head page", "HEAD", "text/html", False, True),
    ("fetch json", "GET", "application/json", False, False),
    ("no accept", "GET", None, False, False),
    ("form post", "POST", "text/html", False, False),
    ("websocket", "GET", "text/html", True, False),
]


@pytest.mark.parametrize(
    ("method", "accept", "websocket", "expected"),
    [r[1:] for r in NAVIGATION_ROWS],
    ids=[r[0] for r in NAVIGATION_ROWS],
)
def test_browser_navigation(method, accept, websocket, expected) -> None:
    assert browser.is_browser_navigation(method, accept, websocket) is expected


def _rd(location: str) -> str:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == LOGIN
    return parse_qs(parts.query)["rd"][0]


async def test_login_redirect_rd_comes_from_public_url_only(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(public_url=PUBLIC, login_url=LOGIN)
    for headers in (
        [("Accept", "text/html")],
        [
            ("Accept", "text/html"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "http"),
        ],
    ):
        response = await raw_request(proxy.host, proxy.port, "/c/abc?model=x%2Fy", headers)
        assert response.status == 302
        assert _rd(response.headers["Location"]) == f"{PUBLIC}/c/abc?model=x%2Fy"
    # Even a Host of the attacker's choosing, and a path that looks like another host.
    reader_target = "//evil.example/x"
    response = await raw_request(proxy.host, proxy.port, reader_target, [("Accept", "text/html")])
    rd = _rd(response.headers["Location"])
    assert rd == f"{PUBLIC}//evil.example/x"
    assert urlsplit(rd).netloc == "chat.example.edu"
    assert fake_upstream.seen == []


async def test_login_redirect_host_header_cannot_steer(make_proxy) -> None:
    proxy = await make_proxy(public_url=PUBLIC, login_url=LOGIN)
    response = await proxy.get(
        "/", headers={"Accept": "text/html", "Host": "evil.example"}, allow_redirects=False
    )
    assert response.status == 302
    assert _rd(response.headers["Location"]) == f"{PUBLIC}/"


async def test_api_calls_get_401_json_not_a_redirect(make_proxy) -> None:
    proxy = await make_proxy(public_url=PUBLIC, login_url=LOGIN)
    response = await proxy.get("/api/models", headers={"Accept": "application/json"})
    assert response.status == 401
    assert (await response.json())["error"] == "authentication required"


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_signout_relays_clears_token_and_returns_logout_url(
    make_proxy, fake_upstream, method
) -> None:
    proxy = await make_proxy(logout_url=LOGOUT)
    response = await proxy.request(
        method,
        "/api/v1/auths/signout",
        headers={**ALICE_COOKIE, "Cookie": "_oauth2_proxy=alice-session; token=tok.alice"},
    )
    assert response.status == 200
    assert await response.json() == {"status": True, "redirect_url": LOGOUT}
    cleared = [c for c in response.headers.getall("Set-Cookie") if c.startswith("token=")]
    assert cleared
    assert all("Max-Age=0" in c or "1970" in c for c in cleared)
    relayed = fake_upstream.last()
    assert (relayed.method, relayed.raw_path) == ("POST", "/api/v1/auths/signout")
    assert relayed.values("X-User-Email") == ["alice@example.edu"]


async def test_signout_page_load_goes_to_logout_url(make_proxy) -> None:
    proxy = await make_proxy(logout_url=LOGOUT)
    response = await proxy.get(
        "/api/v1/auths/signout",
        headers={**ALICE_COOKIE, "Accept": "text/html"},
        allow_redirects=False,
    )
    assert response.status == 302
    assert response.headers["Location"] == LOGOUT
    assert any(c.startswith("token=") for c in response.headers.getall("Set-Cookie"))


async def test_api_keys_refused_unless_enabled(proxy, fake_upstream) -> None:
    response = await proxy.get("/api/models", headers={"Authorization": "Bearer sk-123"})
    assert response.status == 401
    assert fake_upstream.seen == []


async def test_api_key_passes_without_identity_when_enabled(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(allow_api_keys=True)
    response = await proxy.get(
        "/api/models",
        headers={
            "Authorization": "Bearer sk-123",
            "Cookie": "token=stolen",
            "X-User-Email": "admin@example.edu",
        },
    )
    assert response.status == 200
    seen = fake_upstream.last()
    assert seen.values("Authorization") == ["Bearer sk-123"]
    assert seen.values("Cookie") == []
    assert not any(n.startswith("x-user-") for n in seen.names_normalised())


async def test_jwt_bearer_without_sso_refused_even_with_api_keys(make_proxy, fake_upstream):
    proxy = await make_proxy(allow_api_keys=True)
    for headers in (
        {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IngifQ.sig"},
        {"Cookie": "token=eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IngifQ.sig"},
        {"Authorization": "Bearer sk-123"},  # to sign-in: never on an unchecked key
    ):
        # (Sign-up itself is refused for everyone before this: test_edge_refusals.py.)
        path = "/api/v1/auths/signin" if "sk-" in str(headers) else "/api/models"
        assert (await proxy.post(path, headers=headers, json={})).status == 401
    assert fake_upstream.seen == []


async def test_cross_origin_websocket_refused(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(public_url=PUBLIC)
    for origin in ("https://evil.example", None):
        headers = dict(ALICE_COOKIE)
        if origin:
            headers["Origin"] = origin
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await proxy.ws_connect("/ws", headers=headers)
        assert refused.value.status == 403
    assert fake_upstream.seen == []
    async with proxy.ws_connect("/ws", headers={**ALICE_COOKIE, "Origin": PUBLIC}) as ws:
        await ws.send_str("same-origin")
        assert (await ws.receive(timeout=10)).data == "same-origin"


async def test_identity_switch_drops_the_previous_users_token(proxy, fake_upstream) -> None:
    """Alice signed in, then the SSO session became Bob's: Bob must end up as Bob."""
    alice = await proxy.post("/api/v1/auths/signin", json={}, headers=ALICE_COOKIE)
    assert (await alice.json())["email"] == "alice@example.edu"
    stale = "token=tok.alice@example.edu"

    # Bob's first request still carries Alice's OpenWebUI cookie: OpenWebUI says mismatch,
    # and the proxy makes the browser drop that cookie.
    response = await proxy.get(
        "/api/v1/auths/", headers={"Cookie": f"_oauth2_proxy=bob-session; {stale}"}
    )
    assert response.status == 401
    assert (await response.json())["detail"] == browser.MISMATCH_DETAIL
    assert browser.CLEAR_TOKEN_COOKIE in response.headers.getall("Set-Cookie")

    # The UI's sign-in (it does one after any 401) now yields Bob's own token.
    bob = await proxy.post("/api/v1/auths/signin", json={}, headers=BOB_COOKIE)
    assert (await bob.json())["email"] == "bob@example.edu"
    token = (await bob.json())["token"]
    ok = await proxy.get(
        "/api/v1/auths/", headers={**BOB_COOKIE, "Authorization": f"Bearer {token}"}
    )
    assert ok.status == 200


async def test_other_401s_keep_the_token_cookie(proxy) -> None:
    response = await proxy.get("/status/401", headers=ALICE_COOKIE)
    assert response.status == 401
    assert "Set-Cookie" not in response.headers


# --- canonical_path: the fast path for plain paths answers as the full reading does ------


def _canonical_reference(path: str) -> str:
    """canonical_path as it reads every path: decode, collapse slashes, resolve, fold."""
    decoded = unquote(path)
    resolved = posixpath.normpath("/" + re.sub("/+", "/", decoded).lstrip("/")).lower()
    return resolved.rstrip("/") or "/"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/chats/list", "/api/v1/chats/list"),
        ("/API/V1/Auths/Signout/", "/api/v1/auths/signout"),
        ("", "/"),
        ("/", "/"),
        ("///", "/"),
        ("//api/v1/auths/signup", "/api/v1/auths/signup"),
        ("api/x", "/api/x"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../api/v1/auths/signup", "/api/v1/auths/signup"),
        ("..", "/"),
        ("/a/%2e%2e/api/v1/scim/", "/api/v1/scim"),
        ("/api/v1/auths/sign%75p", "/api/v1/auths/signup"),
        ("/a/...b/c", "/a/...b/c"),
        ("/a.b/c.", "/a.b/c."),
    ],
)
def test_canonical_path_table(path: str, expected: str) -> None:
    assert canonical_path(path) == expected == _canonical_reference(path)


@given(st.text(alphabet="/.%2eEfFaA5c_-~ \\", max_size=24))
def test_canonical_path_fast_path_agrees_with_the_full_reading(path: str) -> None:
    assert canonical_path(path) == _canonical_reference(path)
