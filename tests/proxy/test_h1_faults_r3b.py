"""Upstream answers the lean client must refuse, not relay: a status outside 100-599 (an
invalid status line to the client otherwise), a ``101`` to a request that asked for no
upgrade (llhttp raises ``HttpParserUpgrade``, which is no ``HttpParserError``: it escaped
``data_received`` as an asyncio "Fatal error" traceback)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy import h1
from tests.proxy.test_h1 import Conn, get, pool_for
from tests.proxy.test_h1 import scripted as scripted  # the fixture


def answer_once(response: bytes):
    async def script(conn: Conn) -> None:
        head = await conn.head()
        await conn.body(head)
        await conn.send(response)
        await asyncio.sleep(0.2)

    return script


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
@pytest.mark.parametrize("size", [2, 70_000])
async def test_a_status_outside_100_to_599_is_a_protocol_error(scripted, status, size) -> None:
    upstream = await scripted(
        answer_once(b"HTTP/1.1 %s X\r\nContent-Length: %d\r\n\r\n%s" % (status, size, b"a" * size))
    )
    pool = pool_for(upstream.url)
    try:
        with pytest.raises(h1.ProtocolError, match="status"):
            await get(pool)
        assert not pool.idle
    finally:
        await pool.close()


@pytest.mark.parametrize("status", [b"100", b"199", b"200", b"599"])
async def test_statuses_at_the_edges_of_the_range_still_pass(scripted, status) -> None:
    informational = status.startswith(b"1")
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    first = b"HTTP/1.1 %s X\r\n\r\n" % status if informational else b""
    if not informational:
        final = b"HTTP/1.1 %s X\r\nContent-Length: 2\r\n\r\nok" % status
    upstream = await scripted(answer_once(first + final))
    pool = pool_for(upstream.url)
    try:
        code, body = await get(pool)
        assert (code, body) == ((200 if informational else int(status)), b"ok")
    finally:
        await pool.close()


async def test_a_101_to_a_plain_request_is_a_protocol_error_without_a_traceback(
    scripted, caplog
) -> None:
    upstream = await scripted(
        answer_once(b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
    )
    pool = pool_for(upstream.url)
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        with pytest.raises(h1.ProtocolError):
            await get(pool)
        await asyncio.sleep(0.05)
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
        assert not pool.idle
        assert not pool.busy
    finally:
        await pool.close()
