"""A lean keep-alive HTTP/1.1 client for the relay's plain-HTTP requests to OpenWebUI.

Why not aiohttp's client: on a small request it is about a fifth of the proxy's CPU
(request building, its own header handling, timers, a stream reader, the connector), for
features the relay does not want (cookies, redirects, decompression, auto headers). This
client does one thing: send exactly the head the caller built, stream the body both ways
with flow control, and hand back status, headers and body chunks.

- **Parsing** is llhttp's, through httptools (the parser Node and uvicorn use). It refuses
  what enables response smuggling: duplicate or invalid ``Content-Length``, both
  ``Content-Length`` and ``Transfer-Encoding``, bare CR or LF, malformed chunks.
- **Writing**: the head and a body already in memory go out in one ``write``. A streamed
  body keeps the client's ``Content-Length`` when it sent one, else goes chunked. Every
  write waits for the socket to drain (``pause_writing``/``resume_writing``).
- **Reading**: chunks queue until the reader takes them; past ``HIGH_WATER`` bytes the
  socket stops reading (``pause_reading``) until the queue drains below ``LOW_WATER``.
- **Timeouts**: connect, the wait for response headers (counted from the end of the
  request body, so a slow upload is not penalised), and the silence between body chunks.
- **Reuse**: a connection returns to the pool only after a complete response that allows
  keep-alive, with the request body fully sent. Idle connections expire before the
  upstream would close them (uvicorn's default keep-alive is 5 s). A request with a
  replayable body (none, or bytes in memory) that meets a reused connection the upstream
  closed before answering is sent once more on a new connection; nothing else is retried.

Errors leave here as ``proxy.errors`` (``UpstreamUnavailable``, ``UpstreamTimeout``,
``BodyTooLarge``) before the response headers, or ``BodyBrokeOff`` after them.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from proxy.errors import BadRequest, UpstreamTimeout, UpstreamUnavailable

# Queue bounds for a response body the reader has not taken yet.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A response head larger than this is refused (llhttp has no limit of its own).
MAX_HEAD_BYTES = 64 * 1024
# Idle connections are closed after this, before the upstream's own keep-alive (uvicorn: 5 s)
# can close them under a request in flight.
IDLE_EXPIRY_S = 4.0
MAX_IDLE = 256

# CR, LF and NUL end or corrupt a header line; a target must also not contain spaces.
_BAD_IN_HEADER = re.compile(r"[\r\n\x00]")
_BAD_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2: methods, field names

_REPLAYABLE = (type(None), bytes)
_BODY_EXPECTED = frozenset({"POST", "PUT", "PATCH"})
# Resent once on a new connection if a pooled one turns out closed (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class BodyBrokeOff(Exception):
    """The upstream's body stopped early or stalled (``stalled``), after its head arrived."""

    def __init__(self, message: str, *, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the upstream is: host, port, TLS, and the base path prefixed to every target."""

    host: str
    port: int
    tls: bool
    prefix: str
    netloc: str  # the Host header for requests that do not name one

    @classmethod
    def from_url(cls, base: str) -> Origin:
        parts = urlsplit(base)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        netloc = parts.netloc.rpartition("@")[2]
        return cls(host, port, tls, parts.path.rstrip("/"), netloc)


def encode_head(method: str, target: str, headers: CIMultiDict[str]) -> bytes:
    """The request line and header block, refusing anything that could split them."""
    if _BAD_IN_TARGET.search(target):
        raise BadRequest("request target contains whitespace or control characters")
    names = headers.keys()
    # A run of tokens is a token: one match checks every name (none may be empty).
    if not (_TOKEN.fullmatch(method) and _TOKEN.fullmatch("".join(names)) and all(names)):
        raise BadRequest("the method or a header name is not an HTTP token")
    fields = [f"{name}: {value}" for name, value in headers.items()]
    if _BAD_IN_HEADER.search("".join(fields)):  # checked before any line break is added
        raise BadRequest("a header contains CR, LF or NUL")
    text = "\r\n".join((f"{method} {target} HTTP/1.1", *fields, "", ""))
    try:
        # surrogateescape gives bytes aiohttp's server decoded that way back as they were.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise BadRequest("a header is not encodable") from exc


class Response:
    """One upstream response: status and headers read, body still to come.

    Read the body with :meth:`read` or :meth:`iter_chunks`, then :meth:`release` (always,
    also after an error): it returns the connection to the pool or closes it.
    """

    __slots__ = ("_conn", "_released", "content_length", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        content_length: int | None,
        conn: _Connection,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self._conn = conn
        self._released = False

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            chunk = await conn.next_chunk()
            if not chunk:
                return
            yield chunk

    async def read(self) -> bytes:
        conn = self._conn
        first = await conn.next_chunk()
        if not first:
            return first
        chunks = [first]
        while chunk := await conn.next_chunk():
            chunks.append(chunk)
        return first if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.finish()


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response currently arriving on it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0  # loop time it went back to the pool
        # flow control of our writes
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        # the response in flight (set afresh by _expect for each request)
        self.parser: httptools.HttpResponseParser | None = None
        self.head_waiter: asyncio.Future[Response] | None = None
        self.chunk_waiter: asyncio.Future[None] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.read_paused = False
        self.response: Response | None = None
        self._expect(no_body=False)

    def _expect(self, *, no_body: bool) -> None:
        """Forget the previous response: the state of one exchange, from scratch."""
        self.chunks.clear()
        self.queued = 0
        self.error: BaseException | None = None
        self.response = None
        self.complete = False
        self.head_bytes = 0  # bytes received while the head is incomplete
        self.head_size = 0  # the header fields' size, as parsed
        self.got_bytes = False
        self.no_body = no_body  # HEAD: the head is the whole response
        self.until_close = False  # no length, not chunked: the body ends with the connection
        self.sent = False  # request body fully written
        self.keep_alive = False  # the response allows another request on this connection
        self.poisoned = False  # bytes beyond the response: never reuse
        self.writer: asyncio.Task[None] | None = None  # a streamed request body in flight
        self.reason = ""
        self.header_items: list[tuple[str, str]] = []

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted
            return
        self.got_bytes = True
        in_head = self.response is None
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:  # else: the response stands, the extra bytes end the link
                why = "bytes after the message" if self.poisoned else type(exc).__name__
                self._fail(UpstreamUnavailable(f"upstream sent malformed HTTP ({why})"))
            self.close()
            return
        if in_head:
            # Counted while the head is incomplete (httptools holds a partial header in
            # memory): more than the limit without the head ending is refused.
            self.head_bytes += len(data)
            if self.response is None and max(self.head_bytes, self.head_size) > MAX_HEAD_BYTES:
                self._fail(UpstreamUnavailable("upstream response head too large"))
                self.close()

    def eof_received(self) -> bool:
        if self.until_close and self.response is not None and not self.complete:
            self.on_message_complete()  # a clean FIN ends a body without length
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if exc is None and self.until_close and self.response is not None and not self.complete:
            self.on_message_complete()
        elif not self.complete:
            why = type(exc).__name__ if exc is not None else "closed"
            self._fail(ConnectionResetError(f"upstream connection lost ({why})"))
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("upstream connection lost"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second message where one response was asked for: whatever the upstream
            # meant, those bytes belong to no request. Stop parsing; never reuse.
            self.poisoned = True
            raise _Poisoned()

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        self.header_items.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # Informational (100 Continue, 103 Early Hints): the real answer follows.
            self.reason = ""
            self.header_items = []
            return
        if self.head_size > MAX_HEAD_BYTES:
            return  # data_received refuses it once the parser returns
        # Asked now: llhttp forgets the message's flags once it is complete.
        self.keep_alive = self.parser.should_keep_alive()
        headers = CIMultiDict(self.header_items)
        length_text = headers.get("Content-Length")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = int(length_text) if length_text is not None and not chunked else None
        bodiless = self.no_body or status in (204, 304)
        if bodiless:
            length = 0 if status != 304 and not self.no_body else length
        self.until_close = not bodiless and length is None and not chunked
        self.response = Response(status, self.reason.strip(), headers, length, self)
        if self.head_waiter is not None and not self.head_waiter.done():
            self.head_waiter.set_result(self.response)
        if self.no_body:
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self.response is None or self.no_body or self.complete:
            # A body on an informational or HEAD answer, or past the end: refused.
            self.poisoned = True
            raise _Poisoned()
        self.chunks.append(body)
        self.queued += len(body)
        if self.queued > HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.response is None:
            return  # the end of an informational response; keep waiting for the real one
        self.complete = True
        self._wake()

    # --- used by the pool and the response -------------------------------------------------

    def _wake(self) -> None:
        waiter = self.chunk_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        head = self.head_waiter
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()

    async def next_chunk(self) -> bytes:
        """The next body chunk; ``b""`` at the end. Raises :class:`BodyBrokeOff`."""
        while not self.chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise BodyBrokeOff(str(self.error))
            waiter = self.loop.create_future()
            self.chunk_waiter = waiter
            timer = self.loop.call_later(self.pool.idle_timeout_s, _expire, waiter)
            try:
                await waiter
            except TimeoutError as exc:
                self.close()
                raise BodyBrokeOff("upstream body stalled", stalled=True) from exc
            finally:
                timer.cancel()
                self.chunk_waiter = None
        chunk = self.chunks.popleft()
        self.queued -= len(chunk)
        if self.read_paused and self.queued < LOW_WATER and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        return chunk

    async def drain(self) -> None:
        """Wait until the socket takes more; an upstream that stops reading times out."""
        if self.closed:
            raise ConnectionResetError("upstream connection lost")
        if self.write_paused:
            waiter = self.drain_waiter = self.loop.create_future()
            timer = self.loop.call_later(self.pool.idle_timeout_s, _expire, waiter)
            try:
                await waiter
            except TimeoutError as exc:
                raise UpstreamTimeout("upstream stopped reading the request body") from exc
            finally:
                timer.cancel()
                self.drain_waiter = None

    def start(self, no_body: bool) -> asyncio.Future[Response]:
        """Prepare for the next response; the future resolves when its head is in."""
        self._expect(no_body=no_body)
        self.parser = httptools.HttpResponseParser(self)
        self.head_waiter = self.loop.create_future()
        return self.head_waiter

    def finish(self) -> None:
        """The caller is done with the response: reuse the connection if that is safe."""
        reusable = (
            self.complete
            and self.sent
            and not self.closed
            and not self.until_close
            and not self.no_body
            and self.error is None
            and not self.poisoned
            and not self.chunks
            and self.keep_alive
            and (self.writer is None or self.writer.done())
        )
        self.parser = None
        self.response = None
        self.head_waiter = None
        if reusable:
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection now: unsent bytes are discarded, waiters woken, writer stopped.

        ``abort`` rather than ``close``: an upstream that stopped reading would otherwise
        keep the socket (and a waiting writer) alive until it drained.
        """
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True
        head = self.head_waiter
        if head is not None and not head.done():
            head.set_exception(ConnectionResetError("upstream connection closed"))
            head.exception()  # marks it retrieved: there may be nobody waiting any more
        if not self.complete:
            self._fail(ConnectionResetError("upstream connection closed"))
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("upstream connection closed"))
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
        self.pool.forget(self)


def _retrieve(task: asyncio.Task[None]) -> None:
    """A writer that failed after the response head arrived: its error ends the connection
    (``finish`` sees ``sent`` false), and is not worth a "never retrieved" warning."""
    if not task.cancelled():
        task.exception()


class _Poisoned(Exception):
    """Raised inside a parser callback to stop parsing bytes no request asked for."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Pool:
    """Keep-alive connections to one upstream origin; no limit on how many are open."""

    def __init__(
        self,
        base: str,
        *,
        connect_timeout_s: float,
        response_timeout_s: float,
        idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = Origin.from_url(base)
        self.connect_timeout_s = connect_timeout_s
        self.response_timeout_s = response_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.ssl = (ssl_context or ssl.create_default_context()) if self.origin.tls else None
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.sweeper: asyncio.TimerHandle | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> Response:
        """Send one request; return the response once its head is in.

        ``headers`` is sent exactly as given. A streamed body is sent with the
        ``Content-Length`` the headers carry or, without one, chunked.
        """
        if isinstance(body, _REPLAYABLE):
            if body is not None:
                headers["Content-Length"] = str(len(body))
            elif method in _BODY_EXPECTED:
                headers["Content-Length"] = "0"  # some servers answer 411 without it
            else:
                headers.popall("Content-Length", None)
        elif "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
        if "Host" not in headers:
            headers["Host"] = self.origin.netloc
        head = encode_head(method, self.origin.prefix + target, headers)
        retry = isinstance(body, _REPLAYABLE) and method in _IDEMPOTENT
        conn = await self._acquire()
        try:
            return await self._exchange(conn, method, head, headers, body, retry=retry)
        except _Stale:
            # The upstream closed a pooled connection as the request went out: once more,
            # on a new connection (an idle one might be just as stale).
            conn = await self._acquire(fresh=True)
            return await self._exchange(conn, method, head, headers, body, retry=False)

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        retry: bool,
    ) -> Response:
        head_waiter = conn.start(no_body=method == "HEAD")
        assert conn.transport is not None
        try:
            if isinstance(body, _REPLAYABLE):
                conn.transport.write(head + body if body else head)
                if conn.write_paused:  # the response timeout counts from the last byte sent
                    await conn.drain()
                conn.sent = True
            else:
                conn.transport.write(head)
                chunked = "Content-Length" not in headers
                writer = conn.writer = self.loop.create_task(_write_body(conn, body, chunked))
                writer.add_done_callback(_retrieve)
                done, _ = await asyncio.wait(
                    (writer, head_waiter), return_when=asyncio.FIRST_COMPLETED
                )
                # A writer cancelled by close() (the upstream sent garbage, say) is not the
                # error: the head waiter holds the real one, raised by _wait_head below.
                failed = None if writer not in done or writer.cancelled() else writer.exception()
                # A write that failed because the upstream answered and closed is no error.
                if failed is not None and not (
                    isinstance(failed, ConnectionError) and head_waiter.done()
                ):
                    raise failed
            return await self._wait_head(head_waiter)
        except BaseException as exc:
            conn.close()
            if (
                retry
                and conn.reused
                and not conn.got_bytes
                and isinstance(exc, (ConnectionError, UpstreamUnavailable))
            ):
                raise _Stale() from exc
            if isinstance(exc, ConnectionError):
                raise UpstreamUnavailable(f"upstream unreachable ({type(exc).__name__})") from exc
            raise

    async def _wait_head(self, head_waiter: asyncio.Future[Response]) -> Response:
        """The response head. If the upstream answered before reading the whole body (a
        refusal, say), the body keeps going until the response is released; then the
        connection is reused only if it all went."""
        if head_waiter.done():
            return head_waiter.result()
        timer = self.loop.call_later(self.response_timeout_s, _expire_head, head_waiter)
        try:
            return await head_waiter
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream did not answer in time") from exc
        finally:
            timer.cancel()

    async def _acquire(self, *, fresh: bool = False) -> _Connection:
        cutoff = self.loop.time() - IDLE_EXPIRY_S
        while self.idle and not fresh:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if conn.idle_since <= cutoff:
                conn.close()  # the upstream may be closing it right now
                continue
            conn.reused = True
            self.busy.add(conn)
            return conn
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.origin.host,
                    self.origin.port,
                    ssl=self.ssl,
                    server_hostname=self.origin.host if self.ssl else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except OSError as exc:
            raise UpstreamUnavailable(f"upstream unreachable ({type(exc).__name__})") from exc
        self.busy.add(conn)
        return conn

    def put_back(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(IDLE_EXPIRY_S, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the expiry; one timer for the pool, not one each."""
        self.sweeper = None
        cutoff = self.loop.time() - IDLE_EXPIRY_S
        expired = [conn for conn in self.idle if conn.idle_since <= cutoff]
        for conn in expired:
            conn.close()
        if self.idle:
            self.sweeper = self.loop.call_later(IDLE_EXPIRY_S / 2, self._sweep)

    def forget(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for conn in [*self.idle, *self.busy]:
            conn.close()
        self.idle.clear()
        self.busy.clear()


class _Stale(Exception):
    """A pooled connection turned out closed before any answer: try a new one."""


def _expire_head(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _write_body(conn: _Connection, body: AsyncIterable[bytes], chunked: bool) -> None:
    transport = conn.transport
    assert transport is not None
    async for chunk in body:
        if not chunk:
            continue
        if conn.closed:
            raise ConnectionResetError("upstream connection lost")
        if chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        await conn.drain()
    if chunked:
        transport.write(b"0\r\n\r\n")
    conn.sent = True
