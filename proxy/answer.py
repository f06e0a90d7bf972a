"""An answer whose whole body is in memory, written to the client in one go.

``web.Response`` sends a small body through six nested coroutines (``prepare``, ``_start``
twice, ``_prepare_headers``, ``_write_headers``, the writer's ``write_headers``), then
``write_eof`` through three more: about a fifth of a small relayed request's instructions.
:class:`WholeAnswer` makes the same bytes in one method: the head aiohttp would make (its
``Content-Length``, default ``Content-Type``, ``Date``, ``Server`` and ``Connection``, the
app's ``on_response_prepare`` hooks, aiohttp's own header serialiser, which refuses control
characters), then the head and body in one write.

It is only for a body the status and method allow (:func:`carries_body`): anything else
(``HEAD``, 1xx, 204, 304, a 2xx to ``CONNECT``) is a plain ``web.Response``. The bytes are
aiohttp's own, which ``tests/proxy/test_answer.py`` checks against ``web.Response`` case by
case: a later aiohttp that changes its answer fails that test, not a client.
"""

from __future__ import annotations

import functools

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict

# Past this many bytes the head and body go to the transport as two buffers, not copied
# into one (aiohttp's own threshold for the same choice is lower; a copy of a few KiB is
# cheaper than a second buffer).
_JOIN_MAX_BYTES = 16 * 1024

# (HTTP version, status, reason) -> the status line WholeAnswer.prepare writes for them.
_status_lines: dict[tuple[tuple[int, int], int, str], str] = {}
_MAX_STATUS_LINES = 256

# The hook WholeAnswer.prepare inlines, for the requests whose hook it is.
_REQUEST_PREPARE_HOOK = web.Request._prepare_hook


@functools.lru_cache(maxsize=128)  # a hit is one C call, not a Python one and aiohttp's
def carries_body(method: str, status: int) -> bool:
    """An answer with this status, to a request with this method, may carry a body."""
    return not must_be_empty_body(method, status)


class WholeAnswer(web.StreamResponse):
    """``status``, ``headers`` and ``body`` (no ``Content-Length``: it is counted here),
    sent when prepared. Only where :func:`carries_body` holds."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        # What StreamResponse.__init__ sets for a status without a reason given, without its
        # keyword call and status method (the bytes are checked against web.Response's).
        self._state = {}
        self._headers = CIMultiDict(headers)
        self._status = int(status)
        self._reason = REASON_PHRASES.get(status, "")
        self.whole_body = body

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:  # aiohttp prepares what the handler returns: already sent
            return None
        assert self._payload_writer is None, "a WholeAnswer is prepared once"
        # request._method: what request.method returns, without the property's look-up.
        assert carries_body(request._method, self._status), "a body this answer must not carry"
        writer = self._payload_writer = request._payload_writer
        self._req = request
        # The request's fields read directly (each of its properties is a Python call; the
        # values are those the properties give).
        protocol = request._protocol
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = not request._message.should_close  # .keep_alive
        body = self.whole_body
        headers = self._headers
        # What StreamResponse._prepare_headers adds, in its order, for a body of known length.
        headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if body:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request._version
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        if type(request)._prepare_hook is _REQUEST_PREPARE_HOOK:
            # web.Request's own hook, inlined: each app's on_response_prepare receivers, in
            # the order and with the arguments aiohttp's signal gives them, without the two
            # coroutines (the request's hook, the signal's send) around each call.
            match_info = request._match_info  # type: ignore[attr-defined]  # a web.Request
            if match_info is not None:
                for app in match_info._apps:
                    if receivers := app._on_response_prepare:
                        if not receivers.frozen:
                            raise RuntimeError("Cannot send non-frozen signal.")
                        for receiver in receivers:
                            await receiver(request, self)
        else:  # a request of another kind (a BaseRequest has no apps): its own hook
            await request._prepare_hook(self)
        # The status line, made once per version, status and reason (after the hooks, which
        # may set the status): formatting its three numbers costs ~1.5k instructions.
        status, reason = self._status, self._reason
        status_line = _status_lines.get((version, status, reason))
        if status_line is None:
            status_line = f"HTTP/{version[0]}.{version[1]} {status} {reason}"
            if len(_status_lines) >= _MAX_STATUS_LINES:  # bounded: the version is the client's
                _status_lines.clear()
            _status_lines[(version, status, reason)] = status_line
        head = _serialize_headers(status_line, headers)
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        if len(body) <= _JOIN_MAX_BYTES:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        # What write_eof leaves: sent, counted as aiohttp counts it (head included).
        self._eof_sent = True
        self._body_length = len(head) + len(body)
        self._req = None
        self._payload_writer = None
        if protocol._paused:  # the client reads slower than we write: wait as aiohttp does
            await protocol._drain_helper()
        return writer
