"""Socket.IO token guard: a token a browser presents inside Socket.IO must be its own.

OpenWebUI 0.12.4 authenticates Socket.IO from a token inside the messages — the CONNECT
packet's ``auth`` and the ``auth`` of ``user-join``, ``join-channels`` and ``join-note``
events (``socket/main.py``, ``get_verified_user_by_token``) — and, unlike its HTTP API,
never compares that token's user with the trusted email header. Through a plain relay,
any signed-in user holding someone else's OpenWebUI token (stolen, or left in the browser
by the previous user) would act as that someone over Socket.IO.

So on every relayed WebSocket (not only ``/ws/socket.io``: which paths reach the
Socket.IO app is the upstream's business, and a frame that is not Socket.IO costs one
character test) the proxy reads each client text frame the way python-socketio decodes
it, and checks every token found before the frame is passed on: OpenWebUI itself is
asked ``GET /api/v1/auths/`` with that token and the verified identity's headers. 200
means the token belongs to this user; "User mismatch" (or any other refusal) means it
does not, and the socket is closed with 1008. Yes-answers are cached briefly per
(token, email) digest. Socket.IO over HTTP long-polling (OpenWebUI with
``ENABLE_WEBSOCKET_SUPPORT=false``) gets the same check on its POST bodies: 403.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict

from proxy.auth.forward import DecisionCache
from proxy.headers import HeaderPolicy, identity_headers
from proxy.identity import Identity
from proxy.relay import Upstream
from proxy.token_owner import answered_for

# Socket.IO packet types that carry data a handler reads (CONNECT, EVENT, BINARY_EVENT).
_CARRIERS = {0, 2, 5}
_MESSAGE = 4  # Engine.IO
_CHECK_PATH = "/api/v1/auths/"
# Engine.IO v4 long-polling: packets in one payload are separated by this character, and
# one payload may be at most max_http_buffer_size (1 MB by default) long.
RECORD_SEPARATOR = "\x1e"
POLLING_BODY_LIMIT = 1_000_000


class Unparsable(ValueError):
    """python-socketio would refuse this packet too."""


def _packet_type(char: str) -> int | None:
    """A packet type read as python-engineio and python-socketio read it: ``int()`` of one
    character, which takes any Unicode decimal digit (Arabic-Indic and fullwidth four are 4
    too)."""
    try:
        return int(char)
    except ValueError:
        return None


def _engineio_message(frame: str) -> object:
    """What python-engineio hands Socket.IO for a text frame (None: not a MESSAGE).

    Mirrors ``engineio.packet.Packet.decode``: the body is JSON-decoded unless its first
    character is numeric, so ``4"2[...]"`` (a JSON *string*) reaches Socket.IO as ``2[...]``.
    """
    if not frame or frame[0] == "b" or _packet_type(frame[0]) != _MESSAGE:
        return None  # base64 binary attachments carry no tokens; other types no data
    body = frame[1:]
    if not body or body[0].isnumeric():
        return body
    try:
        decoded: object = json.loads(body)
    except ValueError:
        return body
    return decoded


def _socketio_payload(packet: str) -> tuple[int, Any] | None:
    """(type, decoded data) of a Socket.IO packet, parsed as python-socketio does."""
    kind = _packet_type(packet[:1])
    if kind not in _CARRIERS:
        return None
    rest = packet[1:]
    dash = rest.find("-")
    if dash > 0 and rest[:dash].isdigit():  # binary attachment count
        rest = rest[dash + 1 :]
    if rest.startswith("/"):  # namespace
        comma = rest.find(",")
        rest = "" if comma == -1 else rest[comma + 1 :]
    if rest and rest[0].isdigit():  # ack id
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        rest = rest[i:]
    if not rest:
        return None
    try:
        return kind, json.loads(rest)
    except ValueError as exc:
        raise Unparsable(str(exc)) from exc


def tokens_in(frame: str) -> list[object]:
    """Every token value an Engine.IO v4 text frame offers OpenWebUI's Socket.IO handlers.

    Values are returned as found, strings or not: a non-string (e.g. a binary attachment
    placeholder) is refused by the caller rather than guessed about. So is a MESSAGE whose
    body decodes to JSON other than a string: no client sends one, and what Socket.IO
    would make of it is not worth guessing.
    """
    message = _engineio_message(frame)
    if message is None:
        return []
    if not isinstance(message, str):
        return [message]
    try:
        decoded = _socketio_payload(message)
    except Unparsable:
        return []  # python-socketio drops it as well: nothing reaches a handler
    if decoded is None:
        return []
    kind, data = decoded
    if kind == 0:
        holders = [data]
    elif isinstance(data, list):
        holders = [arg.get("auth") for arg in data[1:] if isinstance(arg, dict)]
    else:
        holders = []
    return [h["token"] for h in holders if isinstance(h, dict) and "token" in h]


def _key(token: str, email: str) -> bytes:
    return hashlib.sha256(f"{token}\x00{email}".encode()).digest()


class TokenGuard:
    """Asks OpenWebUI whether a token belongs to a verified identity; caches the yeses."""

    def __init__(
        self,
        upstream: Upstream,
        policy: HeaderPolicy,
        ttl_s: float = 60,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self.cache = DecisionCache(ttl_s, size, clock)

    async def belongs(self, token: object, identity: Identity) -> bool:
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n\x00"):
            return False
        key = _key(token, identity.email)
        if self.cache.get(key) is not None:
            return True
        headers: CIMultiDict[str] = CIMultiDict(identity_headers(identity, self.policy))
        headers["Authorization"] = f"Bearer {token}"
        headers["Accept"] = "application/json"
        try:
            async with self.upstream.session.get(
                self.upstream.base + _CHECK_PATH,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=self.upstream.connect_timeout_s + self.upstream.response_timeout_s
                ),
            ) as response:
                body = await response.read()
                # Its email, not only its 200: releases before 0.6.14 answer another's token.
                ok = response.status == 200 and answered_for(body, identity.email)
        except (TimeoutError, aiohttp.ClientError):
            return False  # cannot tell: the socket is refused, the client retries
        if ok:
            self.cache.put(key, identity)
        return ok

    async def frame_allowed(self, frame: str, identity: Identity) -> bool:
        for token in tokens_in(frame):
            if not await self.belongs(token, identity):
                return False
        return True

    async def polling_payload_allowed(self, body: bytes, identity: Identity) -> bool:
        """The same check for an HTTP long-polling POST (packets separated by ``\x1e``)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return False  # Engine.IO cannot read it either; refuse rather than guess
        for frame in text.split(RECORD_SEPARATOR):
            if not await self.frame_allowed(frame, identity):
                return False
        return True


def is_polling_post(method: str, path: str) -> bool:
    """A request that may carry Socket.IO packets over HTTP long-polling.

    Broad on purpose (any decoded path mentioning socket.io): a false positive only costs
    buffering a small body, a false negative would let a token through unchecked.
    """
    return method == "POST" and "socket.io" in path.lower()
