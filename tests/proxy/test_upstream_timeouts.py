"""A connect timeout is a 504 on every path, as the upstream-failure table says.

The upstream here is real: a listening socket whose accept queue is full, so the kernel
drops every new connection attempt and the proxy's connect times out (what a saturated
OpenWebUI looks like). Each path that talks to OpenWebUI meets it: the release read before
the first relayed request, the plain-HTTP relay, a WebSocket upgrade, the Socket.IO token
check, and the internal listener's own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.eio_sessions import SessionSeals
from proxy.internal import create_internal_app
from proxy.settings import Settings
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_internal import TOKEN, make_settings, write_tokens

CONNECT_TIMEOUT_S = 0.5


@dataclass
class Saturated:
    """An OpenWebUI at ``url`` that answered (its release was read), then stopped accepting."""

    url: str
    port: int
    _listener: socket.socket | None = None
    _queued: tuple[socket.socket, ...] = ()

    def stop_accepting(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(0)  # never accepted: the queue fills and new SYNs are dropped
        queued = []
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", self.port))
            queued.append(client)
        self._listener, self._queued = listener, tuple(queued)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", self.port))
        finally:
            probe.close()

    def close(self) -> None:
        for sock in (*self._queued, *([self._listener] if self._listener else [])):
            sock.close()


def settings(upstream: str, auth_url: str, **extra: Any) -> Settings:
    return Settings(
        upstream=upstream,
        auth="forward",
        forward_auth_url=auth_url,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        response_timeout_s=CONNECT_TIMEOUT_S,
        **extra,
    )


async def test_the_release_read_is_a_504_not_unreachable(
    aiohttp_client: Any, auth_server: TestServer
) -> None:
    """OpenWebUI saturated from the start: the release is read before the first relayed
    request, and that read's connect timeout was answered 502 "upstream unreachable
    (TimeoutError)"."""
    owui = Saturated("", _free_port())
    owui.stop_accepting()
    try:
        proxy = await aiohttp_client(
            create_app(
                settings(f"http://127.0.0.1:{owui.port}", str(auth_server.make_url("/oauth2/auth")))
            )
        )
        started = time.monotonic()
        response = await proxy.get("/x", headers=ALICE_COOKIE)
        assert response.status == 504
        assert (await response.json())["error"] == "upstream did not answer in time"
        assert time.monotonic() - started < 5
    finally:
        owui.close()


@pytest.fixture
async def answered_then_saturated(
    aiohttp_server: Any, auth_server: TestServer, aiohttp_client: Any
) -> AsyncIterator[tuple[Any, Saturated]]:
    """The public listener in front of an OpenWebUI whose release it read, now saturated."""
    fake = FakeUpstream()
    server: TestServer = await aiohttp_server(fake.app())
    owui = Saturated(str(server.make_url("/")), server.port)
    proxy = await aiohttp_client(
        create_app(settings(owui.url, str(auth_server.make_url("/oauth2/auth"))))
    )
    await server.close()
    owui.stop_accepting()
    yield proxy, owui
    owui.close()


async def test_the_plain_http_relay_is_a_504(answered_then_saturated: Any) -> None:
    proxy, _ = answered_then_saturated
    response = await proxy.get("/x", headers=ALICE_COOKIE)
    assert response.status == 504
    assert (await response.json())["error"] == "connecting to the upstream timed out"


async def test_a_websocket_upgrade_is_a_504(answered_then_saturated: Any) -> None:
    proxy, _ = answered_then_saturated
    response = await proxy.get(
        "/ws",
        headers={
            **ALICE_COOKIE,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status == 504


async def test_the_socketio_token_check_is_a_504(answered_then_saturated: Any) -> None:
    """The guard cannot ask OpenWebUI whose the token is: it neither passes the message nor
    calls the upstream's silence a forged token (403)."""
    proxy, _ = answered_then_saturated
    sid = SessionSeals().seal("abc", "alice@example.edu")  # a session Alice opened
    response = await proxy.post(
        f"/ws/socket.io/?EIO=4&transport=polling&sid={sid}",
        data=b'40{"token":"someones.jwt.token"}',
        headers=ALICE_COOKIE,
    )
    assert response.status == 504
    assert (await response.json())["error"] == "upstream did not answer in time"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        pytest.param(
            "POST", "/api/v1/auths/signin", {"Content-Type": "application/json"}, id="sign-in"
        ),
        pytest.param("GET", "/api/v1/chats/list", {"Authorization": "Bearer t"}, id="relayed"),
    ],
)
async def test_the_internal_listeners_calls_are_504(
    aiohttp_server: Any,
    aiohttp_client: Any,
    tmp_path: Path,
    method: str,
    target: str,
    headers: dict[str, str],
) -> None:
    server: TestServer = await aiohttp_server(FakeUpstream().app())
    owui = Saturated(str(server.make_url("/")), server.port)
    await server.close()
    owui.stop_accepting()
    write_tokens(tmp_path / "tokens", TOKEN)
    internal_settings = make_settings(
        tmp_path, owui.url, connect_timeout_s=CONNECT_TIMEOUT_S, response_timeout_s=0.5
    )
    upstream = Upstream.open(internal_settings)
    try:
        client = await aiohttp_client(create_internal_app(internal_settings, upstream))
        response = await client.request(
            method,
            target,
            data=b'{"email":"","password":""}' if method == "POST" else None,
            headers={
                "Proxy-Authorization": f"Bearer {TOKEN}",
                "X-User-Email": "student@example.edu",
                **headers,
            },
        )
        assert response.status == 504
    finally:
        await upstream.close()
        owui.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_websocket_frame_whose_token_cannot_be_checked_closes_the_socket(
    aiohttp_server: Any, aiohttp_client: Any, auth_server: TestServer
) -> None:
    """OpenWebUI does not answer whose the token is in time: the frame is not passed, and
    the socket is closed as going away (1001: the client reconnects), not as a policy
    violation (1008: a forged token)."""
    got: list[str] = []

    async def socket_io(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            got.append(message.data)
        return ws

    async def whose(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)  # longer than connect + response timeout
        return web.json_response({"email": "alice@example.edu"})

    async def config(_request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.4"})

    app = web.Application()
    app.router.add_get("/ws/socket.io/", socket_io)
    app.router.add_get("/api/v1/auths/", whose)
    app.router.add_get("/api/config", config)
    owui: TestServer = await aiohttp_server(app)
    proxy = await aiohttp_client(
        create_app(settings(str(owui.make_url("/")), str(auth_server.make_url("/oauth2/auth"))))
    )
    async with proxy.ws_connect(
        "/ws/socket.io/?EIO=4&transport=websocket", headers=ALICE_COOKIE
    ) as ws:
        await ws.send_str('40{"token":"someones.jwt.token"}')
        message = await ws.receive(timeout=10)
    assert message.type == WSMsgType.CLOSE
    assert message.data == 1001
    assert got == []
