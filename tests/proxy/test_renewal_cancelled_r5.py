"""A renewal cut short by a client that went away still reaches the browser.

Refresh tokens that work once: the auth service refreshes a session when asked about its
old cookie, and a second refresh with the same cookie presents a used refresh token, which
the identity provider answers by revoking the whole session. Calls carrying one session
take turns so that a page's requests refresh it once (``proxy/auth/renewal.py``).

Handlers are cancelled when their client's connection drops (a browser aborts fetches when
it navigates away mid-load). Before this fix the forward-auth call in flight was cancelled
with it: the identity provider had rotated the refresh token, but the renewal never came
back to the proxy, so the next call in the session's turn asked about the old cookie again:
the session was revoked, the person signed out while their sign-in was valid. And a renewal
that reached the proxy but not the browser (its answer's request was aborted) was followed
for the calls within the hold, whose answers did not carry it: once the hold ended the
browser's old cookie was judged as itself, with the same end.

Now the call in a session's turn runs to its end whatever happens to the request that made
it, and the answer to a request sent after a renewal, still carrying the session it
replaced, carries the renewal's ``Set-Cookie`` headers, so the browser learns of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.settings import Settings
from tests.proxy.conftest import ALICE

COOKIE = "_oauth2_proxy"


class RotatingAuth:
    """oauth2-proxy with ``--cookie-refresh`` before an IdP that rotates refresh tokens.

    ``s0`` is due for a refresh: the first call about it refreshes it (the IdP's rotation
    finishes even when the caller hangs up, as a token endpoint's does) and answers 202 with
    ``s1``; a later call about ``s0`` presents the used refresh token, and the IdP revokes
    the session (every cookie of it answers 401 from then on).
    """

    def __init__(self) -> None:
        self.valid = {"s0"}
        self.used: set[str] = set()
        self.revoked = False
        self.asked: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth2/auth", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        if "X-Owui-Proxy-Probe" in request.headers:
            return web.Response(status=401)
        session = request.cookies.get(COOKIE, "")
        self.asked.append(session)
        if self.revoked or session not in self.valid:
            return web.Response(status=401)
        if session == "s0":
            if "s0" in self.used:  # a used refresh token: reuse detection revokes it all
                self.revoked = True
                return web.Response(status=401)
            await asyncio.shield(self._rotate())
            return web.Response(
                status=202,
                headers={**ALICE, "Set-Cookie": f"{COOKIE}=s1; Path=/; HttpOnly; Secure"},
            )
        return web.Response(status=202, headers=ALICE)

    async def _rotate(self) -> None:
        self.used.add("s0")  # the IdP consumes the refresh token as the call arrives
        await asyncio.sleep(0.4)  # the round trip to the IdP's token endpoint
        self.valid.add("s1")


async def test_a_renewal_whose_request_was_abandoned_reaches_the_browser(
    aiohttp_server: Any, aiohttp_client: Any, upstream_server: TestServer
) -> None:
    auth = RotatingAuth()
    auth_server = await aiohttp_server(auth.app())
    settings = Settings(
        upstream=str(upstream_server.make_url("/")),
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
    )
    client = await aiohttp_client(create_app(settings))
    old = {"Cookie": f"lang=en; {COOKIE}=s0"}
    # A page's request starts the refresh; the browser abandons it (a navigation) while the
    # auth service is at the IdP; another request of the page waits for the session's turn.
    first = asyncio.create_task(client.get("/api/first", headers=old))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(client.get("/api/second", headers=old))
    await asyncio.sleep(0.1)
    first.cancel()
    response = await second
    assert response.status == 200, (response.status, auth.asked)
    assert not auth.revoked
    # The renewal's answer never reached the browser: it still sends the old cookie (the next
    # page's load), and learns of the renewal from that answer.
    response = await client.get("/api/next", headers=old)
    assert response.status == 200, (response.status, auth.asked)
    renewed = [c for c in response.headers.getall("Set-Cookie", []) if c.startswith(COOKIE)]
    assert renewed == [f"{COOKIE}=s1; Path=/; HttpOnly; Secure"]
    assert "private" in response.headers["Cache-Control"]
    assert not auth.revoked
    # And with it stays signed in.
    response = await client.get("/api/third", headers={"Cookie": f"lang=en; {COOKIE}=s1"})
    assert response.status == 200
    assert not auth.revoked


async def test_an_answer_to_the_renewed_session_carries_no_replayed_cookie(
    aiohttp_server: Any, aiohttp_client: Any, upstream_server: TestServer
) -> None:
    """The renewal goes only to requests that still carry the session it replaced."""
    auth = RotatingAuth()
    auth_server = await aiohttp_server(auth.app())
    settings = Settings(
        upstream=str(upstream_server.make_url("/")),
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
    )
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/api/first", headers={"Cookie": f"{COOKIE}=s0"})
    assert response.status == 200
    assert response.headers.getall("Set-Cookie") == [f"{COOKIE}=s1; Path=/; HttpOnly; Secure"]
    response = await client.get("/api/second", headers={"Cookie": f"{COOKIE}=s1"})
    assert response.status == 200
    assert "Set-Cookie" not in response.headers
    # A late request still carrying s0 is asked about s1 and given it.
    response = await client.get("/api/late", headers={"Cookie": f"{COOKIE}=s0"})
    assert response.status == 200
    assert response.headers.getall("Set-Cookie") == [f"{COOKIE}=s1; Path=/; HttpOnly; Secure"]
    assert auth.asked == ["s0", "s1", "s1"]
    assert not auth.revoked


def test_a_chain_of_renewals_hands_over_the_last_header_of_each_cookie() -> None:
    from proxy.auth.renewal import Renewals

    now = [0.0]
    renewals = Renewals(hold_s=30, clock=lambda: now[0])
    renewals.renewed("s_0=a; s_1=b", ["s_0=c; Path=/", "s_1=d; Path=/"])
    renewals.renewed("s_0=c; s_1=d", ["s_0=e; Path=/", "s_1=; Max-Age=0"])  # one chunk fewer
    assert renewals.follow("lang=en; s_0=a; s_1=b") == (
        "lang=en; s_0=e",
        ("s_0=e; Path=/", "s_1=; Max-Age=0"),
    )
    assert renewals.follow("s_0=c; s_1=d") == ("s_0=e", ("s_0=e; Path=/", "s_1=; Max-Age=0"))
    assert renewals.follow("s_0=e") == ("s_0=e", ())  # the newest: nothing to hand over
    assert renewals.follow("lang=en") == ("lang=en", ())  # no session: nothing either
    now[0] = 31.0
    assert renewals.follow("s_0=a; s_1=b") == ("s_0=a; s_1=b", ())  # past the hold: itself
