"""An upstream body that breaks off after the status went out must reach the client as a
broken connection it can notice. A FIN is no such signal for a body without a length of its
own: to an HTTP/1.0 client (no chunked framing) a response read to a clean close is a
complete one, so a truncated SSE stream or download looked whole. The relay resets the
connection (RST) instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.settings import Settings

CONFIG = b'{"version": "0.12.4", "features": {}}'
COOKIE = b"Cookie: _oauth2_proxy=alice-session\r\n"

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """An upstream that answers the proxy's release read, then runs ``answer`` for the rest."""
    servers: list[asyncio.Server] = []

    async def make(answer: Answer) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if head.startswith((b"GET /api/config ", b"GET /health ")):
                        writer.write(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(CONFIG), CONFIG)
                        )
                        await writer.drain()
                        continue
                    await answer(reader, writer)
                    return
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield make
    for server in servers:
        server.close()


def breaks_off(head: bytes, body: bytes) -> Answer:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body)
        await writer.drain()
        await asyncio.sleep(0.1)
        # Gone (a FIN) before the body's end: the proxy sees a body broken off.

    return answer


async def _read_to_end(port: int, request: bytes) -> tuple[bytes, bool]:
    """What the client reads, and whether its connection was reset (not closed cleanly)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            data += chunk
    except ConnectionResetError:
        return data, True
    finally:
        writer.close()
    return data, False


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize(
    ("head", "body"),
    [
        (CHUNKED + b"Content-Type: text/event-stream\r\n\r\n", b"9\r\ndata: 1\n\n\r\n"),
        (CHUNKED + b"Content-Type: text/plain\r\n\r\n", b"3\r\nabc\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"a" * 70000),
    ],
)
async def test_a_body_broken_off_mid_way_resets_the_client_connection(
    aiohttp_client, raw_upstream, settings_for, version, head, body
) -> None:
    from proxy.app import create_app

    url = await raw_upstream(breaks_off(head, body))
    settings: Settings = settings_for(upstream=url)
    client = await aiohttp_client(create_app(settings))
    assert client.port is not None
    request = b"GET /x HTTP/" + version + b"\r\nHost: p\r\n" + COOKIE + b"\r\n"
    data, reset = await _read_to_end(client.port, request)
    assert data.startswith(b"HTTP/" + version + b" 200 ")
    assert reset, f"the client saw a clean end after {len(data)} bytes: {data[-40:]!r}"


def streams_then_waits(first: bytes) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 30)  # silent until the proxy's drain cuts it

    return answer


async def test_a_stream_cut_at_the_end_of_the_shutdown_grace_resets_the_client(
    raw_upstream, settings_for
) -> None:
    """SIGTERM with an event stream in flight: at the grace's end the cut is a reset, so an
    HTTP/1.0 client (whose stream ends with the connection) does not take it as complete."""
    import gc
    import os
    import signal

    from proxy import server
    from tests.proxy.test_internal_process import free_port

    url = await raw_upstream(
        streams_then_waits(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
        )
    )
    port = free_port()
    settings: Settings = settings_for(
        upstream=url,
        listen=f"127.0.0.1:{port}",
        admin_listen=f"127.0.0.1:{free_port()}",
        shutdown_grace_s=0.5,
    )
    thresholds = gc.get_threshold()
    serving = asyncio.create_task(server.serve(settings))
    try:
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the proxy never listened")
        writer.write(b"GET /events HTTP/1.0\r\nHost: p\r\n" + COOKIE + b"\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), 10)
        os.kill(os.getpid(), signal.SIGTERM)
        reset = False
        try:
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
        except ConnectionResetError:
            reset = True
        finally:
            writer.close()
        assert reset, "the stream cut at shutdown ended as if complete"
    finally:
        if not serving.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 15)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def answers(response: bytes) -> Answer:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()

    return answer


@pytest.mark.parametrize(
    "header",
    [
        # aiohttp's serialiser drops bytes that are not UTF-8: a local redirect became one to
        # another host, a cookie gained an attribute.
        b"Location: /\xff/evil.example/",
        b"Set-Cookie: a=1\xff; Dom\xffain=evil.example",
        b'Content-Disposition: attachment; filename="caf\xe9.txt"',
    ],
)
@pytest.mark.parametrize("size", [0, 70_000])  # answered whole, or streamed
async def test_a_response_header_that_is_not_utf8_is_refused_not_relayed_changed(
    aiohttp_client, raw_upstream, settings_for, header, size
) -> None:
    from proxy.app import create_app

    url = await raw_upstream(
        answers(
            b"HTTP/1.1 200 OK\r\n%s\r\nContent-Length: %d\r\n\r\n%s" % (header, size, b"a" * size)
        )
    )
    client = await aiohttp_client(create_app(settings_for(upstream=url)))
    assert client.port is not None
    request = b"GET /x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + COOKIE + b"\r\n"
    data, _ = await _read_to_end(client.port, request)
    assert data.startswith(b"HTTP/1.1 502 "), data[:300]
    assert b"evil.example" not in data
    assert b"caf" not in data


async def test_a_response_header_in_utf8_is_relayed_as_received(
    aiohttp_client, raw_upstream, settings_for
) -> None:
    from proxy.app import create_app

    url = await raw_upstream(
        answers(b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok")
    )
    client = await aiohttp_client(create_app(settings_for(upstream=url)))
    assert client.port is not None
    request = b"GET /x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n" + COOKIE + b"\r\n"
    data, _ = await _read_to_end(client.port, request)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nX-Name: caf\xc3\xa9\r\n" in data
