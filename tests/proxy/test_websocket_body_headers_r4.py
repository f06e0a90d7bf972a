"""A WebSocket upgrade goes upstream without the client's body-framing headers.

An upgrade has no body; a client's ``Content-Length`` on it was relayed as it came (it is no
hop-by-hop header). uvicorn with httptools, as OpenWebUI runs, then waits for that body
before it upgrades: the handshake stalled until the proxy's response timeout, a 504, for a
request that is fine without the header. ``Transfer-Encoding`` is dropped as hop-by-hop
already; the relay now drops ``Content-Length`` too.

Checked against uvicorn itself: a plain ASGI WebSocket app served by uvicorn (httptools),
behind the proxy.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.uvicorn_serving import uvicorn_serving

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def _echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":  # the proxy's release check (GET /api/config), and the like
        body = json.dumps({"version": "0.12.4", "features": {}}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
async def uvicorn_upstream() -> Any:
    async with uvicorn_serving(_echo_app) as port:
        yield f"http://127.0.0.1:{port}/"


async def _upgrade_status(host: str, port: int, extra: list[str]) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13",
            f"Cookie: {ALICE_COOKIE['Cookie']}",
            *extra,
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=8)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "extra",
    [[], ["Content-Length: 5"], ["Content-Length: 0"], ["Transfer-Encoding: chunked"]],
)
async def test_an_upgrade_with_body_headers_is_not_stalled_upstream(
    make_proxy, uvicorn_upstream: str, extra: list[str]
) -> None:
    proxy = await make_proxy(upstream=uvicorn_upstream, response_timeout_s=20)
    server = proxy.server
    status = await _upgrade_status(server.host, server.port, extra)
    assert status.startswith(b"HTTP/1.1 101"), status


async def test_uvicorn_does_stall_on_an_upgrade_with_a_content_length(
    uvicorn_upstream: str,
) -> None:
    """The control: straight at uvicorn, the same upgrade with a Content-Length stalls."""
    port = int(uvicorn_upstream.rsplit(":", 1)[1].strip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
                "Content-Length: 5\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), timeout=2)
    finally:
        writer.close()
