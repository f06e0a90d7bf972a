"""WebSocket message size cap: an oversize message closes both legs with 1009."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import create_app
from proxy.settings import Settings
from tests.proxy.conftest import ALICE_COOKIE

CAP = 64 * 1024


async def test_oversize_client_message_closes_both_sides_with_1009(make_proxy, fake_upstream):
    proxy = await make_proxy(websocket_max_message_bytes=CAP)
    async with proxy.ws_connect("/ws", headers=ALICE_COOKIE) as ws:
        await ws.send_bytes(b"\x01" * CAP)  # at the cap: relayed
        assert len((await ws.receive(timeout=10)).data) == CAP
        await ws.send_bytes(b"\x02" * (CAP + 1))
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1009
    for _ in range(100):
        if fake_upstream.ws_closed_with is not None:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.ws_closed_with == 1009
    assert [len(m) for m in fake_upstream.ws_received] == [CAP]  # the big one never went up


async def test_oversize_upstream_message_closes_both_sides_with_1009(
    aiohttp_server, aiohttp_client, auth_server
):
    """An upstream that answers any text with a message one byte over the cap."""
    closed_with: list[int | None] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_bytes(b"\x03" * (CAP + 1))
        closed_with.append(ws.close_code)
        return ws

    async def config(_request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.4", "features": {}})  # the release check

    app = web.Application()
    app.router.add_get("/ws", handler)
    app.router.add_get("/api/config", config)
    upstream: TestServer = await aiohttp_server(app)
    settings = Settings(
        upstream=str(upstream.make_url("/")),
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
        websocket_max_message_bytes=CAP,
    )
    proxy: TestClient = await aiohttp_client(create_app(settings))
    async with proxy.ws_connect("/ws", headers=ALICE_COOKIE) as ws:
        await ws.send_str("go")
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1009
    for _ in range(100):
        if closed_with:
            break
        await asyncio.sleep(0.05)
    assert closed_with == [1009]
