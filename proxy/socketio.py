"""Socket.IO token guard: a token a browser presents inside Socket.IO must be its own.

OpenWebUI 0.12.4 authenticates Socket.IO from a token inside the messages — the CONNECT
packet's ``auth`` and the ``auth`` of ``user-join``, ``join-channels`` and ``join-note``
events (``socket/main.py``, ``get_verified_user_by_token``) — and, unlike its HTTP API,
never compares that token's user with the trusted email header. Through a plain relay,
any signed-in user holding someone else's OpenWebUI token (stolen, or left in the browser
by the previous user) would act as that someone over Socket.IO.

So every client message to a Socket.IO path is decoded *by the server's own decoders*
(python-engineio's ``Payload`` and ``Packet``, python-socketio's ``Packet``, the versions
OpenWebUI pins): a hand-written mirror differs from them somewhere, and every difference
was a bypass (Unicode digits as packet types, JSON-string bodies, JSONP ``d=`` bodies).
Every token a handler could read is then checked before the message goes on: OpenWebUI is
asked whose it is (``proxy/owners.py``, the same question every HTTP credential gets), and
only the verified identity's own passes. Anything else — another user's token, a message
the decoders reject, a token that is not a plain printable-ASCII string, an ``auth``
that is not an object — is refused: the WebSocket is closed with 1008, a long-polling
POST gets 403. Owners are cached briefly per (token, email).

What is read, and why that is enough (docs/proxy.md, "Socket.IO tokens", has the
details): the CONNECT packet's data (``auth``) on any namespace, and the ``auth`` of
every argument of every event and acknowledgement on any namespace, binary ones
included, with their attachment placeholders resolved to markers (an attachment is
never a string the guard has seen, so a token slot filled by one is refused). A binary
Engine.IO message (WebSocket binary frame, base64 ``b`` packet) passes unread: the
server uses it only as such an attachment, and decoding one as a packet always fails.
Text messages are always decoded as packets, even where the server would take them as
an attachment: that only ever refuses more. WebSockets on other paths get their frames'
Socket.IO tokens checked too, but pass what is not Socket.IO (see ``frame_allowed``).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from engineio import packet as eio_packet  # type: ignore[import-untyped]
from engineio import payload as eio_payload
from socketio import packet as sio_packet  # type: ignore[import-untyped]

from proxy import browser
from proxy.identity import Identity
from proxy.owners import Owners

# OpenWebUI 0.12.4 raises python-engineio's payload limit (max_http_buffer_size) to 16 MiB
# for large notes; a polling body may be that long, and is buffered whole to be checked.
POLLING_BODY_LIMIT = 16 * 1024 * 1024
# What an OpenWebUI token is made of (a JWT: base64url and dots). Anything else cannot be
# a token OpenWebUI issued, and would only be sent on to it inside a header.
_TOKEN = re.compile(r"[!-~]{1,8192}")
_EVENTS = (sio_packet.EVENT, sio_packet.BINARY_EVENT)
_ACKS = (sio_packet.ACK, sio_packet.BINARY_ACK)
_BINARY = (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK)


class Refused(ValueError):
    """A message the guard will not pass (the message names why, never a token)."""


class _Attachment:
    """Stands for a binary attachment where a placeholder was: never a valid token."""


_ATTACHMENT = _Attachment()


class _Attachments:
    """``count`` attachments, indexed with exactly a list's rules, without building the list
    (the count is up to ten digits long)."""

    def __init__(self, count: int) -> None:
        self.slots = range(count)

    def __getitem__(self, index: Any) -> _Attachment:
        self.slots[index]  # IndexError / TypeError exactly where a list would raise
        return _ATTACHMENT


def _token_of(holder: dict[str, Any]) -> list[str]:
    """The token OpenWebUI reads from an ``auth`` object (``'token' in auth``), if any."""
    if "token" not in holder:
        return []
    token = holder["token"]
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise Refused("a token that is not a printable ASCII string")
    return [token]


def _socketio_tokens(text: str) -> list[str]:
    """Every token in one Socket.IO packet, decoded by python-socketio's ``Packet``."""
    try:
        packet = sio_packet.Packet(encoded_packet=text)
        data = packet.data
        if packet.packet_type in _BINARY:
            data = sio_packet.Packet.reconstruct_binary(data, _Attachments(packet.attachment_count))
    except Exception as exc:  # any failure: the server cannot use it, so nor do we
        raise Refused(f"not a Socket.IO packet ({type(exc).__name__})") from exc
    kind = packet.packet_type
    if kind == sio_packet.DISCONNECT:
        return []
    if kind == sio_packet.CONNECT:
        if data is None:
            return []
        if not isinstance(data, dict):
            raise Refused("CONNECT data that is not an object")
        return _token_of(data)
    if kind not in _EVENTS + _ACKS:
        raise Refused("a packet type clients do not send")  # CONNECT_ERROR, unknown
    if not isinstance(data, list) or (kind in _EVENTS and not data):
        raise Refused("event or acknowledgement data that is not a list")
    tokens: list[str] = []
    for argument in data[1:] if kind in _EVENTS else data:
        if isinstance(argument, dict) and "auth" in argument:
            auth = argument["auth"]
            if auth is None:
                continue  # OpenWebUI: "if not auth: return"
            if not isinstance(auth, dict):
                raise Refused("an auth that is not an object")
            tokens += _token_of(auth)
    return tokens


def _message_tokens(packet: Any) -> list[str]:
    """Every token in one decoded Engine.IO packet."""
    kind = packet.packet_type
    if kind not in range(len(eio_packet.packet_names)):
        raise Refused("unknown Engine.IO packet type")
    if kind != eio_packet.MESSAGE or packet.binary:
        return []
    if not isinstance(packet.data, str):
        # python-engineio JSON-decoded the body into something python-socketio cannot read
        raise Refused("an Engine.IO message that is JSON but not a string")
    return _socketio_tokens(packet.data)


def frame_tokens(frame: str) -> list[str]:
    """Every token in one WebSocket text frame; :class:`Refused` if the guard won't pass it."""
    try:
        packet = eio_packet.Packet(encoded_packet=frame)
    except Exception as exc:
        raise Refused(f"not an Engine.IO packet ({type(exc).__name__})") from exc
    return _message_tokens(packet)


def polling_tokens(body: bytes) -> list[str]:
    """Every token in one long-polling POST body (several packets, maybe a JSONP ``d=``)."""
    try:
        packets = eio_payload.Payload(encoded_payload=body.decode("utf-8")).packets
    except Exception as exc:
        raise Refused(f"not an Engine.IO payload ({type(exc).__name__})") from exc
    return [token for packet in packets for token in _message_tokens(packet)]


class TokenGuard:
    """Checks that every token in client Socket.IO traffic is the verified identity's own,
    asking OpenWebUI through :class:`~proxy.owners.Owners` (which caches the answers)."""

    def __init__(self, owners: Owners) -> None:
        self.owners = owners

    async def belongs(self, token: str, identity: Identity) -> bool:
        # Cannot tell (OpenWebUI unreachable or slow): raised as the upstream-failure table
        # says (a timeout is a 504; a WebSocket whose frame could not be checked is
        # closed), never passed and never called a forged token.
        answer = await self.owners.owner(token, identity)
        return isinstance(answer, Identity) and answer.email == identity.email

    async def _all_belong(self, tokens: list[str], identity: Identity) -> bool:
        for token in dict.fromkeys(tokens):
            if not await self.belongs(token, identity):
                return False
        return True

    async def frame_allowed(self, frame: str, identity: Identity, socketio_path: bool) -> bool:
        """A client text frame; off a Socket.IO path (:func:`is_socketio_path`) the tokens it
        would carry as Socket.IO, or as a first-message ``auth`` (:func:`message_tokens`),
        are checked, and anything else passes: OpenWebUI has other WebSockets (terminals,
        realtime audio) whose frames are not Socket.IO, and python-engineio serves no path
        but ``/ws/socket.io/...``."""
        try:
            tokens = frame_tokens(frame)
        except Refused:
            if socketio_path:
                return False
            tokens = []
        if not socketio_path:
            try:
                tokens = [*tokens, *message_tokens(frame)]
            except Refused:
                return False
        return await self._all_belong(tokens, identity)

    async def polling_payload_allowed(self, body: bytes, identity: Identity) -> bool:
        try:
            tokens = polling_tokens(body)
        except Refused:
            return False
        return await self._all_belong(tokens, identity)


def message_tokens(frame: str) -> list[str]:
    """Tokens a plain-JSON WebSocket would read from ``frame``.

    OpenWebUI 0.12.4's terminal and realtime-audio WebSockets authenticate from a first
    message ``{"type": "auth", "token": "<jwt>"}`` (``routers/terminals.py``,
    ``routers/audio/realtime.py``), and like Socket.IO never compare that token's user with
    the trusted header. Any JSON object with a ``token`` key counts, whatever its ``type``:
    a stricter reading than the servers' can only refuse more. Frames that are not a JSON
    object carry no such token (terminal keystrokes, audio events of other shapes).
    """
    text = frame.lstrip()
    if not text.startswith("{"):
        return []
    try:
        message = json.loads(text)
    except ValueError:
        return []  # neither server's JSON decoder (stdlib, orjson) reads more than stdlib's
    except RecursionError as exc:
        # Nested past this process's parser; a server with a higher recursion limit (or
        # orjson's 1,024 levels) may still read it, and a token in it: refused.
        raise Refused("a message nested too deeply to read") from exc
    if not isinstance(message, dict) or "token" not in message:
        return []
    token = message["token"]
    if not isinstance(token, str):
        raise Refused("a message's token is not a string")
    return [token]


def is_socketio_path(path: str) -> bool:
    """A (decoded) path that may reach OpenWebUI's Socket.IO app.

    python-engineio's ASGI app serves only paths starting with its path (``/ws/socket.io/``
    in OpenWebUI). Broader on purpose (socket.io anywhere, any case): a false positive only
    makes the guard stricter, a false negative would let a token through unchecked.
    """
    return "socket.io" in path.lower()


def is_polling_post(method: str, path: str) -> bool:
    """A request that may carry Socket.IO packets over HTTP long-polling."""
    return method == "POST" and is_socketio_path(path)


def polling_origin_allowed(
    method: str, origins: list[str], raw_query: str, public_origin: str
) -> bool:
    """The WebSocket ``Origin`` check, for Socket.IO over HTTP long-polling.

    A cross-origin browser request always carries ``Origin``, so one that does must be
    ours, exactly. Browsers leave it out on same-origin ``GET``s (the polling client's
    reads), so a ``GET``/``HEAD`` without one passes — unless it asks for JSONP (a ``j``
    parameter, read as python-engineio reads it): that answer is a script any page may
    include cross-site, and no Socket.IO client in use asks for it. Everything else (the
    POSTs that carry packets) must carry our ``Origin``.
    """
    if len(origins) > 1:
        return False
    if origins:
        return browser.origin_allowed(origins[0], public_origin)
    return method in ("GET", "HEAD") and "j" not in parse_qs(raw_query)


# python-engineio's own path in OpenWebUI 0.12.4 (``socketio_path='/ws/socket.io'``), as its
# ASGIApp holds it (a trailing slash added).
ENGINEIO_PATH = "/ws/socket.io/"


def serves_engineio(path: str) -> bool:
    """Whether python-engineio answers ``path`` (the server's reading: :attr:`Target.path`).

    Its ASGIApp's own test, exactly: the path, a trailing slash added, starts with its path
    (case-sensitive, dot segments unresolved). For positive decisions — a long-polling
    handshake's answer is sealed only here — where :func:`is_socketio_path`, broad on
    purpose, would let any endpoint whose answer a person controls (a file downloaded as
    ``.../content/socket.io``) mint a seal for an id of their choice.
    """
    return (path if path.endswith("/") else path + "/").startswith(ENGINEIO_PATH)
