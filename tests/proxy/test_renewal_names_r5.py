"""The auth service's session cookies are learned from answers that vouch for a session.

``proxy/auth/renewal.py`` tells a session (the cookies the auth service owns) from the rest
of a ``Cookie`` header by the names the service has set, at most ``NAMES`` of them, first
come first kept. A service that answers a browser without a session by sending it to log
in sets a cookie of a new name each time: mod_auth_openidc's ``mod_auth_openidc_state_<state>``
(its default ``OIDCUnAuthAction auth``), one per login started. Before this fix those names
were learned too: a few hundred login redirects (anyone can cause them, no session needed)
filled the names, the real session cookie's name was never learned, and no session's
renewal was followed again: the parallel refreshes the turns exist to prevent came back,
and with them revoked sessions. Now names are learned only from answers that admit
(2xx): the cookies a service sets when it vouches for a session are that session's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.auth.renewal import NAMES
from proxy.settings import Settings
from tests.proxy.conftest import ALICE

SESSION = "mod_auth_openidc_session"


class RedirectingRP:
    """mod_auth_openidc as an auth endpoint with ``OIDCUnAuthAction auth``: no session, a
    302 to the provider and a state cookie of a new name; a session, 200 and the session
    renewed (its inactivity timeout slides)."""

    def __init__(self) -> None:
        self.logins = 0
        self.asked: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth2/auth", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        session = request.cookies.get(SESSION)
        if "X-Owui-Proxy-Probe" in request.headers or session is None:
            self.logins += 1
            state = f"mod_auth_openidc_state_{self.logins:06d}"
            return web.Response(
                status=302,
                headers={
                    "Location": "https://idp.example/authorize",
                    "Set-Cookie": f"{state}=x; Path=/; HttpOnly; Secure",
                },
            )
        self.asked.append(session)
        n = int(session.removeprefix("s")) + 1
        return web.Response(
            status=200, headers={**ALICE, "Set-Cookie": f"{SESSION}=s{n}; Path=/; HttpOnly"}
        )


async def test_login_redirects_do_not_crowd_out_the_session_cookie(
    aiohttp_server: Any, aiohttp_client: Any, upstream_server: TestServer
) -> None:
    rp = RedirectingRP()
    auth_server = await aiohttp_server(rp.app())
    settings = Settings(
        upstream=str(upstream_server.make_url("/")),
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
    )
    client = await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())
    for n in range(NAMES + 10):  # anyone's login starts, no session needed
        response = await client.get(f"/api/x?{n}", headers={"Cookie": "lang=en"})
        assert response.status == 401
    response = await client.get("/api/a", headers={"Cookie": f"lang=en; {SESSION}=s0"})
    assert response.status == 200
    # A request the browser sent before it had s1 is asked about s1, not about s0 again.
    response = await client.get("/api/b", headers={"Cookie": f"lang=en; {SESSION}=s0"})
    assert response.status == 200
    assert rp.asked == ["s0", "s1"]
