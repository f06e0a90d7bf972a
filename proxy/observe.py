"""The one observation middleware, shared by the public and the internal listener.

Around every request of a listener (targets no route can match, ``OPTIONS *`` and
``CONNECT host:port``, included: see :class:`Observation` for how), so it sees its final
status, errors included:

1. gives the request its id (``proxy/respond.py``), bound into every log line;
2. turns a ``ProxyError`` into its JSON answer, inside the above, so what is recorded is the
   status the caller actually got;
3. a client that went away is 499, without a traceback; an upstream that broke off after
   the response started (``proxy/upstream_errors.py``) cuts the client's connection and is
   recorded as the table says;
4. counts the request (``owui_proxy_requests_total``) and upstream failures by kind, then
   hands what it saw (:class:`Seen`) to the listener's own record: the public access line,
   the internal audit line.

One observation, not several middlewares: the machinery is a few per cent of a small
request (issue 7's profile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy import logs
from proxy.errors import ProxyError, UpstreamError
from proxy.metrics import CLIENT_CLOSED_STATUS, Metrics
from proxy.respond import REQUEST_ID_KEY, from_exception, new_request_id
from proxy.upstream_errors import MID_BODY_KIND, MID_BODY_STATUS, UpstreamBrokeOff

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Seen:
    """What the middleware saw of one request, for the listener's record of it."""

    request_id: str
    started: float  # perf_counter at the start
    status: int = 500  # the status the caller got (499: it left; 500: unhandled)
    response: web.StreamResponse | None = None  # what went (or goes) back; None if cut
    error: ProxyError | None = None  # answered as JSON
    broke_off: bool = False  # the upstream broke off mid-body: the connection was cut
    client_left: bool = False  # the caller went away first (499)

    @property
    def duration_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)


Record = Callable[[web.Request, Seen], None]


class Observation:
    """The observation of one listener's requests; ``record`` writes the listener's line for
    a request (it runs last, with the request id still bound).

    The internal listener runs it as its outermost middleware (:func:`observed`). The public
    app runs :meth:`around` from its one route, which every target reaches
    (``proxy/catchall.py``), and :meth:`unrouted` from its response hook for the answers
    aiohttp makes before the route (a refused ``Expect``): no middleware, whose machinery
    is ~3 % of a small request.
    """

    def __init__(self, listener: str, metrics: Metrics, record: Record) -> None:
        self.listener = listener
        self.metrics = metrics
        self.record = record
        self.log = logs.get()

    async def around(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """``handler``'s answer to ``request``, observed."""
        rid = new_request_id()
        # Into the request's storage directly: its __setitem__, a Python method, only adds a
        # warning for a plain str key, and REQUEST_ID_KEY is a RequestKey.
        request._state[REQUEST_ID_KEY] = rid
        bound = logs.request_id.set(rid)
        seen = Seen(rid, time.perf_counter())
        try:
            try:
                response = await handler(request)
            except ProxyError as exc:
                self.log.warning("request_failed", status=exc.status, reason=exc.reason)
                if isinstance(exc, UpstreamError):
                    self.metrics.count_upstream_error(self.listener, exc)
                seen.error = exc
                response = from_exception(request, exc)
            seen.status = response._status  # .status, without the property's call
            seen.response = response
            return response
        except web.HTTPException as exc:
            seen.status = exc.status
            raise
        except asyncio.CancelledError:
            # The client's connection dropped mid-request.
            seen.status, seen.client_left = CLIENT_CLOSED_STATUS, True
            raise
        except ConnectionError as exc:
            # The response was under way: either the upstream broke off mid-body, or the
            # client went away and a write to it failed. Either way the connection is cut
            # here; re-raising would have aiohttp log a traceback for an everyday event.
            if isinstance(exc, UpstreamBrokeOff):
                seen.status, seen.broke_off = MID_BODY_STATUS, True
                self.log.warning("upstream_broke_off", status=seen.status, reason=str(exc))
                self.metrics.upstream_errors.labels(self.listener, MID_BODY_KIND).inc()
            else:
                seen.status, seen.client_left = CLIENT_CLOSED_STATUS, True
            _cut(request)
            # aiohttp's attempt to send this fails on the closed transport, which it takes
            # as the client gone, quietly.
            return web.Response(status=seen.status)
        except Exception:
            self.log.exception("unhandled_error")
            raise
        finally:
            self.metrics.count_request(self.listener, seen.status)
            self.record(request, seen)
            logs.request_id.reset(bound)
            # The error's traceback holds this frame, which holds seen: a cycle, which would
            # keep the request and all it refers to until the garbage collector came by.
            seen.error = None

    def unrouted(self, request: web.Request, response: web.StreamResponse) -> str:
        """Observe an answer aiohttp made before any route ran (call it as the answer is
        prepared): the request gets its id, its count and its line. Returns the id."""
        rid = new_request_id()
        request[REQUEST_ID_KEY] = rid
        seen = Seen(rid, time.perf_counter(), response.status, response)
        bound = logs.request_id.set(rid)
        try:
            self.metrics.count_request(self.listener, seen.status)
            self.record(request, seen)
        finally:
            logs.request_id.reset(bound)
        return rid


def observed(listener: str, metrics: Metrics, record: Record) -> Middleware:
    """:class:`Observation` as a middleware (the internal listener's outermost)."""
    observation = Observation(listener, metrics, record)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await observation.around(request, handler)

    return observe


def _cut(request: web.Request) -> None:
    """Close the client connection (already closed if the client left)."""
    transport = request.transport
    if transport is not None:
        transport.close()
