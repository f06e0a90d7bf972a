"""The auth service's Set-Cookie reaches the client, on every kind of answer (issue 20, 1).

oauth2-proxy with ``--cookie-refresh`` answers ``202`` plus ``Set-Cookie`` carrying the
refreshed session; dropping it leaves the browser with a cookie that dies with the access
token. Tested against a stand-in with those semantics (``CookieSessionAuthService``) and
against the recording fake set to answer with cookies.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from structlog.testing import capture_logs

from proxy import logs
from proxy.app import create_app
from proxy.auth.cookies import private_cache_control
from proxy.settings import Settings
from tests.fakes import CookieSessionAuthService, FakeUpstream
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.rawhttp import raw_request

REFRESHED = "_oauth2_proxy=refreshed; Path=/; HttpOnly; SameSite=Lax"
CLEARED = "_oauth2_proxy=; Path=/; Max-Age=0; HttpOnly"
PUBLIC = "https://chat.example.edu"


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ([], "private"),
        (["public, max-age=31536000, immutable"], "private, max-age=31536000, immutable"),
        (["max-age=60, s-maxage=600"], "private, max-age=60"),
        (["Public", "S-MaxAge=5, no-cache"], "private, no-cache"),
        (["no-store"], "no-store"),
        (["private, max-age=60"], "private, max-age=60"),
        (['private="Set-Cookie"'], 'private="Set-Cookie"'),
    ],
    ids=["none", "public-immutable", "s-maxage", "several-headers", "no-store", "private", "pf"],
)
def test_an_answer_with_a_session_cookie_is_private_to_shared_caches(upstream, expected) -> None:
    assert private_cache_control(upstream) == expected


def _auth_cookies(response_headers: Any) -> list[str]:
    return [c for c in response_headers.getall("Set-Cookie", []) if "_oauth2_proxy" in c]


async def _kind(proxy: TestClient[Any, Any], fake_upstream: FakeUpstream, kind: str) -> Any:
    """One request of ``kind`` as Alice; the answer's status and headers."""
    if kind == "relayed":
        response = await proxy.get("/api/models", headers=ALICE_COOKIE)
    elif kind == "upstream-cookie":
        response = await proxy.post("/api/v1/auths/signin", headers=ALICE_COOKIE, json={})
    elif kind == "streamed":
        response = await proxy.get("/download?bytes=300000", headers=ALICE_COOKIE)
    elif kind == "sse":
        fake_upstream.release_sse()
        response = await proxy.get("/sse?events=3", headers=ALICE_COOKIE)
    elif kind == "proxy-error":
        response = await proxy.post("/upload", headers=ALICE_COOKIE, data=b"x" * 100)
    elif kind == "access-page":
        response = await proxy.get("/", headers={**ALICE_COOKIE, "Accept": "text/html"})
    elif kind == "signout":
        response = await proxy.get("/api/v1/auths/signout", headers=ALICE_COOKIE)
    else:
        raise AssertionError(kind)
    await response.read()
    return response


@pytest.mark.parametrize(
    ("kind", "status", "overrides"),
    [
        ("relayed", 200, {}),
        ("upstream-cookie", 200, {}),
        ("streamed", 200, {}),
        ("sse", 200, {}),
        ("proxy-error", 413, {"max_body_bytes": 10}),
        ("access-page", 403, {"allowed_email_domains": "school.edu"}),
        ("signout", 200, {}),
    ],
)
async def test_refreshed_session_cookie_reaches_the_client_on_every_kind_of_answer(
    make_proxy, fake_auth, fake_upstream, kind, status, overrides
) -> None:
    fake_auth.set_cookies = (REFRESHED,)
    proxy = await make_proxy(**overrides)
    response = await _kind(proxy, fake_upstream, kind)
    assert response.status == status
    assert _auth_cookies(response.headers) == [REFRESHED]
    assert response.headers["Cache-Control"].startswith(("private", "no-store"))
    # The same response hook sets the request id: once, the one OpenWebUI was sent.
    (rid,) = response.headers.getall("X-Request-ID")
    assert len(rid) == 32
    if kind == "relayed":
        assert fake_upstream.last().values("X-Request-ID") == [rid]
    if kind == "upstream-cookie":
        # Merged: OpenWebUI's own token cookie goes out too, before the auth service's.
        cookies = response.headers.getall("Set-Cookie")
        assert cookies[0].startswith("token=")
        assert cookies[1:] == [REFRESHED]
    if kind == "signout":
        assert any(c.startswith("token=") for c in response.headers.getall("Set-Cookie"))


async def _upgrade(
    host: str, port: int, headers: list[tuple[str, str]]
) -> tuple[int, CIMultiDict[str]]:
    """A WebSocket handshake by hand: the status and headers of the answer, nothing more."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    finally:
        writer.close()
    status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
    parsed: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.add(name.strip(), value.strip())
    return int(status_line.split()[1]), parsed


async def test_websocket_upgrade_carries_both_the_upstreams_and_the_auth_services_cookies(
    proxy, fake_auth, fake_upstream
) -> None:
    fake_auth.set_cookies = (REFRESHED,)
    fake_upstream.ws_set_cookie = "upstream-ws=1; Path=/"
    status, headers = await _upgrade(proxy.host, proxy.port, list(ALICE_COOKIE.items()))
    assert status == 101
    assert headers.getall("Set-Cookie") == ["upstream-ws=1; Path=/", REFRESHED]
    assert len(headers.getall("X-Request-ID")) == 1


async def test_denials_carry_the_cleared_cookie_as_json_and_as_a_login_redirect(
    make_proxy, fake_auth, fake_upstream
) -> None:
    fake_auth.set_cookies = (CLEARED,)
    proxy = await make_proxy(public_url=PUBLIC, login_url="https://idp.example.edu/login")
    stale = {"Cookie": "_oauth2_proxy=expired-session"}
    api = await proxy.get("/api/models", headers=stale)
    assert api.status == 401
    assert _auth_cookies(api.headers) == [CLEARED]
    page = await raw_request(
        proxy.host, proxy.port, "/c/1", [*stale.items(), ("Accept", "text/html")]
    )
    assert page.status == 302  # the login redirect, raised as an aiohttp HTTPFound
    assert _auth_cookies(page.headers) == [CLEARED]
    assert page.headers["Cache-Control"] == "no-store"
    assert len(api.headers.getall("X-Request-ID")) == len(page.headers.getall("X-Request-ID")) == 1
    assert fake_upstream.seen == []


async def test_answers_before_any_identity_carry_a_request_id_and_no_cookie(
    proxy, fake_auth, fake_upstream, monkeypatch
) -> None:
    """A target without a path (``OPTIONS *``, refused at the edge: 400), or an expectation
    refused before the route (417): each is observed as it is answered (an id, the same in
    its access line), and no cookie."""
    fake_auth.set_cookies = (REFRESHED,)
    sink = io.StringIO()
    monkeypatch.setattr(logs._access, "out", sink)
    star = await raw_request(
        proxy.host, proxy.port, "*", list(ALICE_COOKIE.items()), method="OPTIONS"
    )
    assert star.status == 400
    (rid,) = star.headers.getall("X-Request-ID")
    await asyncio.sleep(0)  # the access line is written when the loop iteration ends
    (line,) = [json.loads(text) for text in sink.getvalue().splitlines()]
    assert (line["request_id"], line["email"], line["upstream_ms"]) == (rid, None, None)
    refused = await raw_request(
        proxy.host, proxy.port, "/", [*ALICE_COOKIE.items(), ("Expect", "teapot")]
    )
    assert refused.status == 417
    (refused_id,) = refused.headers.getall("X-Request-ID")
    assert len(refused_id) == 32
    assert refused_id != rid
    await asyncio.sleep(0)
    lines = [json.loads(text) for text in sink.getvalue().splitlines()]
    assert [(x["request_id"], x["status"], x["method"]) for x in lines] == [
        (rid, 400, "OPTIONS"),
        (refused_id, 417, "GET"),
    ]
    for answer in (star, refused):
        assert _auth_cookies(answer.headers) == []
    assert fake_auth.seen == []
    assert fake_upstream.seen == []


async def test_an_answer_that_sets_a_cookie_is_never_cached_nor_replayed(
    make_proxy, fake_auth
) -> None:
    proxy = await make_proxy(forward_auth_cache_s=60)
    # The session's cookie set again (its expiry slid, say), the value the fake knows.
    slid = "_oauth2_proxy=alice-session; Path=/; Max-Age=3600; HttpOnly"
    fake_auth.set_cookies = (slid,)
    for _ in range(3):
        response = await proxy.get("/", headers=ALICE_COOKIE)
        assert _auth_cookies(response.headers) == [slid]
        proxy.session.cookie_jar.clear()  # sent as the test says, not from the jar
    assert len(fake_auth.seen) == 3  # each one asked: none was cached
    fake_auth.set_cookies = ()
    for _ in range(3):
        response = await proxy.get("/", headers=ALICE_COOKIE)
        assert response.status == 200
        assert _auth_cookies(response.headers) == []  # a cached decision sets no cookie
    assert len(fake_auth.seen) == 4  # the first without a cookie was cached


async def test_a_cookie_that_is_not_utf8_is_left_out_and_logged_without_its_value(
    make_proxy, fake_upstream
) -> None:
    """Raw bytes on the wire: an auth service answering with a Latin-1 cookie value."""
    bad = b"_oauth2_proxy=caf\xe9-secret; Path=/"

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nX-Auth-Request-Email: alice@example.edu\r\n"
            b"Set-Cookie: " + bad + b"\r\nSet-Cookie: " + REFRESHED.encode() + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(forward_auth_url=f"http://127.0.0.1:{port}/oauth2/auth")
        with capture_logs() as lines:
            response = await proxy.get("/api/models", headers=ALICE_COOKIE)
        assert response.status == 200
        assert _auth_cookies(response.headers) == [REFRESHED]
        dropped = [line for line in lines if line["event"] == "auth_cookie_dropped"]
        assert dropped == [{"event": "auth_cookie_dropped", "count": 1, "log_level": "warning"}]
        assert "secret" not in repr(lines)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
async def sessions(aiohttp_server, clock) -> tuple[CookieSessionAuthService, TestServer]:
    service = CookieSessionAuthService(lifetime_s=300, refresh_s=60, clock=lambda: clock[0])
    return service, await aiohttp_server(service.app())


@pytest.fixture
async def browser(aiohttp_client, upstream_server, sessions) -> TestClient[Any, Any]:
    """A client with a cookie jar, as a browser, through the proxy to the stand-in."""
    _service, server = sessions
    settings = Settings(
        upstream=str(upstream_server.make_url("/")),
        auth="forward",
        forward_auth_url=str(server.make_url("/oauth2/auth")),
    )
    return await aiohttp_client(create_app(settings))


def _sign_in(browser: TestClient[Any, Any], session: str) -> None:
    """The session cookie in the client's jar, as the login's callback would leave it."""
    browser.session.cookie_jar.update_cookies(
        {"_oauth2_proxy": session}, response_url=browser.make_url("/")
    )


async def test_an_active_user_stays_signed_in_well_past_the_access_token_lifetime(
    browser, sessions, clock
) -> None:
    service, _server = sessions
    _sign_in(browser, service.sign_in("ada@x.edu"))
    # A request every 50 s for 20 minutes: four access-token lifetimes.
    for _ in range(24):
        clock[0] += 50
        response = await browser.get("/api/models")
        assert response.status == 200, f"signed out after {clock[0] - 1000:g} s"
    assert service.refreshes >= 10


async def test_an_idle_user_is_signed_out_and_the_cookie_cleared(browser, sessions, clock) -> None:
    service, _server = sessions
    _sign_in(browser, service.sign_in("ada@x.edu"))
    assert (await browser.get("/api/models")).status == 200
    clock[0] += 301  # longer than the access token lives, without a request
    response = await browser.get("/api/models")
    assert response.status == 401
    assert not [c for c in browser.session.cookie_jar if c.key == "_oauth2_proxy"]


async def test_a_pages_parallel_requests_refresh_the_session_once(browser, sessions, clock) -> None:
    """Twenty requests at once, all with the cookie that is due for a refresh: one refresh,
    the others asked about the renewed session; no used refresh token presented again."""
    service, _server = sessions
    service.refresh_delay_s = 0.05  # the round trip to the identity provider
    _sign_in(browser, service.sign_in("ada@x.edu"))
    clock[0] += 61
    answers = await asyncio.gather(*(browser.get(f"/api/models?n={n}") for n in range(20)))
    assert [a.status for a in answers] == [200] * 20
    assert (service.refreshes, service.revoked) == (1, 0)
    renewed = [a for a in answers if _auth_cookies(a.headers)]
    assert len(renewed) == 1  # the renewal reaches the browser with the answer that made it
    clock[0] += 61  # and the browser's next request is the renewed session's own
    assert (await browser.get("/api/models")).status == 200
    assert (service.refreshes, service.revoked) == (2, 0)


async def test_a_cookie_from_before_a_refresh_stands_for_the_renewed_session_briefly(
    browser, sessions, clock
) -> None:
    """A request sent before the browser saw the renewal still carries the old cookie: it is
    asked about the renewed session, not presented as a used refresh token."""
    service, _server = sessions
    old = service.sign_in("ada@x.edu")
    _sign_in(browser, old)
    clock[0] += 61
    assert (await browser.get("/api/models")).status == 200  # refreshed: the jar has a new one
    (new,) = [c.value for c in browser.session.cookie_jar if c.key == "_oauth2_proxy"]
    assert new != old
    browser.session.cookie_jar.clear()
    late = await browser.get("/api/models", headers={"Cookie": f"_oauth2_proxy={old}"})
    assert late.status == 200
    assert (service.refreshes, service.revoked) == (1, 0)
