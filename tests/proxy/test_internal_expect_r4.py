"""The internal listener, round 4: no ``100 Continue`` before the service token is checked.

The catch-all route carried ``no_early_continue``, but a target no route can match
(``OPTIONS *``, ``CONNECT host:443``, an absolute-form or empty path) fell to aiohttp's
default expect handler, which answered ``100 Continue`` to anyone before the middleware
(and its token check) ran: an unauthenticated caller was invited to send its body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.internal import create_internal_app
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.test_internal import TOKEN, load_settings_from, write_tokens


@pytest.fixture
async def internal(
    aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[TestServer, FakeUpstream]]:
    fake = FakeUpstream()
    upstream_server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = load_settings_from(tmp_path, upstream=str(upstream_server.make_url("/")))
    upstream = Upstream.open(settings)
    app: web.Application = create_internal_app(settings, upstream)
    server = await aiohttp_server(app)
    yield server, fake
    await upstream.close()


async def first_answer(server: TestServer, method: str, target: str, extra: list[str]) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {server.host}:{server.port}",
        "Expect: 100-continue",
        "Content-Length: 5",
        "Connection: close",
        *extra,
    ]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()


TARGETS = [
    pytest.param("OPTIONS", "*", id="options-asterisk"),
    pytest.param("CONNECT", "example.com:443", id="connect-authority"),
    pytest.param("POST", "http://example.com/api/v1/auths/signin", id="absolute-form"),
    pytest.param("POST", "/api/v1/auths/signin", id="origin-form"),
    pytest.param("POST", "//x", id="double-slash"),
]


@pytest.mark.parametrize(("method", "target"), TARGETS)
async def test_no_100_continue_before_the_token_check(
    internal: tuple[TestServer, FakeUpstream], method: str, target: str
) -> None:
    server, fake = internal
    first = await first_answer(server, method, target, [])
    assert not first.startswith(b"HTTP/1.1 100"), first
    assert first.startswith(b"HTTP/1.1 4"), first
    assert fake.seen == []


@pytest.mark.parametrize(("method", "target"), TARGETS)
async def test_a_wrong_token_gets_no_100_continue_either(
    internal: tuple[TestServer, FakeUpstream], method: str, target: str
) -> None:
    server, fake = internal
    first = await first_answer(
        server, method, target, ["Proxy-Authorization: Bearer not-the-token-0123456789abcdef"]
    )
    assert not first.startswith(b"HTTP/1.1 100"), first
    assert fake.seen == []
