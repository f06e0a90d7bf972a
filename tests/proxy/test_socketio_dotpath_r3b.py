"""A path python-engineio serves is a Socket.IO path, whatever its dot segments fold to.

Starlette routes ``/ws/...`` to OpenWebUI's Socket.IO app and python-engineio serves every
path that *starts with* ``/ws/socket.io/``, unresolved: ``/ws/socket.io/../../api/x`` is a
long-polling endpoint there. The target's fold (``Target.route``) resolves the dot segments
to ``/api/x``: decided on it, such a request skipped the session seal and the token guard.

The scope now asks ``is_socketio_path`` of ``Target.path``, the server's reading, not of
the fold, and ``api_key_allowed`` takes the scope's answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE
from tests.proxy.rawhttp import raw_request

OPEN = "/ws/socket.io/?EIO=4&transport=polling"
DOTTED = "/ws/socket.io/../../api/x?EIO=4&transport=polling"


async def test_a_dotted_socketio_path_is_no_way_around_the_seal(proxy, fake_upstream: Any) -> None:
    response = await proxy.get(OPEN, headers=BOB_COOKIE)
    sid = json.loads((await response.text())[1:])["sid"]
    bare = sid.rpartition(".")[0]
    server = proxy.server
    cookie = [("Cookie", ALICE_COOKIE["Cookie"])]
    answer = await raw_request(server.host, server.port, f"{DOTTED}&sid={bare}", cookie)
    assert answer.status == 403
    assert not any("sid=" + bare in s.raw_path for s in fake_upstream.seen)


async def test_a_dotted_socketio_path_is_no_way_around_the_token_guard(
    proxy, fake_upstream: Any
) -> None:
    stolen = b'40{"token":"tok.alice@example.edu"}'
    server = proxy.server
    cookie = [("Cookie", BOB_COOKIE["Cookie"])]
    answer = await raw_request(server.host, server.port, DOTTED, cookie, method="POST", body=stolen)
    assert answer.status == 403
    assert not any(s.body == stolen for s in fake_upstream.seen)


async def test_an_api_key_reaches_no_socketio_path_through_dot_segments(
    make_proxy, fake_upstream: Any
) -> None:
    """Socket.IO reads tokens from its packets, never the key: the key's owner could carry
    anybody's token in them, unchecked (no identity: no guard, no seal)."""
    proxy = await make_proxy(allow_api_keys=True)
    stolen = b'40{"token":"tok.alice@example.edu"}'
    server = proxy.server
    key = [("Authorization", "Bearer sk-123")]
    answer = await raw_request(server.host, server.port, DOTTED, key, method="POST", body=stolen)
    assert answer.status in (401, 403)
    assert not any(s.body == stolen for s in fake_upstream.seen)


async def test_a_dotted_socketio_path_upgrades_nobody_elses_session(
    proxy, fake_upstream: Any
) -> None:
    response = await proxy.get(OPEN, headers=BOB_COOKIE)
    bare = json.loads((await response.text())[1:])["sid"].rpartition(".")[0]
    server = proxy.server
    target = f"/ws/socket.io/../../api/x?EIO=4&transport=websocket&sid={bare}"
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {server.host}:{server.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Cookie: " + ALICE_COOKIE["Cookie"],
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert not any("sid=" + bare in s.raw_path for s in fake_upstream.seen)
