"""What a worker makes at start stays out of later garbage collections (issue 23's p99:
every full collection walked ~60,000 start-up objects, a pause of tens of milliseconds)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy import server
from proxy.app import create_app
from proxy.settings import Settings
from tests.fakes import FakeAuthService, FakeUpstream
from tests.proxy.conftest import ALICE, ALICE_COOKIE
from tests.proxy.test_internal_process import free_port
from tests.proxy.test_process import _abort_mid_download, _abort_mid_upload


async def test_a_serving_worker_keeps_its_start_up_objects_out_of_collections(
    settings_for,
) -> None:
    port = free_port()
    settings = settings_for(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{free_port()}")
    thresholds = gc.get_threshold()
    serving = asyncio.create_task(server.serve(settings))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/x", headers=ALICE_COOKIE
                    ) as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the proxy never answered")
        # A full collection walks the objects of generations 0-2 (gc.get_objects()); the
        # frozen ones it leaves alone. The apps were made at start: frozen.
        assert gc.get_freeze_count() > 0
        assert not any(isinstance(o, web.Application) for o in gc.get_objects())
        assert gc.get_threshold()[0] == server.YOUNG_THRESHOLD
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve() drains on it, as in production
        await serving
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def _send_and_leave(host: str, port: int, raw: bytes, wait_s: float = 0.2) -> None:
    """Send ``raw``, wait a moment, then reset the connection (no FIN: an abort)."""
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    await asyncio.sleep(wait_s)
    writer.transport.abort()


async def _ask(host: str, port: int, raw: bytes) -> None:
    """Send ``raw`` and read the answer whole (the connection closes after it, or is reset:
    a body broken off mid-way is, proxy/relay.py)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 15)
    writer.close()


_COOKIE = b"Cookie: _oauth2_proxy=alice-session\r\n"
# Each fault the relay meets, as a client makes it happen.
FAULTS = {
    "client aborts mid-upload": _abort_mid_upload,
    "client aborts mid-download": _abort_mid_download,
    "client leaves before the answer": lambda host, port: _send_and_leave(
        host, port, b"GET /slow?delay=0.5 HTTP/1.1\r\nHost: p\r\n" + _COOKIE + b"\r\n"
    ),
    "upstream breaks off mid-body": lambda host, port: _ask(
        host, port, b"GET /broken HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + _COOKIE + b"\r\n"
    ),
    "upstream answers too late": lambda host, port: _ask(
        host,
        port,
        b"GET /slow?delay=2 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + _COOKIE + b"\r\n",
    ),
    "upstream stalls mid-body": lambda host, port: _ask(
        host, port, b"GET /sse HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + _COOKIE + b"\r\n"
    ),
    "body too large": lambda host, port: _ask(
        host,
        port,
        b"POST /upload HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
        + _COOKIE
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"10000\r\n"
        + b"u" * 65536
        + b"\r\n" * 3,
    ),
}


def _ours(garbage: list[object]) -> list[str]:
    """What of ``garbage`` the proxy made: its own objects, the server's requests and their
    body streams, and buffers (the test's client side is asyncio's streams)."""
    kinds = []
    for thing in garbage:
        kind = type(thing)
        module = kind.__module__
        if (
            module.startswith("proxy.")
            or module in ("aiohttp.web_request", "aiohttp.web_protocol", "aiohttp.streams")
            or kind in (bytes, bytearray, memoryview)
        ):
            kinds.append(f"{module}.{kind.__qualname__}")
    return sorted(kinds)


async def _ws_abort(host: str, port: int) -> None:
    """A WebSocket opened, one frame relayed, then the client's connection reset."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: p\r\n" + _COOKIE + b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(b"\x81\x85\x00\x00\x00\x00hello")  # a masked text frame
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


_CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens there
_GET = b"GET /x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + _COOKIE + b"\r\n"
FAULTS["client aborts a WebSocket"] = _ws_abort
FAULTS["client aborts an upload refused as too large"] = _abort_mid_upload
FAULTS["auth service unreachable"] = lambda host, port: _ask(host, port, _GET)
FAULTS["upstream unreachable"] = lambda host, port: _ask(host, port, _GET)
FAULTS["upstream unreachable for a WebSocket"] = lambda host, port: _ask(
    host,
    port,
    b"GET /ws HTTP/1.1\r\nHost: p\r\n" + _COOKIE + b"Upgrade: websocket\r\n"
    b"Connection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
)
# What a fault needs besides the fakes.
_SETTINGS: dict[str, dict[str, Any]] = {
    "body too large": {"max_body_bytes": 1000},
    "client aborts an upload refused as too large": {"max_body_bytes": 1000},
    "auth service unreachable": {"forward_auth_url": _CLOSED + "/oauth2/auth"},
    "upstream unreachable": {"upstream": _CLOSED},
    "upstream unreachable for a WebSocket": {"upstream": _CLOSED},
}


async def _garbage_after(fault: str) -> list[str]:
    """The proxy in front of the fakes, on this (uvloop's) loop; the fault three times;
    what of the proxy's the collector then finds unreachable."""
    upstream = TestServer(FakeUpstream().app())
    auth = TestServer(FakeAuthService(users={"alice-session": ALICE}).app())
    await upstream.start_server()
    await auth.start_server()
    # A second to answer in and between body bytes; what the fault needs besides.
    values: dict[str, Any] = {
        "upstream": str(upstream.make_url("/")),
        "auth": "forward",
        "forward_auth_url": str(auth.make_url("/oauth2/auth")),
        "response_timeout_s": 1,
        "idle_timeout_s": 1,
    }
    settings = Settings(**{**values, **_SETTINGS.get(fault, {})})
    # Served as serve() serves it: its runner, its connection handler, its settings.
    runner = await server._start(create_app(settings), "127.0.0.1:0", settings, False)
    try:
        port = runner.addresses[0][1]
        cause = FAULTS[fault]
        await cause("127.0.0.1", port)  # warm: pools, first-use caches
        await asyncio.sleep(2.5)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(3):
                await cause("127.0.0.1", port)
            await asyncio.sleep(2.5)  # every request of it done, its connections closed
            gc.collect()
            return _ours(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        await runner.cleanup()
        await auth.close()
        await upstream.close()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_leaves_no_cyclic_garbage(fault: str) -> None:
    """A request that ends in a fault frees what it held by reference counting, as one that
    succeeds does: nothing waits for the garbage collector (whose youngest generation runs
    rarely, ``server.YOUNG_THRESHOLD``), an aborted transfer's buffers least of all.

    On uvloop, as the proxy runs: asyncio's own loop makes every transport a cycle (it
    keeps bound methods of itself), which would hide the proxy's behind it."""
    assert uvloop.run(_garbage_after(fault)) == []
