"""A JWKS endpoint answering junk is a failed fetch, reported and retried, never a crash.

Python's JSON parser raises ``RecursionError`` (not ``ValueError``) on a deeply nested
document: before the fix it escaped the fetch, so the proxy did not start (the first fetch
runs in ``start``) and, later, an unknown ``kid`` that triggered a refetch got a 500.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from proxy.auth.jwks import JwksCache

NESTED = b"[" * 100_000 + b"]" * 100_000
NESTED_IN_KEYS = b'{"keys": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(NESTED, id="nested-array"),
        pytest.param(NESTED_IN_KEYS, id="nested-inside-keys"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="nested-object"),
    ],
)
async def test_a_deeply_nested_jwks_is_a_failed_fetch(aiohttp_server, body: bytes) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(
            str(server.make_url("/jwks")),
            session,
            algorithms=("RS256",),
            timeout_s=5,
            refresh_s=3600,
            min_refetch_s=0,
        )
        await cache.start()  # raised RecursionError before the fix
        try:
            assert "not JSON" in (cache.problem() or "")
            assert (cache.fetches, cache.fetch_failures, cache.key_count) == (1, 1, 0)
            # An unknown kid refetches: the same junk is again a failed fetch, not a raise.
            assert await cache.key_for("any") is None
            assert (cache.fetches, cache.fetch_failures) == (2, 2)
        finally:
            await cache.close()
