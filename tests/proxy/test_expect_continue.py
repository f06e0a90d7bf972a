"""``Expect: 100-continue`` is answered only once the caller is authenticated."""

from __future__ import annotations

import asyncio
import json

from tests.proxy.conftest import ALICE_COOKIE


async def _post_expecting(
    proxy, headers: dict[str, str]
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a head with ``Expect: 100-continue`` and no body; return the first answer line."""
    host, port = proxy.server.host, proxy.server.port
    reader, writer = await asyncio.open_connection(host, port)
    head = [
        "POST /echo HTTP/1.1",
        f"Host: {host}:{port}",
        "Expect: 100-continue",
        "Content-Length: 5",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    first = await asyncio.wait_for(reader.readline(), timeout=10)
    return first, reader, writer


async def test_unauthenticated_gets_401_without_100_continue(proxy, fake_upstream) -> None:
    first, reader, writer = await _post_expecting(proxy, {})
    try:
        assert first.startswith(b"HTTP/1.1 401"), first
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert b"100 Continue" not in head
    finally:
        writer.close()
    assert fake_upstream.seen == []


async def test_authenticated_gets_100_then_the_relayed_response(proxy, fake_upstream) -> None:
    first, reader, writer = await _post_expecting(proxy, ALICE_COOKIE)
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(b"hello")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["body"] == "hello"
    assert fake_upstream.last().values("Expect") == []  # hop-by-hop: not passed on


async def test_unknown_expectation_is_417(proxy, fake_upstream) -> None:
    host, port = proxy.server.host, proxy.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nExpect: teapot\r\n\r\n".encode())
    await writer.drain()
    first = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert first.startswith(b"HTTP/1.1 417"), first
    assert fake_upstream.seen == []
