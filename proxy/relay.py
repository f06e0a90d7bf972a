"""Streaming HTTP relay to OpenWebUI.

The caller decides the outbound headers (``proxy/headers.py``); this module only moves
bytes: the raw path and query exactly as received, the request body streamed with a size
limit, the response streamed back chunk by chunk, nothing decompressed or compressed.

Plain HTTP goes through ``proxy/h1.py``'s lean keep-alive client; WebSockets and the few
side requests (``/health``, the Socket.IO token check) use an aiohttp session. The
client's own errors become ``proxy.errors`` here; the upstream's failures are handed to
``proxy/upstream_errors.py`` with the stage they were caught at, which decides the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web
from multidict import CIMultiDict

from proxy import h1
from proxy.answer import WholeAnswer, carries_body
from proxy.errors import BodyStalled, BodyTooLarge, drop_frames
from proxy.headers import response_header_items
from proxy.upstream import Upstream, checked_target
from proxy.upstream_errors import Stage, translate

CHUNK = 64 * 1024

# Bodies up to this size, of known length, are relayed in one write (see stream_back).
ONE_WRITE_MAX_BYTES = 64 * 1024

_CONTINUE_SENT = web.RequestKey("owui_continue_sent", bool)


async def no_early_continue(request: web.Request) -> None:
    """The routes' ``expect_handler``: no ``100 Continue`` before the caller is known.

    aiohttp's default answers ``Expect: 100-continue`` as soon as the head arrives, which
    invites an unauthenticated client to send its body. Here nothing is sent (the body is
    asked for by :func:`continue_if_expected`, after authentication); an expectation other
    than ``100-continue`` gets 417, as from aiohttp's default.
    """
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers['Expect']}")


async def continue_if_expected(request: web.Request) -> None:
    """Send ``100 Continue`` if the client waits for one; call right before reading the body.

    :func:`send` and :func:`read_body` call it, and they run only once the caller is
    authenticated (public listener) or its service token checked (internal listener).
    """
    # The header first: almost no request expects, and a missed ``request.get`` costs a
    # caught KeyError (~4k instructions, on every request with a body).
    if (
        request.headers.get("Expect", "").lower() == "100-continue"
        and request.version >= (1, 1)
        and not request.get(_CONTINUE_SENT)
    ):
        request[_CONTINUE_SENT] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _client_chunks(request: web.Request, limit: int, timeout: float) -> AsyncIterator[bytes]:
    """The client's body chunk by chunk: 413 past ``limit`` bytes, 408 after ``timeout``
    seconds without a byte (a stalled body would otherwise hold the connection forever)."""
    content = request.content
    seen = 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.read(CHUNK)
        except TimeoutError as exc:
            raise BodyStalled(f"no request body bytes for {timeout:g} s") from exc
        except ConnectionError as exc:
            # The client went away. aiohttp keeps the error on the body's stream as well as
            # raising it, so the error's traceback (the stream's own frames) and the stream
            # hold each other: a cycle that kept the whole request, its buffers too, until
            # the garbage collector came by. A fresh error, and the stream's without frames.
            drop_frames(exc)
            raise ConnectionResetError(*exc.args) from None
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        yield chunk


def send(
    request: web.Request,
    headers: CIMultiDict[str],
    upstream: Upstream,
    *,
    method: str | None = None,
    with_body: bool = True,
    buffered: bytes | None = None,
) -> Awaitable[h1.Response]:
    """Send ``request`` upstream with exactly ``headers``; await the response, head read.

    The body streams from the client, unless ``with_body`` is false (none is sent) or
    ``buffered`` holds it, already read (see :func:`read_body`). The caller must
    ``release()`` the response. Raises ``BodyTooLarge``, ``BodyStalled`` or an
    ``UpstreamError``.

    Not a coroutine itself when no body streams (most requests): the pool's own coroutine
    is handed back, translating its failures (one level fewer between the handler and the
    head). A ``BadRequest`` or ``BodyTooLarge`` may so be raised by the call itself.
    """
    target = checked_target(request.raw_path)
    declared = request.content_length
    if declared is not None and declared > upstream.max_body_bytes:
        raise BodyTooLarge(f"request body exceeds {upstream.max_body_bytes} bytes")
    if buffered is None and with_body and request.body_exists:
        return _send_streamed(request, headers, upstream, method or request.method, target)
    return upstream.pool.request(method or request.method, target, headers, buffered, _failed)


async def _send_streamed(
    request: web.Request, headers: CIMultiDict[str], upstream: Upstream, method: str, target: str
) -> h1.Response:
    """:func:`send` with the body streamed from the client (``100 Continue`` first, if
    the client waits for one)."""
    await continue_if_expected(request)
    body = _client_chunks(request, upstream.max_body_bytes, upstream.body_timeout_s)
    return await upstream.pool.request(method, target, headers, body, _failed)


def _failed(exc: h1.UpstreamFailure) -> Exception:
    return translate(exc, Stage.BEFORE_RESPONSE)


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The client's whole body, for the few requests the proxy must inspect; 413 past
    ``limit``, 408 after ``timeout`` seconds without a byte."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    await continue_if_expected(request)
    return b"".join([chunk async for chunk in _client_chunks(request, limit, timeout)])


async def read_whole(response: h1.Response) -> bytes:
    """Read a (small) body whole and release the response; failures become proxy errors."""
    body = response.read_now()
    if body is not None:  # all of it is in already: nothing to wait for, nothing to fail
        response.release()
        return body
    try:
        return await response.read()
    except h1.BodyBrokeOff as exc:
        raise translate(exc, Stage.BEFORE_RESPONSE) from exc
    finally:
        response.release()


def whole_response(
    response: h1.Response, body: bytes, extra: CIMultiDict[str] | None = None
) -> web.Response:
    """The client's answer for an upstream response whose body was read whole (``read_whole``)."""
    return web.Response(status=response.status, body=body, headers=_whole_headers(response, extra))


def _whole_headers(response: h1.Response, extra: CIMultiDict[str] | None) -> list[tuple[str, str]]:
    """The headers of an answer whose body is sent whole: the upstream's, filtered, without
    ``Content-Length`` (counted by whoever sends the body), and ``extra``. A list: aiohttp
    builds the answer's multidict from it (it would copy a multidict)."""
    headers = response_header_items(response.header_list, drop_length=True)
    if extra:
        headers.extend(extra.items())
    return headers


async def stream_back(
    request: web.Request,
    response: h1.Response,
    *,
    extra_headers: CIMultiDict[str] | None = None,
) -> web.StreamResponse:
    """Stream ``response`` to the client chunk by chunk, then release it.

    A small body of known length (not an event stream; one the method and status allow: not
    to ``HEAD``, not a 204 or 304) is read whole and sent with its head in one write instead
    (``proxy/answer.py``): nothing to stream, and one write costs less than three.
    """
    length = response.content_length
    if (
        length is not None
        and length <= ONE_WRITE_MAX_BYTES
        and response.content_type != "text/event-stream"
        and carries_body(request._method, response.status)  # what .method returns
    ):
        # Usually all of it arrived with the head: taken without read_whole's coroutines.
        body = response.read_now()
        if body is None:
            body = await read_whole(response)
        else:
            response.release()
        # _whole_headers, inline (the one answer every small relayed body gets).
        headers = response_header_items(response.header_list, drop_length=True)
        if extra_headers:
            headers.extend(extra_headers.items())
        whole = WholeAnswer(response.status, headers, body)
        await whole.prepare(request)
        return whole
    try:
        headers = response_header_items(response.header_list)
        if extra_headers:
            headers.extend(extra_headers.items())
        out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
        await out.prepare(request)
        try:
            async for chunk in response.iter_chunks():
                await out.write(chunk)
        except h1.BodyBrokeOff as exc:
            _reset(request)
            raise translate(exc, Stage.MID_BODY) from exc
        await out.write_eof()
        return out
    finally:
        response.release()


# SO_LINGER on, for 0 s: closing the socket sends a reset, not a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(request: web.Request) -> None:
    """Reset the client's connection (RST): the relayed body broke off.

    A clean close (FIN) is no signal of that for a body without a length of its own: to an
    HTTP/1.0 client (no chunked framing) a response read to the close is complete, and a
    truncated stream or download would look whole. A reset is noticed by every client.
    """
    transport = request.transport
    if transport is not None:
        reset(transport)


def reset(transport: asyncio.BaseTransport) -> None:
    """Close ``transport`` with a reset (RST) rather than a FIN; unsent bytes are dropped."""
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A socket that refuses lingering (a unix one may): its close still cuts.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()  # type: ignore[attr-defined]  # a Transport's, which this is
