"""The streaming upstream for cases 3-5: SSE with timestamps, WebSocket echo, upload sink.

``python -m bench.upstream PORT``. Timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
one clock for every process on the machine), so a client in another process can subtract.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import WSMsgType, web

from bench.configs import CONFIG_BODY


async def sse(request: web.Request) -> web.StreamResponse:
    """``GET /sse?n=N&interval_ms=M``: N events ``data: <monotonic ns>``, M ms apart."""
    count = int(request.query.get("n", "100"))
    interval = float(request.query.get("interval_ms", "5")) / 1000
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for _ in range(count):
        await response.write(f"data: {time.monotonic_ns()}\n\n".encode())
        await asyncio.sleep(interval)
    await response.write_eof()
    return response


async def ws(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: echo every text and binary message."""
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock


async def upload(request: web.Request) -> web.Response:
    """``POST /upload``: read the body chunk by chunk, keep nothing, answer the byte count."""
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"bytes": total})


async def small(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "user": request.headers.get("X-User-Email")})


async def config(request: web.Request) -> web.Response:
    """OpenWebUI's release, which owui-proxy checks before it relays anything."""
    return web.json_response(json.loads(CONFIG_BODY))


def app() -> web.Application:
    application = web.Application(client_max_size=1024**4)
    application.router.add_get("/sse", sse)
    application.router.add_get("/ws", ws)
    application.router.add_post("/upload", upload)
    application.router.add_get("/health", small)
    application.router.add_get("/api/config", config)
    return application


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
