"""The readiness check read OpenWebUI's whole ``GET /health`` answer into memory
(``response.read()``), however long: an OpenWebUI (or whatever answers at its address)
streaming a body without end had worker 0 buffer all it could receive for
``connect_timeout_s``, every few seconds (gigabytes over a local link), and the check then
failed on the timeout. The status is all the check needs: at most a few KiB of the body
are read, the connection is dropped after a longer one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from proxy.readiness import upstream_health
from proxy.upstream import Upstream
from tests.proxy.rawhttp import raw_server

CHUNK = b"x" * (1 << 20)
OFFERED = 512  # MiB the fake offers


@asynccontextmanager
async def endless_health(sent: list[int]) -> AsyncIterator[str]:
    """A raw-socket upstream answering 200 with a chunked body of OFFERED MiB, as fast as
    the reader takes it; ``sent`` gets the bytes it managed to hand the kernel."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(OFFERED):
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                total += len(CHUNK)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            sent.append(total)
            writer.close()

    async with raw_server(handle) as url:
        yield url


async def test_health_reads_a_bounded_part_of_the_body(settings_for) -> None:
    sent: list[int] = []
    async with endless_health(sent) as url:
        upstream = Upstream.open(settings_for(upstream=url, connect_timeout_s=2))
        try:
            started = time.monotonic()
            problem = await upstream_health(upstream)
            took = time.monotonic() - started
        finally:
            await upstream.close()
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0.02)
    assert problem is None  # it answered 200: healthy, whatever follows
    assert took < 1.0
    # What the kernel's buffers hold at most, nowhere near the offered body.
    assert sent
    assert sent[0] < 64 << 20, sent
