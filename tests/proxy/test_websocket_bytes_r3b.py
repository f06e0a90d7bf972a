"""A WebSocket upgrade goes upstream with exactly the header bytes the proxy checked.

The HTTP relay writes header values back as the bytes that came in (``proxy/h1.py``); the
WebSocket relay hands them to aiohttp's client, which silently drops bytes that are not
UTF-8 (aiohttp's server decoded them as lone surrogates). ``Cookie: tok\\x85en=sk-...``
holds no ``token`` cookie as the proxy (and Starlette) read it, and reached OpenWebUI as
``Cookie: token=sk-...``: someone else's key, never checked. An upgrade whose headers
cannot be relayed as they came is refused instead (400).
"""

from __future__ import annotations

import asyncio

from starlette.requests import cookie_parser

from tests.proxy.jwt_signed import SignedIn, key, signed_in, stack  # noqa: F401 (fixtures)

UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Origin", "https://chat.example.edu"),
]


async def _upgrade(ada: SignedIn, *headers: tuple[str, str]) -> bytes:
    """Ada's WebSocket upgrade with ``headers`` added, sent as Latin-1 bytes: the status line."""
    host, port = ada.host, ada.port
    reader, writer = await asyncio.open_connection(host, port)
    lines = ["GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in ada.headers(*UPGRADE, *headers)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return status_line


async def test_a_cookie_that_aiohttp_would_rewrite_is_refused(
    signed_in: SignedIn,  # noqa: F811
    fake_upstream,
) -> None:
    status = await _upgrade(signed_in, ("Cookie", "a=1; tok\x85en=sk-123"))
    handshakes = [r for r in fake_upstream.seen if r.raw_path.startswith("/ws/")]
    for seen in handshakes:  # what OpenWebUI would read, had it been relayed
        for value in seen.values("Cookie"):
            assert "token" not in cookie_parser(value)
    assert status.startswith(b"HTTP/1.1 400 ")
    assert handshakes == []


async def test_an_upgrade_with_utf8_headers_is_relayed(
    signed_in: SignedIn,  # noqa: F811
    fake_upstream,
) -> None:
    status = await _upgrade(signed_in, ("X-Note", "Ängström".encode().decode("latin-1")))
    assert status.startswith(b"HTTP/1.1 101 ")
    (seen,) = [r for r in fake_upstream.seen if r.raw_path.startswith("/ws/")]
    assert seen.values("X-Note") == ["Ängström".encode().decode("latin-1")]
