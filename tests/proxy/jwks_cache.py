"""A started ``JwksCache`` against a test JWKS endpoint, and endpoints answering a fixed body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from proxy.auth.jwks import JwksCache


def answering(body: bytes | Any) -> web.Application:
    """A JWKS endpoint (``/jwks``) answering ``body``: bytes as they are, else as JSON."""

    async def handler(_: web.Request) -> web.Response:
        if isinstance(body, bytes):
            return web.Response(body=body, content_type="application/json")
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/jwks", handler)
    return app


@asynccontextmanager
async def started_cache(url: str, **overrides: Any) -> AsyncIterator[JwksCache]:
    """A cache of ``url``, its first fetch done (``start``), closed on the way out. Defaults:
    RS256 only, 5 s timeout, hourly refresh, refetch on an unknown kid at most every 10 s."""
    options: dict[str, Any] = {
        "algorithms": ("RS256",),
        "timeout_s": 5,
        "refresh_s": 3600,
        "min_refetch_s": 10,
        **overrides,
    }
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(url, session, **options)
        try:
            await cache.start()
            yield cache
        finally:
            await cache.close()
