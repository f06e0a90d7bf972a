"""The lean upstream client (``proxy/h1.py``) against scripted raw-socket upstreams.

A real server would not misbehave on cue, so each upstream here is an asyncio server that
reads request heads (and bodies) off the socket and answers with exact bytes: framing the
client must refuse, connections closed at awkward moments, bodies it must stream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict

from proxy import h1
from proxy.errors import BadRequest, BodyTooLarge

Script = Callable[["Conn"], Awaitable[None]]


@dataclass
class Conn:
    """One accepted connection, as the script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    heads: list[bytes] = field(default_factory=list)

    async def head(self) -> bytes:
        data = await self.reader.readuntil(b"\r\n\r\n")
        self.heads.append(data)
        return data

    async def body(self, head: bytes) -> bytes:
        """The request body, framed as the head says (Content-Length or chunked)."""
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            out = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    return out
                out += data[:-2]
        for line in lowered.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return await self.reader.readexactly(int(line.split(b":")[1]))
        return b""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class Scripted:
    """A raw upstream: every connection runs ``script``; connections are counted."""

    script: Script
    conns: list[Conn] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        self.conns.append(conn)
        try:
            await self.script(conn)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def make(script: Script) -> Scripted:
        upstream = Scripted(script)
        upstream.server = await asyncio.start_server(upstream._accept, "127.0.0.1", 0)
        servers.append(upstream.server)
        return upstream

    yield make
    for server in servers:
        server.close()


def pool_for(url: str, **timeouts: float) -> h1.Pool:
    return h1.Pool(
        url,
        connect_timeout_s=timeouts.get("connect", 2),
        response_timeout_s=timeouts.get("response", 2),
        idle_timeout_s=timeouts.get("idle", 2),
    )


def hdrs(**extra: str) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict({"Host": "owui.test"})
    out.update({k.replace("_", "-"): v for k, v in extra.items()})
    return out


async def get(pool: h1.Pool, target: str = "/x", method: str = "GET") -> tuple[int, bytes]:
    response = await pool.request(method, target, hdrs(), None)
    try:
        return response.status, await response.read()
    finally:
        response.release()


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def serve_forever(response: bytes) -> Script:
    async def script(conn: Conn) -> None:
        while True:
            head = await conn.head()
            await conn.body(head)
            await conn.send(response)

    return script


# --------------------------------------------------------------------------- the head


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Test", "a\r\nX-User-Email: evil@example.com"),
        ("X-Test", "a\nb"),
        ("X-Test", "a\rb"),
        ("X-Test", "a\x00b"),
        ("X-Te\r\nst", "a"),
    ],
)
def test_a_header_that_would_split_the_head_is_refused(name: str, value: str) -> None:
    headers = hdrs()
    headers[name] = value
    with pytest.raises(BadRequest):
        h1.encode_head("GET", "/", headers)


@pytest.mark.parametrize("target", ["/a b", "/a\tb", "/a\r\nHost: x", "/a\x00", "/a\x7f"])
def test_a_target_with_whitespace_or_controls_is_refused(target: str) -> None:
    with pytest.raises(BadRequest):
        h1.encode_head("GET", target, hdrs())


def test_the_target_check_refuses_exactly_spaces_and_ascii_controls() -> None:
    # Other non-printable characters (Latin-1 controls, separators, surrogate-escaped
    # bytes) are not the check's to refuse.
    for code in [*range(0x300), 0x2028, 0x3000, 0xDC80, 0xDCFF]:
        refused = code <= 0x20 or code == 0x7F
        assert _target_refusal(f"/a{chr(code)}b") == refused, hex(code)


def _target_refusal(target: str) -> bool:
    try:
        h1.encode_head("GET", target, hdrs())
    except BadRequest as exc:
        return "whitespace or control" in str(exc)
    return False


def test_the_head_is_exactly_the_headers_given_in_order() -> None:
    headers = CIMultiDict([("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("X-Name", "Ada Löwe")])
    head = h1.encode_head("POST", "/p?q=%2F", headers)
    assert head == (
        b"POST /p?q=%2F HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-Name: Ada L\xc3\xb6we\r\n\r\n"
    )


# --------------------------------------------------------------------------- keep-alive


async def test_sequential_requests_share_one_connection(scripted) -> None:
    upstream = await scripted(serve_forever(ok()))
    pool = pool_for(upstream.url)
    for _ in range(5):
        assert await get(pool) == (200, b"hello")
    assert len(upstream.conns) == 1
    await pool.close()


async def test_read_now_takes_a_complete_body_and_nothing_of_an_incomplete_one(
    scripted,
) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(ok(b"whole"))
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf-")
        await asyncio.sleep(0.1)
        await conn.send(b"after")
        await conn.head()
        await conn.send(ok(b"again"))
        await asyncio.sleep(5)

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    await asyncio.sleep(0.05)  # the body, if it came apart from the head
    assert response.read_now() == b"whole"
    response.release()
    response = await pool.request("GET", "/", hdrs(), None)
    await asyncio.sleep(0.05)
    assert response.read_now() is None  # half of it is here: nothing is taken
    assert await response.read() == b"half-after"
    response.release()
    assert await get(pool) == (200, b"again")
    assert len(upstream.conns) == 1  # each response ended whole: the connection was reused
    await pool.close()


@pytest.mark.parametrize(
    "response",
    [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_response_that_ends_the_connection_is_not_reused(scripted, response) -> None:
    upstream = await scripted(serve_forever(response))
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"hello")
    assert await get(pool) == (200, b"hello")
    assert len(upstream.conns) == 2
    await pool.close()


async def test_a_body_without_length_ends_with_the_connection(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await asyncio.sleep(0.05)
        await conn.send(b"part two")

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    assert response.content_length is None
    assert await response.read() == b"part one, part two"
    response.release()
    await pool.close()


async def test_a_chunked_body_is_reassembled_and_the_connection_reused(scripted) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    upstream = await scripted(serve_forever(chunked))
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"abcde")
    assert await get(pool) == (200, b"abcde")
    assert len(upstream.conns) == 1
    await pool.close()


@pytest.mark.parametrize(
    ("status_line", "expected_length"),
    [(b"HTTP/1.1 204 No Content", 0), (b"HTTP/1.1 304 Not Modified", None)],
)
async def test_bodiless_statuses_end_at_the_head(scripted, status_line, expected_length) -> None:
    upstream = await scripted(serve_forever(status_line + b"\r\nETag: x\r\n\r\n"))
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    assert response.content_length == expected_length
    assert await response.read() == b""
    response.release()
    assert await get(pool) == (int(status_line.split()[1]), b"")
    assert len(upstream.conns) == 1
    await pool.close()


async def test_head_keeps_content_length_reads_no_body_and_is_not_reused(scripted) -> None:
    async def script(conn: Conn) -> None:
        while True:
            head = await conn.head()
            if head.startswith(b"HEAD"):
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                await conn.send(ok())

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    response = await pool.request("HEAD", "/", hdrs(), None)
    assert (response.status, response.content_length) == (200, 1234)
    assert await response.read() == b""
    response.release()
    assert await get(pool) == (200, b"hello")
    assert len(upstream.conns) == 2  # a HEAD connection is never trusted for the next request
    await pool.close()


async def test_informational_responses_are_skipped(scripted) -> None:
    upstream = await scripted(
        serve_forever(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok()
        )
    )
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    assert response.status == 200
    assert "Link" not in response.headers
    assert await response.read() == b"hello"
    response.release()
    await pool.close()


# --------------------------------------------------------------------------- framing refused


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\nX-Bare-LF: 1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-Bad Name: 1\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["cl-and-te", "two-lengths", "negative-length", "bare-lf", "space-in-name", "garbage"],
)
async def test_ambiguous_or_malformed_framing_is_a_502(scripted, response) -> None:
    upstream = await scripted(serve_forever(response))
    pool = pool_for(upstream.url)
    with pytest.raises(h1.ProtocolError):
        await pool.request("GET", "/", hdrs(), None)
    assert not pool.idle
    await pool.close()


async def test_a_huge_response_head_is_refused(scripted) -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (h1.MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
    upstream = await scripted(serve_forever(big))
    pool = pool_for(upstream.url)
    with pytest.raises(h1.ProtocolError, match="head too large"):
        await pool.request("GET", "/", hdrs(), None)
    await pool.close()


class _Translated(Exception):
    pass


async def test_a_failure_is_raised_as_the_callers_translation_chained_to_it(scripted) -> None:
    upstream = await scripted(serve_forever(b"NOT HTTP AT ALL\r\n\r\n"))
    pool = pool_for(upstream.url)
    seen: list[h1.UpstreamFailure] = []

    def failed(exc: h1.UpstreamFailure) -> BaseException:
        seen.append(exc)
        return _Translated(str(exc))

    with pytest.raises(_Translated) as caught:
        await pool.request("GET", "/", hdrs(), None, failed)
    assert len(seen) == 1
    assert isinstance(seen[0], h1.ProtocolError)
    assert caught.value.__cause__ is seen[0]
    assert not pool.idle
    await pool.close()


async def test_a_request_head_refused_with_a_translation_is_still_a_bad_request() -> None:
    pool = pool_for("http://127.0.0.1:9")
    with pytest.raises(BadRequest):
        await pool.request("GET", "/a b", hdrs(), None, lambda exc: _Translated(str(exc)))
    await pool.close()


async def test_bytes_nobody_asked_for_retire_an_idle_connection(scripted) -> None:
    async def script(conn: Conn) -> None:
        while True:
            await conn.head()
            await conn.send(ok())
            await asyncio.sleep(0.05)
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"hello")
    await asyncio.sleep(0.2)  # the unsolicited answer arrives while the connection idles
    assert await get(pool) == (200, b"hello")  # never "evil"
    assert len(upstream.conns) == 2
    await pool.close()


# --------------------------------------------------------------------------- failures


async def test_a_refused_connection_is_unavailable() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = pool_for(f"http://127.0.0.1:{port}")
    with pytest.raises(h1.ConnectFailed):
        await pool.request("GET", "/", hdrs(), None)
    await pool.close()


async def test_an_upstream_that_closes_without_answering_is_unavailable(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    with pytest.raises(h1.ConnectionBroke):
        await pool.request("GET", "/", hdrs(), None)
    await pool.close()


async def test_a_silent_upstream_is_a_timeout(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await asyncio.sleep(5)

    upstream = await scripted(script)
    pool = pool_for(upstream.url, response=0.2)
    with pytest.raises(h1.HeadTimeout):
        await pool.request("GET", "/", hdrs(), None)
    await pool.close()


async def test_the_response_timeout_counts_from_each_request_on_a_reused_connection(
    scripted,
) -> None:
    """One head timer per connection, left running between requests: it must neither time
    out a later request early (armed for an earlier one) nor miss one (fired while idle)."""
    delays = [0.0, 0.2, 0.0, 0.05, 5.0]

    async def script(conn: Conn) -> None:
        while True:
            await conn.head()
            await asyncio.sleep(delays.pop(0))
            await conn.send(ok())

    upstream = await scripted(script)
    pool = pool_for(upstream.url, response=0.3)
    loop = asyncio.get_running_loop()
    assert await get(pool) == (200, b"hello")  # the timer is armed for 0.3 s from here
    await asyncio.sleep(0.2)
    # Answered 0.4 s after the first request went out, 0.2 s after this one: in time.
    assert await get(pool) == (200, b"hello")
    assert await get(pool) == (200, b"hello")
    await asyncio.sleep(0.5)  # the timer fires while the connection is idle
    assert await get(pool) == (200, b"hello")
    started = loop.time()
    with pytest.raises(h1.HeadTimeout):
        await pool.request("GET", "/", hdrs(), None)
    assert 0.3 - 0.002 <= loop.time() - started < 1.5
    assert len(upstream.conns) == 1
    await pool.close()


async def test_a_stalled_body_is_a_stall_and_a_cut_body_is_not(scripted) -> None:
    async def stall(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(5)

    async def cut(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    for script, stalled in ((stall, True), (cut, False)):
        upstream = await scripted(script)
        pool = pool_for(upstream.url, idle=0.2)
        response = await pool.request("GET", "/", hdrs(), None)
        with pytest.raises(h1.BodyBrokeOff) as caught:
            await response.read()
        assert caught.value.stalled is stalled
        response.release()
        assert not pool.idle
        await pool.close()


async def test_a_pooled_connection_closed_by_the_upstream_is_retried_once(scripted) -> None:
    """The upstream's keep-alive ended just as a request went out: replayable, so resent."""

    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(ok(b"first"))
        await conn.head()  # reads the second request, then closes without a byte

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"first")
    assert await get(pool) == (200, b"first")  # answered by a second connection
    assert len(upstream.conns) == 2
    await pool.close()


async def test_a_streamed_body_is_never_resent(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(ok(b"first"))
        await conn.head()

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"first")

    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    with pytest.raises(h1.ConnectionBroke):
        await pool.request("POST", "/", hdrs(Content_Length="4"), body())
    assert len(upstream.conns) == 1
    await pool.close()


# --------------------------------------------------------------------------- bodies


async def test_streamed_bodies_keep_their_length_or_go_chunked(scripted) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def script(conn: Conn) -> None:
        while True:
            head = await conn.head()
            seen.append((head, await conn.body(head)))
            await conn.send(ok())

    upstream = await scripted(script)
    pool = pool_for(upstream.url)

    async def body() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defg"):
            yield part

    for headers in (hdrs(Content_Length="7"), hdrs()):
        response = await pool.request("PUT", "/", headers, body())
        assert await response.read() == b"hello"
        response.release()
    (with_length, body1), (chunked, body2) = seen
    assert b"Content-Length: 7\r\n" in with_length
    assert b"Transfer-Encoding" not in with_length
    assert b"Transfer-Encoding: chunked\r\n" in chunked
    assert b"Content-Length" not in chunked
    assert body1 == body2 == b"abcdefg"
    assert len(upstream.conns) == 1
    await pool.close()


async def test_a_bodiless_post_says_so_and_a_get_does_not(scripted) -> None:
    upstream = await scripted(serve_forever(ok()))
    pool = pool_for(upstream.url + "/prefix")
    await get(pool, "/a", "POST")
    await get(pool, "/b?c=d", "GET")
    post, get_ = upstream.conns[0].heads
    assert post.startswith(b"POST /prefix/a HTTP/1.1\r\n")
    assert b"Content-Length: 0\r\n" in post
    assert get_.startswith(b"GET /prefix/b?c=d HTTP/1.1\r\n")
    assert b"Content-Length" not in get_
    await pool.close()


async def test_an_early_answer_is_relayed_while_the_body_is_refused(scripted) -> None:
    """An upstream that answers 413 after the head and closes: the client sees the 413."""

    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(
            b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig"
        )

    upstream = await scripted(script)
    pool = pool_for(upstream.url)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0)

    response = await pool.request("POST", "/", hdrs(), endless())
    assert response.status == 413
    assert await response.read() == b"big"
    response.release()
    assert not pool.idle
    await pool.close()


async def test_a_body_over_the_limit_stops_before_the_upstream_answers(scripted) -> None:
    async def script(conn: Conn) -> None:
        head = await conn.head()
        await conn.body(head)
        await conn.send(ok())

    upstream = await scripted(script)
    pool = pool_for(upstream.url)

    async def too_big() -> AsyncIterator[bytes]:
        yield b"abc"
        raise BodyTooLarge("request body exceeds 2 bytes")

    with pytest.raises(BodyTooLarge):
        await pool.request("POST", "/", hdrs(), too_big())
    assert not pool.idle
    await pool.close()


async def test_a_slow_reader_pauses_the_upstream_socket(scripted) -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + payload)

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    await asyncio.sleep(0.3)  # the upstream writes as fast as it may; nobody reads
    exchange = response._exchange
    assert exchange.conn.flow.read_paused
    assert exchange.queued < h1.HIGH_WATER + 512 * 1024  # bounded: one socket read past the mark
    received = b"".join([chunk async for chunk in response.iter_chunks()])
    assert received == payload
    response.release()
    assert pool.idle  # read whole: reusable, and reading again
    await pool.close()


# --------------------------------------------------------------------------- review findings


@pytest.mark.parametrize(
    ("method", "name"),
    [("GET / HTTP/1.1\r\nX", "X-A"), ("GET", "X-Foo: X-User-Email"), ("G T", "X-A"), ("", "X")],
)
def test_a_method_or_name_that_is_not_a_token_is_refused(method: str, name: str) -> None:
    with pytest.raises(BadRequest):
        h1.encode_head(method, "/", CIMultiDict({name: "v"}))


def test_an_unencodable_value_is_a_bad_request_not_a_crash() -> None:
    with pytest.raises(BadRequest):
        h1.encode_head("GET", "/", CIMultiDict({"X-A": "\ud800"}))


@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",  # a second response
        b"INJECTED",  # plain bytes past the declared length
    ],
    ids=["second-response", "trailing-bytes"],
)
async def test_bytes_past_the_response_never_join_it_nor_the_next(scripted, extra) -> None:
    upstream = await scripted(serve_forever(ok(b"hi") + extra))
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"hi")
    assert not pool.idle  # the connection is dropped, never reused
    assert await get(pool) == (200, b"hi")
    assert len(upstream.conns) == 2
    await pool.close()


async def test_a_body_sent_after_a_head_answer_is_never_relayed(scripted) -> None:
    upstream = await scripted(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nPWNED!!"))
    pool = pool_for(upstream.url)
    response = await pool.request("HEAD", "/", hdrs(), None)
    assert response.content_length == 7
    assert await response.read() == b""
    response.release()
    await pool.close()


async def test_an_informational_response_with_a_body_is_a_502(scripted) -> None:
    upstream = await scripted(
        serve_forever(b"HTTP/1.1 100 Continue\r\nContent-Length: 4\r\n\r\nEVIL" + ok())
    )
    pool = pool_for(upstream.url)
    with pytest.raises(h1.ProtocolError):
        await pool.request("GET", "/", hdrs(), None)
    await pool.close()


async def test_a_reset_ends_a_body_without_length_as_broken_not_complete(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial")
        await asyncio.sleep(0.05)
        sock = conn.writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()  # RST, not FIN

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    response = await pool.request("GET", "/", hdrs(), None)
    with pytest.raises(h1.BodyBrokeOff):
        await response.read()
    response.release()
    await pool.close()


async def test_an_upstream_that_stops_reading_the_upload_times_out(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await asyncio.sleep(10)  # reads nothing more, answers nothing

    upstream = await scripted(script)
    pool = pool_for(upstream.url, idle=0.3, response=0.3)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536

    with pytest.raises(h1.UploadStalled):
        await pool.request("POST", "/", hdrs(), endless())
    assert not pool.busy
    await pool.close()


async def test_releasing_an_early_answer_stops_the_body_writer(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        await asyncio.sleep(10)  # keeps the connection open, reads nothing

    upstream = await scripted(script)
    pool = pool_for(upstream.url, idle=5)
    blocked = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 65536
        blocked.set()
        await asyncio.sleep(10)  # a client still uploading
        yield b"never"

    response = await pool.request("POST", "/", hdrs(), slow())
    assert response.status == 403
    writer = response._exchange.writer
    assert writer is not None
    assert await response.read() == b"no"
    await blocked.wait()
    response.release()
    await asyncio.sleep(0)
    assert writer.done()
    assert not pool.busy
    assert not pool.idle
    await pool.close()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_resent(scripted, method) -> None:
    received: list[bytes] = []

    async def script(conn: Conn) -> None:
        head = await conn.head()
        await conn.body(head)
        await conn.send(ok(b"first"))
        head = await conn.head()
        received.append(await conn.body(head))  # reads it whole, then dies without answering

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"first")
    with pytest.raises(h1.ConnectionBroke):
        await pool.request(method, "/", hdrs(), b"charge the card")
    assert received == [b"charge the card"]  # delivered once, never twice
    assert len(upstream.conns) == 1
    await pool.close()


async def test_idle_connections_expire_before_the_upstream_would_close_them(
    scripted, monkeypatch
) -> None:
    monkeypatch.setattr(h1, "IDLE_EXPIRY_S", 0.2)
    upstream = await scripted(serve_forever(ok()))
    pool = pool_for(upstream.url)
    assert await get(pool) == (200, b"hello")
    assert len(pool.idle) == 1
    await asyncio.sleep(0.5)  # the sweeper closes it; no timer per connection
    assert not pool.idle
    assert await get(pool) == (200, b"hello")
    assert len(upstream.conns) == 2
    await pool.close()


async def test_an_https_upstream_is_verified_and_relayed() -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ok(b"over tls"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    pool = h1.Pool(
        url, connect_timeout_s=2, response_timeout_s=2, idle_timeout_s=2, ssl_context=trusting
    )
    assert await get(pool) == (200, b"over tls")
    await pool.close()
    # Without the CA the certificate is refused: no silent downgrade to unverified TLS.
    untrusting = h1.Pool(url, connect_timeout_s=2, response_timeout_s=2, idle_timeout_s=2)
    with pytest.raises(h1.ConnectFailed):
        await get(untrusting)
    await untrusting.close()
    server.close()


async def test_garbage_during_a_streamed_upload_is_a_502_not_a_cancellation(scripted) -> None:
    async def script(conn: Conn) -> None:
        await conn.head()
        await conn.send(b"NOT HTTP\r\n\r\n")
        await asyncio.sleep(5)

    upstream = await scripted(script)
    pool = pool_for(upstream.url)

    async def slow() -> AsyncIterator[bytes]:
        yield b"x"
        await asyncio.sleep(5)
        yield b"y"

    with pytest.raises(h1.ProtocolError):
        await pool.request("POST", "/", hdrs(), slow())
    await pool.close()
