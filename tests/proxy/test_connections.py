"""Client connection timeouts (``proxy/connections.py``): head, keep-alive idle, body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proxy.eio_sessions import SessionSeals
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.guarded_site import guarded_site, ok

HEAD_S = 0.5
IDLE_S = 1.5


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", ok)
    async with guarded_site(
        app, header_timeout_s=HEAD_S, keepalive_timeout=IDLE_S, handler_cancellation=True
    ) as port:
        yield port


async def _closed_after(
    reader: asyncio.StreamReader, limit: float, started: float | None = None
) -> float:
    """Seconds from ``started`` (now by default) until the server closes (EOF, unanswered);
    fails past ``limit``. A timer the server started before this client could look at the
    clock needs ``started`` taken before the step that starts it: on a loaded machine the
    client may resume a good while after the server's timer began."""
    started = time.monotonic() if started is None else started
    assert await asyncio.wait_for(reader.read(), timeout=limit) == b""
    return time.monotonic() - started


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(port) -> None:
    started = time.monotonic()  # the server's head timer starts as it accepts
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    elapsed = await _closed_after(reader, 5, started)
    writer.close()
    assert HEAD_S - 0.1 < elapsed < HEAD_S + 0.5


async def test_a_trickled_head_is_closed_at_the_head_timeout_unanswered(port) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    for byte in GET[:-2]:  # a byte every 0.1 s: activity never resets the head timeout
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)
        if reader.at_eof() or writer.is_closing():
            break
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    assert time.monotonic() - started < HEAD_S + 0.6


async def test_a_head_in_time_is_served_and_the_idle_timeout_follows(port) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET[:10])
    await asyncio.sleep(HEAD_S / 2)
    started = time.monotonic()  # the server's idle timer starts once it has answered
    writer.write(GET[10:])
    await writer.drain()
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    # Kept alive: silence past the head timeout is fine, up to the idle timeout.
    elapsed = await _closed_after(reader, 5, started)
    writer.close()
    assert IDLE_S - 0.2 < elapsed < IDLE_S + 0.6


async def test_the_head_timeout_runs_again_from_the_next_requests_first_byte(port) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(HEAD_S * 1.5)  # idle, within the keep-alive timeout
    writer.write(GET[:10])  # then a head that never ends
    await writer.drain()
    elapsed = await _closed_after(reader, 5)
    writer.close()
    assert HEAD_S - 0.1 < elapsed < HEAD_S + 0.5


async def test_a_head_that_starts_before_the_last_timer_is_due_still_gets_the_whole_timeout(
    port,
) -> None:
    """The next request's first byte comes while the timer armed for the connection's open is
    still pending: that timer must not cut the new head short (it waits for the new
    deadline), and the new head still times out once its own deadline passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(HEAD_S / 2)  # the open's timer is due in about HEAD_S / 2
    started = time.monotonic()
    writer.write(GET[:10])  # a head that never ends
    await writer.drain()
    elapsed = await _closed_after(reader, 5, started)
    writer.close()
    assert HEAD_S - 0.1 < elapsed < HEAD_S + 0.5


async def test_a_stalled_request_body_is_408(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nCookie: _oauth2_proxy=alice-session\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"x" * 100
    )
    await writer.drain()
    started = time.monotonic()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 408"), status
    assert time.monotonic() - started < 2


async def test_a_stalled_socketio_polling_body_is_408(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(proxy.server.host, proxy.server.port)
    cookie = ALICE_COOKIE["Cookie"]
    sid = SessionSeals().seal("x", "alice@example.edu").encode()  # Alice's own session
    writer.write(
        b"POST /ws/socket.io/?EIO=4&transport=polling&sid="
        + sid
        + b" HTTP/1.1\r\nHost: x\r\n"
        + f"Cookie: {cookie}\r\n".encode()
        + b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n40"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 408"), status
