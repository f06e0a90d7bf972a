"""Differential test: the Socket.IO guard against the server's own decoders and handlers.

The same generated client traffic goes to the guard (``proxy.socketio``) and to a model
of OpenWebUI 0.12.4's Socket.IO server built from the real pieces: python-engineio's
``Payload`` and ``Packet``, python-socketio's ``Packet`` (as OpenWebUI's
``JSONOnlyPacket``), both JSON codecs OpenWebUI may run with (orjson with stdlib
fallback, its default; engineio's stdlib codec with ``ENABLE_ORJSON=false``), and the
token reads of its ``connect``, ``user-join``, ``join-channels`` and ``join-note``
handlers, copied from ``socket/main.py``. Only what the guard lets through reaches the
model (a refused WebSocket frame closes the socket; a refused polling body is a 403 and
later bodies still go). The property: the server never reads a token that is not the
user's own.

Where the model cannot know the server's state it takes both branches: whether a binary
packet is accepted (its namespace connected) decides whether the next messages are
attachments or packets.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import engineio.json
import engineio.packet
import engineio.payload
import orjson
import socketio.packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.socketio import Refused, frame_tokens, polling_tokens

OWN = "eyJown.payload.signature"
FOREIGN = "eyJvictim.payload.signature"
PROFILE = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the server, from its own parts ---------------------------------------------------------


class ORJSONCodec:
    """OpenWebUI 0.12.4's ``utils/json_codec.py`` (``ENABLE_ORJSON``, default on), loads side."""

    JSONDecodeError = engineio.json.JSONDecodeError
    dumps = staticmethod(engineio.json.dumps)

    @staticmethod
    def loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return engineio.json.loads(s, *args, **kwargs)
        try:
            return orjson.loads(s)
        except (TypeError, ValueError):
            return engineio.json.loads(s, *args, **kwargs)


CODECS = {"orjson": ORJSONCodec, "stdlib": engineio.json}


class JSONOnlyPacket(socketio.packet.Packet):
    """OpenWebUI 0.12.4's packet class (``socket/main.py``)."""

    uses_binary_events = False

    @classmethod
    def reconstruct_binary(cls, data: Any, attachments: list[Any]) -> Any:
        return super().reconstruct_binary(data, [list(attachment) for attachment in attachments])


@contextlib.contextmanager
def server_codec(codec: Any) -> Iterator[None]:
    """What ``socketio.AsyncServer(json=codec, serializer=JSONOnlyPacket)`` sets up."""
    saved = engineio.packet.Packet.json, JSONOnlyPacket.json
    engineio.packet.Packet.json = JSONOnlyPacket.json = codec
    try:
        yield
    finally:
        engineio.packet.Packet.json, JSONOnlyPacket.json = saved


class Server:
    """One Engine.IO session: python-socketio's message dispatch, OpenWebUI's token reads."""

    def __init__(self, binary_accepted: bool) -> None:
        self.binary_accepted = binary_accepted
        self.pending: JSONOnlyPacket | None = None
        self.read: list[Any] = []  # every value handed to get_verified_user_by_token

    def message(self, data: Any) -> None:
        """``AsyncServer._handle_eio_message``; an exception ends this message only."""
        with contextlib.suppress(Exception):
            if self.pending is not None:
                if self.pending.add_attachment(data):
                    packet, self.pending = self.pending, None
                    if packet.packet_type == socketio.packet.BINARY_EVENT:
                        self.event(packet.data)
                return
            packet = JSONOnlyPacket(encoded_packet=data)
            if packet.packet_type == socketio.packet.CONNECT:
                self.connect(packet.data)
            elif packet.packet_type == socketio.packet.EVENT:
                self.event(packet.data)
            elif packet.packet_type in (socketio.packet.BINARY_EVENT, socketio.packet.BINARY_ACK):
                if not self.binary_accepted:
                    raise ValueError("Unexpected binary packet")
                self.pending = packet

    def connect(self, auth: Any) -> None:
        if auth and "token" in auth:
            self.read.append(auth["token"])

    def event(self, data: Any) -> None:
        name, args = data[0], data[1:]
        if name not in ("user-join", "join-channels", "join-note") or len(args) != 1:
            return  # no such handler, or one it cannot be called with
        (data,) = args
        # OpenWebUI's two spellings (user-join; join-channels and join-note), kept as written.
        auth = data.get("auth") if name == "user-join" else data["auth"] if "auth" in data else None  # noqa: SIM401
        if not auth or "token" not in auth:
            return
        self.read.append(auth["token"])

    def engineio(self, packet: Any) -> None:
        """``AsyncSocket.receive``: a MESSAGE goes to Socket.IO (``packet_names`` first)."""
        with contextlib.suppress(IndexError):
            engineio.packet.packet_names[packet.packet_type]
            if packet.packet_type == engineio.packet.MESSAGE:
                self.message(packet.data)

    def websocket(self, frames: list[str | bytes]) -> None:
        """``AsyncSocket._websocket_handler``: a frame it cannot decode ends the socket."""
        for frame in frames:
            try:
                packet = engineio.packet.Packet(encoded_packet=frame)
            except Exception:
                return
            self.engineio(packet)

    def polling(self, bodies: list[bytes]) -> None:
        """``AsyncSocket.handle_post_request``, one POST after the other."""
        for body in bodies:
            with contextlib.suppress(Exception):  # a body it cannot decode: none of it is used
                text = body.decode("utf-8")
                for packet in engineio.payload.Payload(encoded_payload=text).packets:
                    self.engineio(packet)


def server_reads(kind: str, traffic: list[Any]) -> list[Any]:
    """Every token the server reads from ``traffic``, in any of its configurations."""
    read: list[Any] = []
    for codec in CODECS.values():
        for binary_accepted in (True, False):
            server = Server(binary_accepted)
            with server_codec(codec):
                getattr(server, kind)(traffic)
            read += server.read
    return read


# --- the guard -------------------------------------------------------------------------------


def _passes(tokens_of: Any, message: Any) -> bool:
    """The guard's decision, OpenWebUI answering yes for the user's own token only."""
    try:
        return all(token == OWN for token in tokens_of(message))
    except Refused:
        return False


def through_websocket(frames: list[str | bytes]) -> list[str | bytes]:
    """What reaches the server: binary frames pass unread, a refused text frame closes."""
    relayed: list[str | bytes] = []
    for frame in frames:
        if isinstance(frame, str) and not _passes(frame_tokens, frame):
            break
        relayed.append(frame)
    return relayed


def through_polling(bodies: list[bytes]) -> list[bytes]:
    """What reaches the server: each POST on its own, a refused one is a 403."""
    return [body for body in bodies if _passes(polling_tokens, body)]


# --- near-valid client traffic -----------------------------------------------------------------
# Strategies are built once, here: hypothesis validates every new strategy object, which
# would dominate the run if composites built them per draw.


def _flat(units: list[list[Any]]) -> list[Any]:
    return [message for unit in units for message in unit]


# Each digit as int() reads it: ASCII most often, else Arabic-Indic, fullwidth, Devanagari.
DIGIT = [
    st.sampled_from([str(d)] * 4 + [chr(0x660 + d), chr(0xFF10 + d), chr(0x966 + d)])
    for d in range(10)
]
ANY_DIGIT = st.integers(0, 9).flatmap(DIGIT.__getitem__)
NUMBER = st.lists(ANY_DIGIT, min_size=1, max_size=3).map("".join)
ATTACHMENT_COUNT = st.sampled_from(["", ""]) | st.lists(ANY_DIGIT, min_size=1, max_size=2).map(
    lambda n: "".join(n) + "-"
)
ACK_ID = st.one_of(st.just(""), st.just(""), NUMBER)
NAMESPACE = st.sampled_from(["", "", "/,", "/chat,", "/chat?x=1,", "/nocomma"])
KIND = st.sampled_from([0] * 4 + [2] * 4 + [5] * 2 + [1, 3, 6, 4, 7])
MANGLE = st.sampled_from(["none"] * 10 + ["cut", "insert"])
POSITION = st.integers(0, 10_000)
NOISE = st.text(max_size=2)

placeholder = st.builds(
    lambda num: {"_placeholder": True, "num": num}, st.integers(-2, 2) | st.just(True)
)
TOKEN = st.sampled_from([OWN] * 3 + [FOREIGN] * 4 + ["", OWN + "\r\n", FOREIGN + "\u00e9"])
# Mostly the shapes handlers read (one_of picks each listed branch about equally often),
# sometimes anything near them.
token_value: st.SearchStrategy[Any] = st.one_of(
    TOKEN,
    TOKEN,
    TOKEN,
    placeholder,
    st.lists(TOKEN, max_size=2),
    st.sampled_from([None, 0, {}]),
)
# Objects as (key, value) pairs, so duplicate keys survive into the JSON text.
auth_value: st.SearchStrategy[Any] = st.one_of(
    token_value.map(lambda token: ("object", [("token", token)])),
    token_value.map(lambda token: ("object", [("token", token)])),
    st.lists(st.tuples(st.sampled_from(["token", "token", "other"]), token_value), max_size=3).map(
        lambda pairs: ("object", pairs)
    ),
    placeholder,
    st.sampled_from([None, "token", ["token"], {}]),
)
CONNECT_DATA = auth_value | st.none()
argument: st.SearchStrategy[Any] = st.one_of(
    auth_value.map(lambda auth: ("object", [("auth", auth)])),
    auth_value.map(lambda auth: ("object", [("auth", auth), ("note_id", "n")])),
    st.lists(
        st.tuples(st.sampled_from(["auth", "auth", "note_id", "token"]), auth_value), max_size=3
    ).map(lambda pairs: ("object", pairs)),
    placeholder,
    st.sampled_from(["x", 1, None, []]),
)
EVENT_NAME = st.sampled_from(["user-join", "join-channels", "join-note", "usage", "a:b:c", ""])
EVENT_DATA = st.one_of(
    st.tuples(EVENT_NAME, argument).map(list),
    st.tuples(EVENT_NAME, argument).map(list),
    st.tuples(EVENT_NAME, st.lists(argument, max_size=3)).map(lambda e: [e[0], *e[1]]),
)


def to_json(value: Any, escape: bool) -> str:
    """JSON text of ``value``; ``("object", pairs)`` keeps duplicate keys, in order."""
    if isinstance(value, tuple) and value and value[0] == "object":
        items = []
        for key, item in value[1]:
            name = "".join(f"\\u{ord(c):04x}" for c in key) if escape else key
            items.append(f'"{name}":{to_json(item, escape)}')
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, escape) for item in value) + "]"
    if isinstance(value, dict):
        return to_json(("object", list(value.items())), escape)
    return json.dumps(value, ensure_ascii=escape)


@st.composite
def socketio_packet(draw: st.DrawFn) -> str:
    """A Socket.IO packet: type, attachment count, namespace, ack id, data; maybe mangled."""
    kind = draw(KIND)
    data = draw(CONNECT_DATA if kind == 0 else EVENT_DATA)
    body = "" if data is None else to_json(data, draw(st.booleans()))
    packet = draw(DIGIT[kind]) + draw(ATTACHMENT_COUNT) + draw(NAMESPACE) + draw(ACK_ID) + body
    mangle = draw(MANGLE)
    if mangle == "cut" and packet:
        packet = packet[: draw(POSITION) % len(packet)]
    elif mangle == "insert":
        at = draw(POSITION) % (len(packet) + 1)
        packet = packet[:at] + draw(NOISE) + packet[at:]
    return packet


SOCKETIO_PACKET = socketio_packet()
TEXT_SHAPE = st.sampled_from(["message"] * 4 + ["json-string"] * 3 + ["attachment", "other"])
TEXT_ATTACHMENT = st.sampled_from([OWN, FOREIGN, ""])
OTHER_ENGINEIO = st.sampled_from(["2probe", "3", "5", "6", "1", "9", "", "b", "bAAE="])
BINARY_ATTACHMENT = st.sampled_from([FOREIGN.encode(), OWN.encode(), b"\x00\x01"])


@st.composite
def engineio_text(draw: st.DrawFn) -> str:
    """An Engine.IO text packet: mostly a MESSAGE, plainly or as a JSON string."""
    shape = draw(TEXT_SHAPE)
    if shape == "message":
        return draw(DIGIT[4]) + draw(SOCKETIO_PACKET)
    if shape == "json-string":
        return draw(DIGIT[4]) + json.dumps(draw(SOCKETIO_PACKET))
    if shape == "attachment":  # a text message the server may take as an attachment
        return "4" + draw(TEXT_ATTACHMENT)
    return draw(OTHER_ENGINEIO)


ENGINEIO_TEXT = engineio_text()
PLACEHOLDER = {"_placeholder": True, "num": 0}
# A binary event whose token is its attachment, then the attachment: as a frame (binary or
# text) on a WebSocket, base64 or text in a polling payload.
BINARY_EVENT = st.builds(
    lambda digit, name: (
        "4" + digit + "1-" + to_json([name, {"auth": {"token": PLACEHOLDER}}], False)
    ),
    DIGIT[5],
    st.sampled_from(["user-join", "join-note"]),
)
PLACEHOLDER = {"_placeholder": True, "num": 0}
TEXT_ATTACHMENT_FRAME = TEXT_ATTACHMENT.map(lambda t: "4" + t)
BASE64 = BINARY_ATTACHMENT.map(lambda b: "b" + base64.b64encode(b).decode())
POLLING_UNIT = st.one_of(
    ENGINEIO_TEXT.map(lambda p: [p]),
    ENGINEIO_TEXT.map(lambda p: [p]),
    BASE64.map(lambda p: [p]),
    st.tuples(BINARY_EVENT, BASE64 | TEXT_ATTACHMENT_FRAME).map(list),
)
PACKETS = st.lists(POLLING_UNIT, min_size=1, max_size=3).map(_flat) | st.just(["3"] * 17)
BODY_SHAPE = st.sampled_from(["raw"] * 3 + ["d", "d+", "d-partial", "d-twice", "x&d"])
SAFE = st.sampled_from(["", "/", '[]{}":,'])
NOT_UTF8 = st.sampled_from([b""] * 9 + [b"\xff"])


@st.composite
def polling_body(draw: st.DrawFn) -> bytes:
    """A long-polling POST body: packets joined by \\x1e, maybe as JSONP ``d=``, maybe not
    UTF-8."""
    payload = "\x1e".join(draw(PACKETS))
    shape = draw(BODY_SHAPE)
    if shape == "d":
        payload = "d=" + quote(payload, safe=draw(SAFE))
    elif shape == "d+":
        payload = "d=" + quote_plus(payload)
    elif shape == "d-partial":  # only the characters a form must escape
        payload = "d=" + payload.replace("%", "%25").replace("&", "%26").replace("+", "%2B")
    elif shape == "d-twice":
        payload = "d=" + quote(payload) + "&d=" + quote(draw(ENGINEIO_TEXT))
    elif shape == "x&d":  # not JSONP: python-engineio only looks at the first two characters
        payload = "x=1&d=" + quote(payload)
    return payload.encode("utf-8", "surrogatepass") + draw(NOT_UTF8)


# Plus any text at all, now and then.
POLLING_BODY = polling_body() | st.text(max_size=40).map(
    lambda t: t.encode("utf-8", "surrogatepass")
)
_SINGLE_TEXT = ENGINEIO_TEXT.map(lambda f: [f])
WEBSOCKET_UNIT = st.one_of(
    _SINGLE_TEXT,
    _SINGLE_TEXT,
    _SINGLE_TEXT,
    BINARY_ATTACHMENT.map(lambda f: [f]),
    st.text(max_size=20).map(lambda f: [f]),
    st.tuples(BINARY_EVENT, BINARY_ATTACHMENT | TEXT_ATTACHMENT_FRAME).map(list),
)
websocket_sessions = st.lists(WEBSOCKET_UNIT, min_size=1, max_size=3).map(_flat)
polling_sessions = st.lists(POLLING_BODY, min_size=1, max_size=3)


# --- the property ------------------------------------------------------------------------------


def _foreign(read: list[Any]) -> bool:
    return any(token != OWN for token in read)


def _features(kind: str, message: str | bytes) -> set[str]:
    """The spellings in one WebSocket frame or polling body."""
    if isinstance(message, bytes) and kind == "websocket":
        return {"binary frame"}
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    found = set()
    if text.startswith("d="):
        found.add("jsonp")
        text = parse_qs(text).get("d", [""])[0]
    packets = text.split("\x1e")
    if len(packets) > 1:
        found.add("several packets")
    for packet in packets:
        if any(c.isdecimal() and not c.isascii() for c in packet[:2]):
            found.add("unicode digits")
        if packet[1:2] == '"':
            found.add("json string")
        if packet.startswith("b"):
            found.add("base64 attachment")
    return found


def _reach(kind: str, traffic: list[Any]) -> set[str]:
    """The spellings of the messages that made the server read a foreign token, the guard
    left out: proof the generators reach the server's token reads, else the property
    would hold vacuously."""
    reached: set[str] = set()
    before = 0
    for end in range(1, len(traffic) + 1):
        message = traffic[end - 1]
        foreign = sum(token != OWN for token in server_reads(kind, traffic[:end]))
        if foreign > before or _foreign(server_reads(kind, [message])):  # here, or alone
            reached |= {"any", *_features(kind, message)}
        before = foreign
    return reached


def test_websocket_guard_never_passes_a_token_the_server_reads() -> None:
    reached: set[str] = set()

    @PROFILE
    @given(frames=websocket_sessions)
    def check(frames: list[str | bytes]) -> None:
        reached.update(_reach("websocket", frames))
        read = server_reads("websocket", through_websocket(frames))
        assert not _foreign(read), read

    check()
    assert reached >= {"any", "binary frame", "unicode digits", "json string"}, reached


def test_polling_guard_never_passes_a_token_the_server_reads() -> None:
    reached: set[str] = set()

    @PROFILE
    @given(bodies=polling_sessions)
    def check(bodies: list[bytes]) -> None:
        reached.update(_reach("polling", bodies))
        read = server_reads("polling", through_polling(bodies))
        assert not _foreign(read), read

    check()
    wanted = {
        "any",
        "jsonp",
        "several packets",
        "unicode digits",
        "json string",
        "base64 attachment",
    }
    assert reached >= wanted, reached
