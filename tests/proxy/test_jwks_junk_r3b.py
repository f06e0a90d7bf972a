"""A JWKS endpoint answering junk is a failed fetch, reported and retried, never a crash.

Python's JSON parser raises ``RecursionError`` (not ``ValueError``) on a deeply nested
document: before the fix it escaped the fetch, so the proxy did not start (the first fetch
runs in ``start``) and, later, an unknown ``kid`` that triggered a refetch got a 500.
"""

from __future__ import annotations

import pytest

from tests.proxy.jwks_cache import answering, started_cache

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
    server = await aiohttp_server(answering(body))
    # start() raised RecursionError before the fix
    async with started_cache(str(server.make_url("/jwks")), min_refetch_s=0) as cache:
        assert "not JSON" in (cache.problem() or "")
        assert (cache.fetches, cache.fetch_failures, cache.key_count) == (1, 1, 0)
        # An unknown kid refetches: the same junk is again a failed fetch, not a raise.
        assert await cache.key_for("any") is None
        assert (cache.fetches, cache.fetch_failures) == (2, 2)
