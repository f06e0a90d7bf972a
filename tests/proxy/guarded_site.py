"""A bare app served by ``GuardedRunner`` (``proxy/connections.py``): the listeners'
connection handling, with no proxy behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from proxy.connections import GuardedRunner


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@asynccontextmanager
async def guarded_site(app: web.Application, **runner: Any) -> AsyncIterator[int]:
    """``app`` on a loopback port of its own (the port), ``runner`` the runner's options."""
    guarded = GuardedRunner(app, **runner)
    await guarded.setup()
    site = web.TCPSite(guarded, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await guarded.cleanup()
