"""The internal listener, round 3b: account endpoints stay closed whatever the rules say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.internal import create_internal_app
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.test_internal import ACT, AUTH, TOKEN, load_settings_from, write_tokens

# Each passes the settings' check (it names no account path literally), yet its {param}
# matches one: /api/v1/auths/api_key hands out the user's API key, /api/v1/auths/update/...
# changes who they are, /oauth/... signs them in elsewhere.
SNEAKY_RULES = (
    "GET /api/v1/{section}/api_key",
    "POST /api/v1/{section}/api_key",
    "POST /api/v1/{section}/update/password",
    "POST /api/{version}/auths/add",
    "GET /{prefix}/{provider}/login",
)
ACCOUNT_TARGETS = (
    ("GET", "/api/v1/auths/api_key"),
    ("POST", "/api/v1/auths/api_key"),
    ("POST", "/api/v1/auths/update/password"),
    ("POST", "/api/v1/auths/add"),
    ("GET", "/oauth/google/login"),
)


@pytest.fixture
async def sneaky(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], FakeUpstream]]:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = load_settings_from(
        tmp_path,
        upstream=str(server.make_url("/")),
        internal_allow=",".join(("POST /api/v1/auths/signin", *SNEAKY_RULES)),
    )
    upstream = Upstream.open(settings)
    app: web.Application = create_internal_app(settings, upstream)
    client = await aiohttp_client(app)
    yield client, fake
    await upstream.close()


@pytest.mark.parametrize(("method", "target"), ACCOUNT_TARGETS)
async def test_a_param_rule_never_opens_an_account_endpoint(
    sneaky: tuple[TestClient[Any, Any], FakeUpstream], method: str, target: str
) -> None:
    client, fake = sneaky
    response = await client.request(method, target, headers={**AUTH, **ACT}, json={})
    assert response.status == 403
    assert "account" in (await response.json())["error"]
    assert fake.seen == []


async def test_a_sign_in_openwebui_has_not_answered_in_time_still_holds_its_email(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The proxy gives up waiting (504), but OpenWebUI goes on creating the account: the
    next sign-in of that email must not reach it before the first one has finished there."""
    import asyncio

    from tests.proxy.internal_listener import internal_listener, signing_in
    from tests.proxy.rawhttp import raw_request

    in_flight = 0
    most = 0

    async def signin(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.35)  # longer than the proxy waits (0.2 s)
        finally:
            in_flight -= 1
        return web.json_response({"email": "a@school.edu", "role": "user", "token": "t"})

    owui = signing_in(signin, handler_args={"handler_cancellation": False})
    headers = [
        ("Proxy-Authorization", f"Bearer {TOKEN}"),
        ("X-User-Email", "a@school.edu"),
        ("Content-Type", "application/json"),
    ]
    async with internal_listener(aiohttp_server, tmp_path, owui, response_timeout_s=0.2) as port:
        statuses = []
        for _ in range(2):  # one after the other, each given up on by the proxy
            answer = await raw_request(
                "127.0.0.1",
                port,
                "/api/v1/auths/signin",
                headers,
                method="POST",
                body=b'{"email":"","password":""}',
            )
            statuses.append(answer.status)
        await asyncio.sleep(1.5)
    assert statuses[0] == 504
    assert most == 1


async def _second_sign_in_waits(failure: Exception) -> float:
    """Seconds the next sign-in of an email waited after one that failed with ``failure``."""
    import asyncio
    import time
    from types import SimpleNamespace

    from proxy.internal import SigninGuard

    guard = SigninGuard(SimpleNamespace(response_timeout_s=30), unanswered_hold_s=0.5)  # type: ignore[arg-type]

    async def failing() -> Any:
        raise failure

    async def answering() -> Any:
        raise LookupError("answered")  # stands in for an answer: the lock was taken

    with pytest.raises(type(failure)):
        await guard.sign_in("a@school.edu", failing)
    started = time.monotonic()
    with pytest.raises(LookupError):
        await guard.sign_in("a@school.edu", answering)
    waited = time.monotonic() - started
    await asyncio.wait_for(guard.close(), 5)
    return waited


def _upstream_error(cause: Exception) -> Exception:
    from proxy.errors import UpstreamTimeout

    error = UpstreamTimeout("upstream did not answer")
    error.__cause__ = cause
    return error


async def test_a_sign_in_that_got_no_answer_holds_its_email_a_while() -> None:
    from proxy import h1

    assert await _second_sign_in_waits(_upstream_error(h1.HeadTimeout("late"))) >= 0.4


async def test_a_sign_in_that_reached_no_openwebui_holds_nothing() -> None:
    from proxy import h1

    assert await _second_sign_in_waits(_upstream_error(h1.ConnectFailed("refused"))) < 0.3


async def test_a_stored_chat_nested_too_deeply_is_a_clear_502_not_a_500(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """The chat an update is checked against is the person's own content, as OpenWebUI
    answers it: nested deeper than the JSON decoder goes, it is no chat the check can
    read (502, nothing posted), never an unhandled RecursionError."""
    from tests.proxy.test_chat_update import HEADERS, UUID, stored_thread, the_provisioners_update

    deep = b'{"chat": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    posted: list[bytes] = []

    async def read(_request: web.Request) -> web.Response:
        return web.Response(body=deep, content_type="application/json")

    async def update(request: web.Request) -> web.Response:
        posted.append(await request.read())
        return web.json_response({})

    app = web.Application()
    app.router.add_get(f"/api/v1/chats/{UUID}", read)
    app.router.add_post(f"/api/v1/chats/{UUID}", update)
    from tests.proxy.internal_listener import internal_client

    async with internal_client(aiohttp_client, aiohttp_server, tmp_path, app) as client:
        body = the_provisioners_update(stored_thread())
        response = await client.post(f"/api/v1/chats/{UUID}", data=body, headers=HEADERS)
        assert response.status == 502
        assert "JSON" in (await response.json())["error"]
        assert posted == []


@pytest.mark.parametrize(
    ("config", "answer"),
    [
        pytest.param(b'{"onboarding": false}', b'{"x": ' + b"[" * 100_000, id="deep-answer"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, b"", id="deep-config"),
        pytest.param(b"<html>OpenWebUI</html>", b"", id="config-not-json"),
        pytest.param(b'["onboarding", false]', b"", id="config-not-an-object"),
    ],
)
async def test_openwebui_answers_the_guard_cannot_read_are_a_clear_502(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, config: bytes, answer: bytes
) -> None:
    """The sign-in guard reads /api/config (onboarding?) and the sign-in answer (an admin?):
    what it cannot read as a JSON object fails closed with 502, never a 500, and a config it
    cannot read lets no sign-in through (OpenWebUI's first account becomes admin)."""
    from tests.proxy.internal_listener import internal_client, signing_in

    signins = 0

    async def signin(_request: web.Request) -> web.Response:
        nonlocal signins
        signins += 1
        return web.Response(body=answer, content_type="application/json")

    async def read_config(_request: web.Request) -> web.Response:
        return web.Response(body=config, content_type="application/json")

    owui = signing_in(signin, read_config)
    headers = {**AUTH, **ACT, "Content-Type": "application/json"}
    async with internal_client(aiohttp_client, aiohttp_server, tmp_path, owui) as client:
        response = await client.post("/api/v1/auths/signin", json={}, headers=headers)
        assert response.status == 502
        assert signins == (1 if answer else 0)
