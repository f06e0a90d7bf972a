"""The release read takes OpenWebUI's ``/api/config`` whole, however it arrives: one
``content.read(n)`` returns what is buffered, so a config that came in two TCP segments (any
config larger than one segment, across a real network) was read half, taken as no JSON,
and the proxy answered 503 to every request (each read split again)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from proxy.release_watch import ReleaseWatch
from proxy.upstream import Upstream
from tests.proxy.rawhttp import raw_server

CONFIG = json.dumps({"version": "0.12.4", "features": {}, "padding": "x" * 4000}).encode()


@asynccontextmanager
async def serving_config(body: bytes, *, split: bool = False) -> AsyncIterator[str]:
    """A raw-socket OpenWebUI answering ``body`` as its config (in two segments, 0.1 s
    apart, if ``split``): its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            half = len(body) // 2 if split else len(body)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:half])
            )
            await writer.drain()
            if split:
                await asyncio.sleep(0.1)  # the rest in a later segment
                writer.write(body[half:])
                await writer.drain()
        finally:
            writer.close()

    async with raw_server(handle) as url:
        yield url


@asynccontextmanager
async def started_watch(settings_for: Any, url: str) -> AsyncIterator[ReleaseWatch]:
    """The release watch of an upstream at ``url``, started (its first read done)."""
    upstream = Upstream.open(settings_for(upstream=url))
    watch = ReleaseWatch(upstream)
    try:
        await watch.start()
        yield watch
    finally:
        await watch.close()
        await upstream.close()


@pytest.fixture
async def split_config() -> AsyncIterator[str]:
    async with serving_config(CONFIG, split=True) as url:
        yield url


async def test_a_config_in_two_segments_is_read_whole(settings_for, split_config) -> None:
    async with started_watch(settings_for, split_config) as watch:
        assert watch.problem is None
        await watch.permit()


async def test_a_config_past_the_limit_is_not_read_whole(settings_for, monkeypatch) -> None:
    from proxy import release_watch

    monkeypatch.setattr(release_watch, "_MAX_CONFIG_BYTES", 100)
    async with (
        serving_config(CONFIG) as url,
        started_watch(settings_for, url) as watch,
    ):
        assert watch.problem is not None  # no JSON read from a cut-off config: not relayed


async def test_a_config_nested_past_the_parser_is_unreadable_not_a_crash(settings_for) -> None:
    """JSON nested deeper than Python's parser goes raises RecursionError, not ValueError: the
    release is then unknown (nothing relayed), never an exception out of the read."""
    nested = b"[" * 200_000 + b"]" * 200_000
    async with (
        serving_config(nested) as url,
        started_watch(settings_for, url) as watch,
    ):
        assert watch.problem is not None
        assert "without a JSON object" in watch.problem
