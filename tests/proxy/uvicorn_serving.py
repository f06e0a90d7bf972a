"""An ASGI app under the real uvicorn (httptools, as OpenWebUI runs), on a free loopback
port, for tests that need OpenWebUI's own HTTP server in front of a stand-in app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` until the block ends; the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # it could not start: say why
            await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
