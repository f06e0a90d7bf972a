"""Client connection timeouts aiohttp's server lacks: the request head must arrive in time.

aiohttp closes a connection that waits for a request longer than ``keepalive_timeout``
(from connection open, and from the end of each response), and nothing else: a client
trickling a head one byte a minute, or opening sockets and sending nothing, holds them for
that long. Three timeouts bound every client connection (the body one is the relay's):

- **head** (``header_timeout_s``): from connection open, and from the first byte of each
  following request, until its whole head has arrived (Go's ``ReadHeaderTimeout``,
  nginx's ``client_header_timeout``). Expiry closes the connection without an answer.
- **keep-alive idle** (``keepalive_timeout_s``): from the end of a response until the next
  request's head; aiohttp's own ``keepalive_timeout``.
- **body** (``body_timeout_s``): the most silence between two body chunks while the relay
  reads them (``proxy/relay.py``), answered 408.

The defaults (:data:`HEADER_TIMEOUT_S`, :data:`KEEPALIVE_TIMEOUT_S`, :data:`BODY_TIMEOUT_S`)
are the proxy's settings' defaults and the provisioner's webhook receiver's timeouts.

aiohttp has no hook for its protocol class, so :class:`GuardedRunner` builds the server
aiohttp would build and hands it a protocol subclass; the only aiohttp internals touched
are the server's handler arguments and loop (``_kwargs``, ``_loop``).
``tests/proxy/test_connections.py`` pins the behaviour, so an aiohttp upgrade that moves
them fails there.

The same protocol answers what aiohttp's parser refuses (a 400 for a malformed or oversized
head) with the status and its phrase only: aiohttp's own text quotes the request's bytes
(``tests/proxy/test_refusal_echo.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

HEADER_TIMEOUT_S = 10
KEEPALIVE_TIMEOUT_S = 75
BODY_TIMEOUT_S = 60


def refusal_text(status: int) -> str:
    """The body of aiohttp's own error answer: the status and its phrase, nothing of the
    request."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{status} {phrase}\n"


class _GuardedHandler(web.RequestHandler):
    """aiohttp's protocol, closing a connection whose request head is late.

    The head's deadline is a number, armed and disarmed on every request; the timer behind
    it is made only when none is pending, and when it fires it checks the deadline, waits
    on if that moved later, and stops if there is none. So a busy kept-alive connection
    makes one timer per head timeout, not a ``call_later`` and a ``cancel`` per request
    (~4k instructions each). A pending timer never fires later than the deadline it
    serves: every deadline is "now + the timeout", so a later one is never earlier.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard_loop = loop
        self._header_timeout_s = header_timeout_s
        self._head_deadline: float | None = None  # loop time by which the head must be in
        self._head_timer: asyncio.TimerHandle | None = None  # pending, or None
        self._busy = False  # a request is being handled; its body is the relay's concern

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()
        if self._task_handler is not None:
            self._task_handler.add_done_callback(_let_go_of_cancellation)

    def data_received(self, data: bytes) -> None:
        if data and not self._busy and self._head_deadline is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not read or handle, without the request's
        bytes: the message it writes for a refused head quotes the line it choked on (an
        oversized ``Cookie`` line, a token after a bad character), which would hand an
        HttpOnly session cookie to a script that can make a request too big and read the
        answer. The status and its phrase say what happened; the log keeps the error's name
        (``proxy/logs.py``)."""
        if message is not None:
            message = refusal_text(status)
        return super().handle_error(request, status, exc, message)

    def head_arrived(self) -> None:
        self._busy = True
        self._head_deadline = None

    def response_done(self) -> None:
        self._busy = False

    def _arm(self) -> None:
        deadline = self._head_deadline = self._guard_loop.time() + self._header_timeout_s
        if self._head_timer is None:
            self._head_timer = self._guard_loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return  # the head arrived (or no request is under way): nothing to time
        if deadline - self._guard_loop.time() > 0.001:  # a timer may fire a hair early
            self._head_timer = self._guard_loop.call_at(deadline, self._check)
        elif not self._busy:
            self.force_close()


class _GuardedServer(web.Server):
    """The server aiohttp built, making :class:`_GuardedHandler` protocols."""

    def __init__(self, inner: web.Server, header_timeout_s: float) -> None:
        super().__init__(
            self._handle,
            request_factory=self._make,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,
            **inner._kwargs,
        )
        self._inner_handler = inner.request_handler
        self._inner_factory = inner.request_factory
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> web.RequestHandler:
        return _GuardedHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )

    def _make(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # Called as a request's handling begins: its head is complete.
        if isinstance(protocol, _GuardedHandler):
            protocol.head_arrived()
        return self._inner_factory(message, payload, protocol, writer, task)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await self._inner_handler(request)
        finally:
            protocol = request.protocol
            if isinstance(protocol, _GuardedHandler):
                protocol.response_done()


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections get the head timeout (``header_timeout_s``);
    pass ``keepalive_timeout`` as for aiohttp."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        return _GuardedServer(await super()._make_server(), self._header_timeout_s)


def _let_go_of_cancellation(task: asyncio.Task[None]) -> None:
    """A connection's task, cancelled (the client's connection dropped), keeps the error
    that ended it, and the error's traceback holds aiohttp's frame, which holds the task
    (it asks the task whether it is being cancelled): a cycle holding the connection's
    last request, its unread body too, until the garbage collector came by. Asked for
    its error once, a cancelled task hands it over and lets go of it."""
    if task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()
