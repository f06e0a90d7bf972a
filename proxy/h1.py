"""A lean keep-alive HTTP/1.1 client for the relay's plain-HTTP requests to OpenWebUI.

Why not aiohttp's client: on a small request it is about a fifth of the proxy's CPU
(request building, its own header handling, timers, a stream reader, the connector), for
features the relay does not want (cookies, redirects, decompression, auto headers). This
client does one thing: send exactly the head the caller built, stream the body both ways
with flow control, and hand back status, headers and body chunks.

The shape (after httpcore's and uvicorn's HTTP/1.1 code): a :class:`_Connection` holds what
outlives one request (the transport, whether it was reused, its :class:`_FlowControl`); each
request gets a fresh :class:`_Exchange` whose :class:`Phase` says how far its response got.
Whether the connection may carry the next request is read off the finished exchange
(:attr:`_Exchange.reusable`) and one connection fact (still open).

- **Parsing** is llhttp's, through httptools (the parser Node and uvicorn use). It refuses
  what enables response smuggling: duplicate or invalid ``Content-Length``, both
  ``Content-Length`` and ``Transfer-Encoding``, bare CR or LF, malformed chunks.
- **Writing**: the head and a body already in memory go out in one ``write``. A streamed
  body keeps the client's ``Content-Length`` when it sent one (one decimal number, written
  out again), else goes chunked. A streamed body is written as exactly the length its head
  declares: one that would go past it, or ends short, is refused (``BadRequest``) and its
  connection closed, and no byte past the declared length is ever written (the upstream
  would read those as its next request: aiohttp's server hands over a gzip-coded body
  inflated, under the client's ``Content-Length`` of the coded one). Every write waits
  for the socket to drain (``pause_writing``/``resume_writing``).
- **Reading**: chunks queue until the reader takes them; past ``HIGH_WATER`` bytes the
  socket stops reading (``pause_reading``) until the queue drains below ``LOW_WATER``.
- **Timeouts**: connect, the wait for response headers (counted from the end of the
  request body, so a slow upload is not penalised), and the silence between body chunks.
- **Reuse**: a connection returns to the pool only after a complete response that allows
  keep-alive, with the request body fully sent. Idle connections expire before the
  upstream would close them (uvicorn's default keep-alive is 5 s). A request with a
  replayable body (none, or bytes in memory) that meets a reused connection the upstream
  closed before answering is sent once more on a new connection; nothing else is retried.

Failures leave here as this module's own :class:`UpstreamFailure` subclasses, which say
what went wrong and when, never which status the client gets: that is decided in one
table (``proxy/upstream_errors.py``). A request head that cannot be written is the
client's fault and a ``BadRequest``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, istr

from proxy.errors import BadRequest

# Queue bounds for a response body the reader has not taken yet.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A response head larger than this is refused (llhttp has no limit of its own).
MAX_HEAD_BYTES = 64 * 1024
# Idle connections are closed after this, before the upstream's own keep-alive (uvicorn: 5 s)
# can close them under a request in flight.
IDLE_EXPIRY_S = 4.0
MAX_IDLE = 256
# A deadline closer than this is due: uvloop's timers count milliseconds (libuv's), so a
# timer set for less would fire no later than now.
_TIMER_RESOLUTION_S = 0.001

# A target must not contain spaces or control characters (CR, LF and NUL among them).
_BAD_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2: methods, field names

_REPLAYABLE = (type(None), bytes)
# Header names the client edits, as istr: a multidict looks them up without folding the
# name's case again on every request (a plain str is folded each time).
_CONTENT_LENGTH = istr("Content-Length")
_TRANSFER_ENCODING = istr("Transfer-Encoding")
_HOST = istr("Host")
_BODY_EXPECTED = frozenset({"POST", "PUT", "PATCH"})
# Resent once on a new connection if a pooled one turns out closed (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


# --- what can go wrong -------------------------------------------------------------------


class UpstreamFailure(Exception):
    """Base of every failure of the upstream this client reports; ``str()`` is safe to show."""


class ConnectFailed(UpstreamFailure):
    """No connection: refused, unreachable, or its TLS certificate not trusted."""


class ConnectTimeout(UpstreamFailure):
    """No connection within the connect timeout."""


class ConnectionBroke(UpstreamFailure):
    """The connection closed or reset before the response head arrived."""


class ProtocolError(UpstreamFailure):
    """The upstream's bytes are not a response we accept (framing, size, extra messages)."""


class UploadStalled(UpstreamFailure):
    """The upstream stopped reading the request body for the idle timeout."""


class HeadTimeout(UpstreamFailure):
    """No response head within the response timeout after the request went out."""


class BodyBrokeOff(UpstreamFailure):
    """The response body stopped early, after its head arrived (``stalled``: it went silent)."""

    stalled = False


class BodyStalled(BodyBrokeOff):
    """The response body went silent for the idle timeout, after its head arrived."""

    stalled = True


# --- the request head --------------------------------------------------------------------


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
    # A printable target without a space has none of those characters: the regex (a few
    # times dearer per character) decides only when it is not.
    if not (target.isprintable() and " " not in target) and _BAD_IN_TARGET.search(target):
        raise BadRequest("request target contains whitespace or control characters")
    names = headers.keys()
    if not (method in _CHECKED_TOKENS and _CHECKED_TOKENS.issuperset(names)):
        _check_tokens(method, names)
    lines = [f"{method} {target} HTTP/1.1", *map(": ".join, headers.items()), "", ""]
    # The method, the target and the names cannot hold a CR, LF or NUL (checked above), so
    # only a value can: looked for (memchr) in the lines before the breaks go between them,
    # not counted in the head (a scan of every character, twice).
    unbroken = "".join(lines)
    if "\r" in unbroken or "\n" in unbroken or "\x00" in unbroken:
        raise BadRequest("a header contains CR, LF or NUL")
    text = "\r\n".join(lines)
    try:
        # surrogateescape gives bytes aiohttp's server decoded that way back as they were.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise BadRequest("a header is not encodable") from exc


# Methods and header names already found to be HTTP tokens: the same few dozen go out on
# every request. Bounded as the header policy's verdicts (the names are the client's).
_CHECKED_TOKENS: set[str] = set()
_MAX_CHECKED_TOKENS = 4096
_MAX_CHECKED_TOKEN = 64


def _check_tokens(method: str, names: Iterable[str]) -> None:
    for token in (method, *names):
        if token in _CHECKED_TOKENS:
            continue
        if not _TOKEN.fullmatch(token):  # an empty name is no token either
            raise BadRequest("the method or a header name is not an HTTP token")
        if len(token) <= _MAX_CHECKED_TOKEN:
            if len(_CHECKED_TOKENS) >= _MAX_CHECKED_TOKENS:
                _CHECKED_TOKENS.clear()
            _CHECKED_TOKENS.add(token)


# --- one request and its response ----------------------------------------------------------


class Response:
    """One upstream response: status and headers read, body still to come.

    Read the body with :meth:`read` or :meth:`iter_chunks`, then :meth:`release` (always,
    also after an error): it returns the connection to the pool or closes it.
    """

    __slots__ = (
        "_exchange",
        "_headers",
        "_released",
        "content_length",
        "content_type",
        "header_list",
        "reason",
        "status",
    )

    # Set by _Exchange.on_headers_complete, the one place a Response is made, on an object
    # from object.__new__: no __init__ call (the slot wrapper and a frame) for every response.
    status: int
    reason: str
    header_list: list[tuple[str, str]]  # as received, in order: what the relay filters
    content_length: int | None
    content_type: str  # lower-case, without parameters ("" if none)
    _headers: CIMultiDict[str] | None
    _exchange: _Exchange
    _released: bool

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers as a multidict, built when first asked for (the relay never does)."""
        if self._headers is None:
            self._headers = CIMultiDict(self.header_list)
        return self._headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        while True:
            chunk = await exchange.next_chunk()
            if not chunk:
                return
            yield chunk

    def read_now(self) -> bytes | None:
        """The whole body if all of it is here already (a small answer, usually), without a
        coroutine; None if some is still to come (then :meth:`read` waits for it)."""
        exchange = self._exchange
        return exchange.take_all() if exchange.phase is _COMPLETE else None

    async def read(self) -> bytes:
        exchange = self._exchange
        if exchange.phase is _COMPLETE:  # all of it is here already: a small answer, usually
            return exchange.take_all()
        first = await exchange.next_chunk()
        if not first:
            return first
        chunks = [first]
        while chunk := await exchange.next_chunk():
            chunks.append(chunk)
        return first if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._exchange.conn.finish()


class Phase(enum.Enum):
    """How far the response of one exchange got. The request body's progress is apart
    (:attr:`_Exchange.request_sent`): an upstream may answer before it has read it all."""

    AWAITING_HEAD = "awaiting head"  # informational responses (100, 103) stay here
    RECEIVING_BODY = "receiving body"
    COMPLETE = "complete"
    FAILED = "failed"


# The lengths of Content-Type, Content-Length and Transfer-Encoding: only names this long
# are compared with them.
_FRAMING_LENGTHS = frozenset({12, 14, 17})


def _fields_size(header_items: list[tuple[str, str]]) -> int:
    """The header fields' size in bytes as received (name, ": ", value, CRLF): names are
    Latin-1 and values surrogate-escaped UTF-8, so encoding gives the bytes back."""
    return sum(len(n) + len(v.encode("utf-8", "surrogateescape")) + 4 for n, v in header_items)


# Content-Type values seen, and their media types: the same few on every response. Bounded
# in number and length, as the values are the upstream's.
_MEDIA_TYPES: dict[str, str] = {}
_MAX_MEDIA_TYPES = 256
_MAX_MEDIA_TYPE_KEY = 128


def _media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower-case, without parameters ("" if none)."""
    if content_type is None:
        return ""
    media = _MEDIA_TYPES.get(content_type)
    if media is None:
        media = content_type.partition(";")[0].strip().lower()
        if len(content_type) <= _MAX_MEDIA_TYPE_KEY:
            if len(_MEDIA_TYPES) >= _MAX_MEDIA_TYPES:
                _MEDIA_TYPES.clear()
            _MEDIA_TYPES[content_type] = media
    return media


# Module constants: an enum member looked up on its class costs a descriptor call each time.
_AWAITING_HEAD = Phase.AWAITING_HEAD
_RECEIVING_BODY = Phase.RECEIVING_BODY
_COMPLETE = Phase.COMPLETE
_FAILED = Phase.FAILED
_new_response = object.__new__


class _Exchange:
    """One request and its response on a connection, from the first byte sent to release.

    It is the parser's callback object: httptools calls the ``on_*`` methods while
    :meth:`_Connection.data_received` feeds it bytes. Made fresh for each request, so
    nothing of one response can leak into the next.
    """

    __slots__ = (
        "chunk_waiter",
        "chunks",
        "coding_field",
        "conn",
        "error",
        "feeding",
        "got_bytes",
        "head_bytes",
        "head_deadline",
        "head_size",
        "head_waiter",
        "header_items",
        "keep_alive",
        "length_field",
        "no_body",
        "parser",
        "phase",
        "poisoned",
        "queued",
        "reason",
        "request_sent",
        "type_field",
        "until_close",
        "writer",
    )

    def __init__(self, conn: _Connection, no_body: bool) -> None:
        self.conn = conn
        self.phase = _AWAITING_HEAD
        self.no_body = no_body  # HEAD: the head is the whole response
        self.request_sent = False  # the request body went out whole
        self.writer: asyncio.Task[None] | None = None  # a streamed request body in flight
        # Both None once retired (see retire).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.head_waiter: asyncio.Future[Response] | None = conn.loop.create_future()
        self.head_deadline: float | None = None  # loop time the head is due (once awaited)
        self.error: BaseException | None = None  # why the phase is FAILED
        # the head, while it arrives
        self.reason = ""
        self.header_items: list[tuple[str, str]] = []
        # The first Content-Length, Transfer-Encoding and Content-Type values (None: absent),
        # picked out as they arrive (see on_header).
        self.length_field: str | None = None
        self.coding_field: str | None = None
        self.type_field: str | None = None
        self.head_bytes = 0  # bytes received while the head is incomplete
        self.head_size = 0  # the header fields' size of informational heads before this one
        self.feeding = 0  # the size of the bytes being parsed right now
        self.got_bytes = False  # anything at all arrived (a stale connection sends nothing)
        # what the head said about the body and the connection
        self.until_close = False  # no length, not chunked: the body ends with the connection
        self.keep_alive = False  # the connection may carry another request after this one
        self.poisoned = False  # bytes beyond the response arrived
        # the body, queued until the reader takes it
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.chunk_waiter: asyncio.Future[None] | None = None

    @property
    def reusable(self) -> bool:
        """The response ended as it said it would and allowed keep-alive, the request went
        out whole (so the writer is done), and the reader took every byte."""
        return self.phase is _COMPLETE and self.keep_alive and self.request_sent and not self.chunks

    def retire(self) -> None:
        """Drop the references that tie the exchange to its parser and (through the head
        waiter) to its response: without cycles, all three are freed as soon as the caller
        lets go, not later by the garbage collector, which costs measurably per request."""
        self.parser = None
        self.head_waiter = None

    def ended_cleanly(self) -> bool:
        """The upstream closed its side cleanly (a FIN): that ends a body without length.
        True if the response is complete now."""
        if self.until_close and self.phase is _RECEIVING_BODY:
            self.on_message_complete()
        return self.phase is _COMPLETE

    def fail(self, error: BaseException) -> None:
        """Fail the exchange unless its response is complete; the first error stands."""
        if self.phase is _COMPLETE:
            return
        if self.phase is not _FAILED:
            self.phase = _FAILED
            self.error = error
        head = self.head_waiter
        if head is not None and not head.done():
            head.set_exception(self.error or error)
        self._wake()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.phase is _COMPLETE:
            # A second message where one response was asked for: whatever the upstream
            # meant, those bytes belong to no request. Stop parsing; never reuse.
            self.poisoned = True
            raise _Poisoned()

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        # A name is an ASCII token (the parser refuses any other), so decoding it as UTF-8
        # (the default: no codec name to look up) gives what Latin-1 would.
        try:
            text = value.decode()
        except UnicodeDecodeError:
            # aiohttp's serialiser drops what it cannot encode as UTF-8, byte by byte: relayed,
            # "Location: /\xff/evil.example/" would leave as "//evil.example/" (another host),
            # "a=1\xff; Dom\xffain=x" gain a Domain. Refused, as a WebSocket's such header is.
            self.fail(ProtocolError("upstream sent a header value that is not UTF-8"))
            raise _Poisoned() from None
        self.header_items.append((name.decode(), text))
        # The framing headers' first values, as CIMultiDict.get would find them: picked out
        # here, as the headers arrive, not in a second pass over them all.
        if len(name) in _FRAMING_LENGTHS:
            lowered = name.lower()
            if lowered == b"content-length":
                if self.length_field is None:
                    self.length_field = text
            elif lowered == b"transfer-encoding":
                if self.coding_field is None:
                    self.coding_field = text
            elif lowered == b"content-type" and self.type_field is None:
                self.type_field = text

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # it is the parser calling
        status = parser.get_status_code()
        if not 200 <= status <= 599:  # one comparison for the usual final answer
            if not 100 <= status < 200:
                # RFC 9110 15: invalid; relayed, it would be an invalid status line.
                self.fail(ProtocolError(f"upstream sent an invalid status ({status})"))
                raise _Poisoned()
            # Informational (100 Continue, 103 Early Hints): the real answer follows. (A
            # 101 ends in llhttp's HttpParserUpgrade: see _Connection.data_received.)
            self.head_size += _fields_size(self.header_items)
            self.reason = ""
            self.header_items = []
            self.length_field = self.coding_field = self.type_field = None
            return
        # A head that arrived whole within fewer bytes than the limit is within it: the
        # exact size is worked out only when it might not be.
        if self.head_bytes + self.feeding > MAX_HEAD_BYTES and (
            self.head_size + _fields_size(self.header_items) > MAX_HEAD_BYTES
        ):
            return  # refused once the parser returns (see _Connection.data_received)
        length_text, encoding, content_type = self.length_field, self.coding_field, self.type_field
        chunked = encoding is not None and "chunked" in encoding.lower()
        length = int(length_text) if length_text is not None and not chunked else None
        bodiless = self.no_body or status in (204, 304)
        if bodiless:
            length = 0 if status != 304 and not self.no_body else length
        self.until_close = not bodiless and length is None and not chunked
        # Asked now: llhttp forgets the message's flags once it is complete. A HEAD answer
        # and a body that ends with the connection leave nothing to reuse.
        self.keep_alive = parser.should_keep_alive() and not self.no_body and not self.until_close
        # _media_type's cache asked here first: a call fewer for a type seen before.
        media = "" if content_type is None else _MEDIA_TYPES.get(content_type)
        response = _new_response(Response)
        response.status = status
        response.reason = self.reason.strip()
        response.header_list = self.header_items
        response.content_length = length
        response.content_type = _media_type(content_type) if media is None else media
        response._headers = None
        response._exchange = self
        response._released = False
        self.phase = _RECEIVING_BODY
        head = self.head_waiter
        if head is not None and not head.done():
            head.set_result(response)
        if self.no_body:
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self.phase is not _RECEIVING_BODY or self.no_body:
            # A body on an informational or HEAD answer, or past the end: refused.
            self.poisoned = True
            raise _Poisoned()
        self.chunks.append(body)
        self.queued += len(body)
        if self.queued > HIGH_WATER:
            self.conn.flow.pause_reading()
        # _wake, inline (here and below): a call fewer for every chunk and every response.
        waiter = self.chunk_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        # The end of an informational response (still awaiting the head) changes nothing.
        if self.phase is _RECEIVING_BODY:
            self.phase = _COMPLETE
            waiter = self.chunk_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # --- the reader's side -------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.chunk_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_all(self) -> bytes:
        """The whole queued body of a complete response, at once."""
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.queued = 0
        if self.conn.flow.read_paused:
            self.conn.flow.resume_reading()
        return body

    async def next_chunk(self) -> bytes:
        """The next body chunk; ``b""`` at the end. Raises :class:`BodyBrokeOff`."""
        while not self.chunks:
            if self.phase is _COMPLETE:
                return b""
            if self.phase is _FAILED:
                raise BodyBrokeOff(str(self.error))
            conn = self.conn
            waiter = conn.loop.create_future()
            self.chunk_waiter = waiter
            timer = conn.loop.call_later(conn.pool.idle_timeout_s, _expire, waiter)
            try:
                await waiter
            except TimeoutError as exc:
                conn.close()
                del waiter  # it holds exc, whose traceback holds this frame: no cycle
                raise BodyStalled("upstream body stalled") from exc
            finally:
                timer.cancel()
                self.chunk_waiter = None
        chunk = self.chunks.popleft()
        self.queued -= len(chunk)
        if self.queued < LOW_WATER and self.conn.flow.read_paused:
            self.conn.flow.resume_reading()
        return chunk


class _FlowControl:
    """Back-pressure both ways on one transport (uvicorn's ``FlowControl`` is the model):
    our reading pauses while the reader lags, our writing waits while the socket is full."""

    __slots__ = ("_drain_waiter", "_lost", "_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        """Wait until the socket takes more; an upstream that stops reading times out."""
        if self._lost:
            raise ConnectionResetError("upstream connection lost")
        if self.write_paused:
            waiter = self._drain_waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _expire, waiter)
            try:
                await waiter
            except TimeoutError as exc:
                raise UploadStalled("upstream stopped reading the request body") from exc
            finally:
                timer.cancel()
                self._drain_waiter = None

    def lost(self, why: str) -> None:
        """The connection is gone: a writer waiting to drain learns it now."""
        self._lost = True
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError(f"upstream connection {why}"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: what outlives a request, and the exchange in flight."""

    flow: _FlowControl  # set once connected

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0  # loop time it went back to the pool
        self.exchange: _Exchange | None = None
        # The head timer (see time_head) and the loop time it fires at.
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_timer_at = 0.0

    async def drain(self) -> None:
        await self.flow.drain(self.loop, self.pool.idle_timeout_s)

    def time_head(self, exchange: _Exchange, timeout_s: float) -> None:
        """Fail ``exchange``'s head waiter with ``TimeoutError`` if no head is in ``timeout_s``
        from now.

        One timer per connection, not one set and cancelled on every request: it is left
        running when a head arrives, and when it fires early for the exchange in flight
        (armed for an earlier one, whose deadline came first) it is moved on to this one's
        deadline. So a head is never timed out early, and no later than a timer of its own
        would have done it.
        """
        deadline = exchange.head_deadline = self.loop.time() + timeout_s
        timer = self.head_timer
        if timer is None or self.head_timer_at > deadline:  # (the latter: timeout_s shrank)
            if timer is not None:
                timer.cancel()
            self.head_timer = self.loop.call_at(deadline, self._head_timer_fired)
            self.head_timer_at = deadline

    def _head_timer_fired(self) -> None:
        self.head_timer = None
        exchange = self.exchange
        if exchange is None:
            return  # idle, or closed: nothing to time
        waiter, deadline = exchange.head_waiter, exchange.head_deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # the head is in (or failed), or its wait has not begun
        if deadline - self.loop.time() > _TIMER_RESOLUTION_S:
            self.head_timer = self.loop.call_at(deadline, self._head_timer_fired)
            self.head_timer_at = deadline
        else:
            waiter.set_exception(TimeoutError())

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def finish(self) -> None:
        """The caller is done with the response: reuse the connection if that is safe."""
        exchange = self.exchange
        if exchange is None:
            self.close()
            return
        # exchange.reusable and exchange.retire(), inline: two calls fewer on every request.
        if (
            exchange.phase is _COMPLETE
            and exchange.keep_alive
            and exchange.request_sent
            and not exchange.chunks
            and not self.closed
        ):
            self.exchange = None
            if self.flow.read_paused:
                self.flow.resume_reading()
            self.pool.put_back(self)
        else:
            self.close()
            self.exchange = None
        exchange.parser = None
        exchange.head_waiter = None

    def close(self) -> None:
        """Drop the connection now: unsent bytes are discarded, waiters woken, writer stopped.

        ``abort`` rather than ``close``: an upstream that stopped reading would otherwise
        keep the socket (and a waiting writer) alive until it drained.
        """
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True
        self._stop_head_timer()
        exchange = self.exchange
        if exchange is not None:
            exchange.fail(ConnectionResetError("upstream connection closed"))
            head = exchange.head_waiter
            if head is not None and head.done() and not head.cancelled():
                head.exception()  # retrieved: nobody may be waiting any more
            writer = exchange.writer
            if writer is not None and not writer.done():
                writer.cancel()
            # No references back: the connection and its exchange, the exchange and its
            # parser (which holds its callbacks), the writer (whose error's traceback holds
            # both) would otherwise be cycles, freed only by the garbage collector. The
            # response's reader keeps the exchange, for its error.
            self.exchange = exchange.writer = exchange.parser = exchange.head_waiter = None
        if self.transport is not None:
            self.flow.lost("closed")
        self.pool.forget(self)

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.flow = _FlowControl(self.transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted
            return
        # The bytes go to the exchange's parser from here, not through a method of the
        # exchange: a call fewer for every chunk that arrives.
        parser = exchange.parser
        assert parser is not None  # a retired exchange gets no bytes: the connection forgot it
        exchange.got_bytes = True
        in_head = exchange.phase is _AWAITING_HEAD
        exchange.feeding = len(data)
        try:
            parser.feed_data(data)
        except _PARSER_ERRORS as exc:
            # Complete: the response stands, the extra bytes only end the connection.
            why = "bytes after the message" if exchange.poisoned else type(exc).__name__
            exchange.fail(ProtocolError(f"upstream sent malformed HTTP ({why})"))
            self.close()
            return
        if in_head:
            # Counted while the head is incomplete (httptools holds a partial header in
            # memory): more than the limit without the head ending is refused.
            exchange.head_bytes += len(data)
            if exchange.phase is _AWAITING_HEAD and exchange.head_bytes > MAX_HEAD_BYTES:
                exchange.fail(ProtocolError("upstream response head too large"))
                self.close()

    def eof_received(self) -> bool:
        if self.exchange is not None:
            self.exchange.ended_cleanly()
        return False  # close the transport (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_head_timer()
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is not None and not (exc is None and exchange.ended_cleanly()):
            why = type(exc).__name__ if exc is not None else "closed"
            exchange.fail(ConnectionResetError(f"upstream connection lost ({why})"))
        self.flow.lost("lost")

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()


def _retrieve(task: asyncio.Task[None]) -> None:
    """A writer that failed after the response head arrived: its error ends the connection
    (the exchange's request was not sent whole), and is not worth a "never retrieved"
    warning."""
    if not task.cancelled():
        task.exception()


# What llhttp raises for bytes it will not take as a response: HttpParserUpgrade (after a
# 101, which no request of this client asks for) is no HttpParserError subclass.
_PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)


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

    def request(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterable[bytes] | None,
        failed: Callable[[UpstreamFailure], BaseException] | None = None,
    ) -> Coroutine[None, None, Response]:
        """Send one request; the awaitable resolves with the response once its head is in.

        ``headers`` is sent exactly as given. A streamed body is sent with the
        ``Content-Length`` the headers carry or, without one, chunked. With ``failed``, an
        :class:`UpstreamFailure` is raised as ``failed(failure)`` instead (chained to it): a
        caller that translates failures needs no coroutine of its own around this one.

        Not a coroutine itself (one level fewer between the caller and the head, on every
        request): it edits and encodes the head at once (a ``BadRequest`` is raised here)
        and hands back :meth:`_exchange`'s coroutine.
        """
        if isinstance(body, _REPLAYABLE):
            if body is not None:
                headers[_CONTENT_LENGTH] = str(len(body))
            elif method in _BODY_EXPECTED:
                headers[_CONTENT_LENGTH] = "0"  # some servers answer 411 without it
            else:
                headers.popall(_CONTENT_LENGTH, None)
        elif _CONTENT_LENGTH not in headers:
            headers[_TRANSFER_ENCODING] = "chunked"
        else:  # the length the body is written to (see _write_body), and only it
            headers[_CONTENT_LENGTH] = str(_declared_length(headers.getall(_CONTENT_LENGTH)))
        if _HOST not in headers:
            headers[_HOST] = self.origin.netloc
        head = encode_head(method, self.origin.prefix + target, headers)
        retry = isinstance(body, _REPLAYABLE) and method in _IDEMPOTENT
        # An idle connection is taken without a coroutine: the usual case, on every request.
        return self._exchange(self._take_idle(), method, head, headers, body, retry, failed)

    async def _exchange(
        self,
        conn: _Connection | None,
        method: str,
        head: bytes,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterable[bytes] | None,
        retry: bool,
        failed: Callable[[UpstreamFailure], BaseException] | None,
    ) -> Response:
        """The request on ``conn`` (None: a new connection); its response once the head is in.

        With ``retry``, a pooled connection the upstream closed as the request went out
        (nothing came back) is given up and the request sent once more on a new connection
        (an idle one might be just as stale). With ``failed``, an :class:`UpstreamFailure`
        is raised as ``failed`` makes it (see :meth:`request`).
        """
        try:
            if conn is None:
                conn = await self._connect()
            # A fresh exchange: nothing of an earlier response can leak into this one.
            exchange = conn.exchange = _Exchange(conn, method == "HEAD")
            head_waiter = exchange.head_waiter
            assert head_waiter is not None
            assert conn.transport is not None
            try:
                if isinstance(body, _REPLAYABLE):
                    conn.transport.write(head + body if body else head)
                    if conn.flow.write_paused:  # the response timeout counts from the last byte
                        await conn.drain()
                    exchange.request_sent = True
                else:
                    conn.transport.write(head)
                    declared = headers.get(_CONTENT_LENGTH)  # one number (see request)
                    length = None if declared is None else int(declared)  # None: chunked
                    writer = exchange.writer = self.loop.create_task(
                        _write_body(conn, exchange, body, length)
                    )
                    writer.add_done_callback(_retrieve)
                    done, _ = await asyncio.wait(
                        (writer, head_waiter), return_when=asyncio.FIRST_COMPLETED
                    )
                    # A writer cancelled by close() (the upstream sent garbage, say) is not
                    # the error: the head waiter holds the real one, raised below.
                    broke = None if writer not in done or writer.cancelled() else writer.exception()
                    # A write that failed because the upstream answered and closed is no error.
                    if broke is not None and not (
                        isinstance(broke, ConnectionError) and head_waiter.done()
                    ):
                        raise broke
                if not head_waiter.done():
                    # The response head. If the upstream answered before reading the whole
                    # body (a refusal, say), the body keeps going until the response is
                    # released; then the connection is reused only if it all went.
                    conn.time_head(exchange, self.response_timeout_s)
                    try:
                        await head_waiter
                    except TimeoutError as exc:
                        raise HeadTimeout("upstream did not answer in time") from exc
                return head_waiter.result()
            except BaseException as exc:
                # The head waiter may hold exc, whose traceback holds this frame: without the
                # waiter here, no cycle keeps the exchange until the garbage collector runs.
                head_waiter = None
                conn.close()
                if not isinstance(exc, ConnectionError):
                    raise
                # Nothing came back (malformed bytes would be a ProtocolError): a pooled
                # connection may just have been closed by the upstream.
                if not (retry and conn.reused and not exchange.got_bytes):
                    raise ConnectionBroke(f"upstream unreachable ({type(exc).__name__})") from exc
            # Stale: once more, on a new connection, outside the handler (no chained context).
            return await self._exchange(None, method, head, headers, body, False, None)
        except UpstreamFailure as exc:
            if failed is None:
                raise
            raise failed(exc) from exc

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection that is still fresh, if any."""
        idle = self.idle
        if not idle:
            return None
        cutoff = self.loop.time() - IDLE_EXPIRY_S
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since <= cutoff:
                conn.close()  # the upstream may be closing it right now
                continue
            conn.reused = True
            self.busy.add(conn)
            return conn
        return None

    async def _connect(self) -> _Connection:
        """A new connection (an idle one might be stale, or there is none)."""
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
            raise ConnectTimeout("connecting to the upstream timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"upstream unreachable ({type(exc).__name__})") from exc
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


def _declared_length(values: list[str]) -> int:
    """The one length a streamed body's ``Content-Length`` headers declare: a decimal
    number, once (copies that say the same count once); anything else is a BadRequest."""
    first = values[0]
    if not (first.isascii() and first.isdigit()) or any(v != first for v in values):
        raise BadRequest("Content-Length is not one decimal number")
    return int(first)


async def _write_body(
    conn: _Connection, exchange: _Exchange, body: AsyncIterable[bytes], length: int | None
) -> None:
    """Write ``body`` chunked (``length`` None) or as exactly ``length`` bytes.

    A body longer than ``length`` is refused before a byte past it is written, one shorter
    once it ends: either way ``request_sent`` stays false, so the connection (on which the
    upstream reads the body to the declared length) is closed, never reused.
    """
    transport = conn.transport
    assert transport is not None
    left = length
    async for chunk in body:
        if not chunk:
            continue
        if conn.closed:
            raise ConnectionResetError("upstream connection lost")
        if left is None:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        elif len(chunk) > left:
            raise BadRequest("the request body is longer than its Content-Length says")
        else:
            left -= len(chunk)
            transport.write(chunk)
        await conn.drain()
    if left is None:
        transport.write(b"0\r\n\r\n")
    elif left:
        raise BadRequest("the request body is shorter than its Content-Length says")
    exchange.request_sent = True
