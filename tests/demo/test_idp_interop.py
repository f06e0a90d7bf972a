"""The demo IdP against the real consumers: the proxy's forward-auth source and the
provisioner's webhook receiver code, so the demo cannot drift away from what they accept."""

from __future__ import annotations

import base64
import json
import time

import aiohttp
import pytest
from aiohttp import web

from demo.idp import IdpConfig, create_app
from demo.users import user_created_event
from provisioner.webhook import Signup, parse_signup, verify
from proxy.auth.base import Denied
from proxy.auth.forward import ForwardAuthenticator
from proxy.settings import Settings
from proxy.webhooks import new_message_id, new_secret, sign

PUBLIC = "http://127.0.0.1:8000"


@pytest.fixture
async def idp_url(aiohttp_server) -> str:
    config = IdpConfig(host="127.0.0.1", port=0, public_url=PUBLIC, cookie_key=b"c" * 32)
    server = await aiohttp_server(create_app(config))
    return str(server.make_url("")).rstrip("/")


async def demo_cookie(idp_url: str, email: str, name: str, groups: str = "") -> str:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
        browser.post(
            f"{idp_url}/login",
            data={"email": email, "name": name, "groups": groups, "rd": PUBLIC},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 303
        morsel = response.cookies["owui_demo_session"]
        return f"{morsel.key}={morsel.value}"


@pytest.mark.parametrize(
    ("name", "groups"),
    [
        pytest.param("Ada Lovelace", "students,cs101", id="ascii"),
        pytest.param("Zoë Ångström", "", id="non-ascii-name"),
    ],
)
async def test_demo_idp_is_a_forward_auth_service_for_the_proxy(
    aiohttp_client, idp_url: str, name: str, groups: str
) -> None:
    settings = Settings(
        upstream="http://127.0.0.1:9",
        auth="forward",
        forward_auth_url=f"{idp_url}/oauth2/auth",
        public_url=PUBLIC,
    )
    async with aiohttp.ClientSession() as session:
        auth = ForwardAuthenticator(settings, session)

        async def handler(request: web.Request) -> web.Response:
            outcome = await auth.authenticate(request)
            if isinstance(outcome, Denied):
                return web.json_response({"denied": outcome.reason}, status=outcome.status)
            return web.json_response(
                {"email": outcome.email, "name": outcome.name, "groups": list(outcome.groups)}
            )

        app = web.Application()
        app.router.add_get("/", handler)
        client = await aiohttp_client(app)
        cookie = await demo_cookie(idp_url, "Ada@Example.edu", name, groups)
        async with client.get("/", headers={"Cookie": f"theme=dark; {cookie}"}) as response:
            assert response.status == 200
            assert await response.json() == {
                "email": "ada@example.edu",
                "name": name,
                "groups": [g for g in groups.split(",") if g],
            }
        async with client.get("/") as response:
            assert response.status == 401


def test_signup_event_is_accepted_by_the_provisioner_receiver() -> None:
    """Signed by proxy.webhooks, verified and parsed by provisioner.webhook."""
    secret = new_secret()
    event = user_created_event("ada@example.edu", "Ada King Lovelace", ("cs101",))
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = sign(secret, new_message_id(), int(time.time()), body)
    verify((base64.b64decode(secret.removeprefix("whsec_")),), headers, body)
    assert parse_signup(json.loads(body)) == Signup("ada@example.edu", "Ada King Lovelace")
