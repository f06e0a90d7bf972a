"""WebSocket relay: connect upstream first, answer 101 only if the upstream did.

Frames are relayed as they come, both ways: text, binary, ping, pong, and close with its
code. Either side closing closes the other. Silence on both sides for longer than the idle
timeout closes both with 1001 (going away). A message larger than
``websocket_max_message_bytes``, either way, closes both with 1009 (message too big):
aiohttp refuses it once its frame header announces the size, before buffering it (its limit
refuses a message *of* ``max_msg_size`` bytes, hence the ``+ 1``).

A WebSocket is authenticated once, at its upgrade, and Socket.IO keeps it busy (a ping every
25 s): the idle timeout never ends it. So none outlives the sign-in it was admitted with by
more than its lifetime (``websocket_max_lifetime_s``; each socket 90-100 % of it, so sockets
opened together, everyone reconnecting after a restart, do not all reconnect and ask the
auth service at one moment again): then both sides are closed with 1001 (going away), busy
or not. Socket.IO reconnects at once, and that new upgrade is authenticated again with what the
browser holds then (its renewed session cookie, a fresh JWT); a session signed out or revoked
since, or an identity the access rules refuse now, gets no new socket. The socket is not
re-checked with the cookie it was opened with: that cookie may be long superseded, and an
auth service asked to refresh it would present a refresh token already used, which identity
providers that rotate them answer by revoking the whole session.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WebSocketError, WSMsgType, web
from multidict import CIMultiDict, istr

from proxy.errors import BadRequest, drop_frames
from proxy.upstream import Upstream
from proxy.upstream_errors import Stage, translate

# The handshake headers belong to each hop: aiohttp makes its own key for the upstream leg.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
    }
)

# An upgrade has no body: a client's framing headers on one would have the upstream wait for
# it (uvicorn with httptools, as OpenWebUI runs, reads that body before it upgrades: the
# handshake stalled into a 504). Transfer-Encoding is hop-by-hop, dropped already; any
# spelling of either is left out (``_`` read as ``-``, as the header policy reads names).
_NOT_RELAYED = _HANDSHAKE | {"content-length", "transfer-encoding"}

AnyWS = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
# Decides whether a client text frame may go upstream (``proxy/socketio.py``).
FrameCheck = Callable[[str], Awaitable[bool]]


# The names asked for on every request, as multidict keys made once: a str key is
# case-folded again on every look-up.
UPGRADE = istr("Upgrade")
_CONNECTION = istr("Connection")


def is_websocket(request: web.Request) -> bool:
    """A WebSocket upgrade request (RFC 6455 4.1)."""
    headers = request.headers
    upgrade = headers.get(UPGRADE)
    if upgrade is None or upgrade.lower() != "websocket":
        return False  # most requests: decided without parsing Connection
    connection = {t.strip().lower() for t in headers.get(_CONNECTION, "").split(",")}
    return request.method == "GET" and "upgrade" in connection


def _protocols(request: web.Request) -> tuple[str, ...]:
    values = request.headers.getall("Sec-WebSocket-Protocol", [])
    return tuple(p.strip() for value in values for p in value.split(",") if p.strip())


def _exact(value: str) -> bool:
    """Whether a header value aiohttp decoded goes out as the bytes that came in (bytes that
    are not UTF-8 come out of its parser as lone surrogates, which cannot be sent)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _close_code(code: object) -> int:
    """A code we may send in a close frame (RFC 6455 7.4): 1005/1006 are never on the wire."""
    if isinstance(code, int) and (
        1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
    ):
        return code
    return 1000


def _lifetime(most: float) -> float:
    """This socket's lifetime: between 90 % and 100 % of ``most``."""
    return most * random.uniform(0.9, 1.0)  # noqa: S311 - spread, not a secret


class _Link:
    """Both ends of one relayed WebSocket and when either last spoke."""

    def __init__(
        self,
        client: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        idle_s: float,
        check: FrameCheck | None = None,
    ) -> None:
        self.client = client
        self.check = check
        self.upstream = upstream
        self.idle_s = idle_s
        self.last = time.monotonic()
        self.closing = False
        # The code both sides get; kept so a close cut short (the handler cancelled as the
        # client's connection drops) is finished below with the same code, not 1001.
        self.code = 1001

    async def pump(self, src: AnyWS, dst: AnyWS) -> None:
        while True:
            try:
                msg = await src.receive(timeout=self.idle_s)
            except TimeoutError:
                if time.monotonic() - self.last < self.idle_s:
                    continue  # the other direction is alive
                await self.close(1001, b"idle")
                return
            if self.closing:
                return
            self.last = time.monotonic()
            if msg.type == WSMsgType.TEXT:
                if src is self.client and self.check is not None and not await self.check(msg.data):
                    await self.close(1008, b"token does not belong to the signed-in user")
                    return
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == WSMsgType.PONG:
                await dst.pong(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                reason = msg.extra.encode() if isinstance(msg.extra, str) else b""
                await self.close(_close_code(msg.data), reason, first=dst)
                return
            elif msg.type == WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
                # A protocol breach aiohttp caught (1009 for an oversize message, 1002, 1007):
                # it already closed ``src`` with that code; the other side learns the same.
                await self.close(_close_code(msg.data.code), b"", first=dst)
                return
            else:  # CLOSING, CLOSED, ERROR: the peer went away without a close frame
                await self.close(1011 if src is self.upstream else 1001, b"", first=dst)
                return

    async def close(self, code: int, reason: bytes, first: AnyWS | None = None) -> None:
        """Pass a close on (``first``: the side that has not seen it yet), then finish ours.

        Only the first caller acts: the other pump wakes up with CLOSING and must not
        overwrite the code with one of its own.
        """
        if self.closing:
            return
        self.closing = True
        self.code = code
        order = [first] if first is not None else []
        order += [ws for ws in (self.upstream, self.client) if ws is not first]
        for ws in order:
            if not ws.closed:
                await ws.close(code=code, message=reason)


class OpenLinks:
    """The WebSockets one app is relaying, so shutdown can close them with 1001.

    Without this a drain would wait the whole grace period for sockets that never end;
    a going-away close lets Socket.IO clients reconnect to the next process at once.
    """

    def __init__(self) -> None:
        self.links: set[_Link] = set()

    async def going_away(self) -> None:
        for link in list(self.links):
            await link.close(1001, b"server shutting down")


async def relay_websocket(
    request: web.Request,
    headers: CIMultiDict[str],
    upstream: Upstream,
    *,
    open_links: OpenLinks | None = None,
    check: FrameCheck | None = None,
    lifetime_s: float,
) -> web.StreamResponse:
    """Relay a WebSocket upgrade with exactly ``headers`` (handshake and body-framing headers
    aside); a header value whose bytes are not UTF-8 is refused (BadRequest): aiohttp's
    client would send other bytes than those that came (and were checked).

    ``check``, when given, sees every client text frame first; False closes both sides
    with 1008 (policy violation) and the frame never reaches the upstream.

    ``lifetime_s`` (``websocket_max_lifetime_s``) bounds how long the socket stays open.
    """
    outbound: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower().replace("_", "-") not in _NOT_RELAYED
    )
    for name, value in outbound.items():
        if not _exact(value):
            # aiohttp's client would drop those bytes: OpenWebUI would read another header
            # than the one checked ("tok\x85en=..." would reach it as a token cookie).
            raise BadRequest(
                f"{name} holds bytes that are not UTF-8; a WebSocket upgrade cannot relay them"
            )
    try:
        async with asyncio.timeout(upstream.connect_timeout_s + upstream.response_timeout_s):
            up = await upstream.session.ws_connect(
                upstream.url_for(request.raw_path),
                headers=outbound,
                protocols=_protocols(request),
                autoclose=False,
                autoping=False,
                max_msg_size=upstream.websocket_max_message_bytes + 1,
                compress=0,
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        drop_frames(exc)
        raise translate(exc, Stage.WEBSOCKET) from exc

    client = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (),
        autoclose=False,
        autoping=False,
        max_msg_size=upstream.websocket_max_message_bytes + 1,
        compress=False,
    )
    # The upstream's own cookies on its 101 reach the client as on any other answer (the
    # handshake's other headers belong to each hop). aiohttp keeps the handshake answer
    # only as this attribute.
    for cookie in up._response.headers.getall("Set-Cookie", []):
        if _exact(cookie):
            client.headers.add("Set-Cookie", cookie)
    link = _Link(client, up, upstream.idle_timeout_s, check)
    if open_links is not None:
        open_links.links.add(link)
    try:
        await client.prepare(request)
        tasks = [
            asyncio.create_task(link.pump(client, up)),
            asyncio.create_task(link.pump(up, client)),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=_lifetime(lifetime_s), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the lifetime is over: the client reconnects, authenticated again
                await link.close(1001, b"reconnect: sign-in checked again")
            if link.closing:
                # The other pump may be passing the close on right now: let it finish,
                # or its close code would be replaced by our 1001 below.
                await asyncio.wait(tasks, timeout=10)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if open_links is not None:
            open_links.links.discard(link)
        if not up.closed:
            await up.close(code=link.code)
        if not client.closed:
            await client.close(code=link.code)
        for ws in (up, client):
            error = ws.exception()
            if error is not None:
                # aiohttp keeps the error a socket's close met, and its traceback holds the
                # socket (the close's frame); met while the handler was being cancelled, its
                # context is that cancellation, whose traceback holds every frame of the
                # handler (the pumps among them). Both cycles, freed only by the collector.
                error.__traceback__ = error.__context__ = None
    return client
