"""OpenWebUI's trusted sign-in must sign in the person the proxy verified, on both listeners.

OpenWebUI trusts the header named by its own ``WEBUI_AUTH_TRUSTED_EMAIL_HEADER``; the proxy
strips and injects the one named by ``OWUI_PROXY_EMAIL_HEADER``. When the two differ (a typo
in either, or one changed without the other), the proxy's identity is ignored and a header
the client sent chooses the account. Before: the sign-in's answer, another person's token
and its ``Set-Cookie``, was relayed as it came (here ``X-Other-Email: bob@...`` from Alice
signed Alice in as Bob). Now its account is compared with the verified person: another one
is a 502 (``signin_identity_mismatch``) and nothing of its answer reaches the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.internal_listener import internal_client, signing_in
from tests.proxy.test_internal import TOKEN

BOB = "bob@example.edu"


async def test_a_sign_in_as_another_account_is_never_relayed(make_proxy, fake_upstream) -> None:
    fake_upstream.email_header = "X-Other-Email"  # OpenWebUI set to read another header
    proxy = await make_proxy()
    with capture_logs() as logs:
        response = await proxy.post(
            "/api/v1/auths/signin", headers={**ALICE_COOKIE, "X-Other-Email": BOB}, json={}
        )
    body = await response.text()
    assert response.status == 502, body
    assert "signin_identity_mismatch" in body
    assert f"tok.{BOB}" not in body
    assert "token" not in response.cookies
    assert "Set-Cookie" not in response.headers
    (event,) = [e for e in logs if e["event"] == "signin_identity_mismatch"]
    assert "WEBUI_AUTH_TRUSTED_EMAIL_HEADER" in event["why"]
    assert f"tok.{BOB}" not in repr(logs)


async def test_the_verified_person_s_sign_in_is_relayed_whole(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy()
    response = await proxy.post(
        "/api/v1/auths/signin",
        headers={**ALICE_COOKIE, "Accept-Encoding": "gzip, br"},
        json={},
    )
    assert response.status == 200
    assert (await response.json())["email"] == "alice@example.edu"
    assert response.cookies["token"].value == "tok.alice@example.edu"
    # Its answer is read by the proxy: asked for uncompressed, whatever the browser accepts.
    assert fake_upstream.last().values("Accept-Encoding") == ["identity"]


def _openwebui_answering(path: str, answer: web.Response) -> web.Application:
    """An OpenWebUI 0.12.4 (for the release check) answering ``POST path`` with ``answer``."""

    async def config(_request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.4", "features": {}})

    async def post(_request: web.Request) -> web.Response:
        return answer

    app = web.Application()
    app.router.add_get("/api/config", config)
    app.router.add_post(path, post)
    return app


def _session(email: str, *, cookie: bool = True, body: bool = True) -> web.Response:
    response = (
        web.json_response({"email": email, "role": "user", "token": f"tok.{email}"})
        if body
        else web.Response(text="ok")
    )
    if cookie:
        response.set_cookie("token", f"tok.{email}", httponly=True)
    return response


@pytest.mark.parametrize(
    ("path", "answer", "relayed"),
    [
        # The second factor's last step starts the session: judged like the sign-in.
        ("/api/v1/auths/mfa/verify", lambda: _session(BOB), False),
        ("/api/v1/auths/mfa/verify", lambda: _session("alice@example.edu"), True),
        # A session given by its cookie alone is judged too (no email: not the person's).
        ("/api/v1/auths/signin", lambda: _session(BOB, body=False), False),
        # Answers that start no session pass: a pending account, a second-factor challenge.
        ("/api/v1/auths/signin", lambda: web.json_response({"next_step": "pending"}), True),
        (
            "/api/v1/auths/signin",
            lambda: web.json_response({"next_step": "verify", "challenge_token": "u1.x"}),
            True,
        ),
    ],
)
async def test_every_answer_that_starts_a_session_is_judged(
    aiohttp_server, make_proxy, path: str, answer: Any, relayed: bool
) -> None:
    server = await aiohttp_server(_openwebui_answering(path, answer()))
    proxy = await make_proxy(upstream=str(server.make_url("/")))
    response = await proxy.post(path, headers=ALICE_COOKIE, json={})
    body = await response.text()
    if relayed:
        assert response.status == 200, body
    else:
        assert response.status == 502, body
        assert "signin_identity_mismatch" in body
        assert "Set-Cookie" not in response.headers
        assert f"tok.{BOB}" not in body


async def test_a_sign_in_answer_naming_no_account_is_not_relayed(
    aiohttp_client, aiohttp_server, tmp_path: Path
) -> None:
    """The internal listener's act-as sign-in, answered with another account, none, or no
    JSON: each a 502, never relayed to the service."""
    answers = [
        {"email": BOB, "role": "user", "token": "tok.bob"},
        {"role": "user", "token": "tok.nobody"},
        {"email": ["student@school.edu"], "role": "user", "token": "tok.list"},
    ]
    for answer in answers:

        async def signin(_request: web.Request, answer: dict[str, Any] = answer) -> web.Response:
            return web.json_response(answer)

        async with internal_client(
            aiohttp_client, aiohttp_server, tmp_path, signing_in(signin)
        ) as client:
            response = await _act_as_signin(client)
            body = await response.text()
            assert response.status == 502, (answer, body)
            assert str(answer["token"]) not in body


async def test_the_act_as_person_s_sign_in_is_relayed(
    aiohttp_client, aiohttp_server, tmp_path: Path
) -> None:
    async def signin(request: web.Request) -> web.Response:
        email = request.headers["X-User-Email"]
        return web.json_response({"email": email.upper(), "role": "user", "token": "tok.s"})

    async with internal_client(aiohttp_client, aiohttp_server, tmp_path, signing_in(signin)) as c:
        response = await _act_as_signin(c)
        assert response.status == 200  # compared as OpenWebUI stores emails: lower-cased
        assert (await response.json())["token"] == "tok.s"


async def _act_as_signin(client: Any) -> Any:
    """The provisioner's sign-in as ``student@school.edu`` through the internal listener."""
    return await client.post(
        "/api/v1/auths/signin",
        headers={
            "Proxy-Authorization": f"Bearer {TOKEN}",
            "X-User-Email": "student@school.edu",
            "Content-Type": "application/json",
        },
        json={"email": "", "password": ""},
    )
