"""The Socket.IO token guard: tokens inside Socket.IO messages must belong to the SSO user."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import WSMsgType

from proxy import owners, socketio
from proxy.eio_sessions import SessionSeals
from proxy.socketio import Refused, frame_tokens, polling_tokens
from tests.proxy.conftest import BOB_COOKIE

REFUSED = "refused"
OWN, STOLEN = "tok.bob@example.edu", "tok.alice@example.edu"


def _join(token: str, event: str = "user-join") -> str:
    return json.dumps([event, {"auth": {"token": token}}])


FRAMES = [
    ("connect auth", '40{"token":"t1"}', ["t1"]),
    ("connect to a namespace", '40/chat,{"token":"t1"}', ["t1"]),
    ("namespace with query", '40/chat?x=1,{"token":"t1"}', ["t1"]),
    ("connect without auth", "40", []),
    ("connect with empty auth", "40{}", []),
    ("user-join", "42" + _join("t2"), ["t2"]),
    ("join-note with ack id", '4217["join-note",{"auth":{"token":"t3"},"note_id":"n"}]', ["t3"]),
    ("namespaced event", "42/chat," + _join("t4", "join-channels"), ["t4"]),
    ("any event name", "42" + _join("t4", "some-future-event"), ["t4"]),
    ("every argument", '42["x",{},{"auth":{"token":"a"}},{"auth":{"token":"b"}}]', ["a", "b"]),
    ("acknowledgement arguments", '431[{"auth":{"token":"t9"}}]', ["t9"]),
    ("auth null is skipped as OpenWebUI does", '42["user-join",{"auth":null}]', []),
    ("duplicate keys: the last wins, as in both JSON codecs", '40{"token":"a","token":"b"}', ["b"]),
    ("escaped key", '40{"\\u0074oken":"t1"}', ["t1"]),
    ("ordinary event", '42["usage",{"model":"m"}]', []),
    ("token outside auth is not read by handlers", '42["x",{"token":"t"}]', []),
    ("disconnect", "41", []),
    ("engine.io ping probe", "2probe", []),
    ("engine.io pong", "3", []),
    ("engine.io upgrade", "5", []),
    ("base64 binary attachment", "bAAE=", []),
    # Packet types, ack ids and attachment counts are read with int(), which takes any
    # Unicode decimal digit.
    ("arabic-indic packet types", "\u0664\u06621" + _join("t5"), ["t5"]),
    ("fullwidth packet types", '\uff14\uff10{"token":"t6"}', ["t6"]),
    ("arabic-indic ack id", "42\u0663" + _join("t5"), ["t5"]),
    # Engine.IO JSON-decodes a body that does not start with a digit.
    ("socket.io packet inside a json string", "4" + json.dumps("2" + _join("t7")), ["t7"]),
    # Refused: the server would not decode it cleanly, or the guard cannot be sure.
    ("json that is not a string", '4{"token":"t8"}', REFUSED),
    ("broken json", '42["user-join",', REFUSED),
    ("empty message", "4", REFUSED),
    ("not socket.io at all", "hello", REFUSED),
    ("empty frame", "", REFUSED),
    ("engine.io type beyond the known ones", "9", REFUSED),
    ("socket.io type beyond the known ones", "47[]", REFUSED),
    ("connect_error from a client", '44{"message":"x"}', REFUSED),
    ("event data that is not a list", '42{"auth":{"token":"t"}}', REFUSED),
    ("event without a name", "42[]", REFUSED),
    ("connect data that is a string", '40"token"', REFUSED),
    ("auth that is not an object", '42["user-join",{"auth":"token"}]', REFUSED),
    ("token that is not a string", '40{"token":["t"]}', REFUSED),
    ("empty token", '40{"token":""}', REFUSED),
    ("token with CRLF", '40{"token":"t\\r\\nX: y"}', REFUSED),
    ("non-ascii token", '40{"token":"t\\u00e9"}', REFUSED),
    ("id field too long", "42" + "1" * 101 + _join("t"), REFUSED),
    (
        "binary event, token as attachment",
        '451-["user-join",{"auth":{"token":{"_placeholder":true,"num":0}}}]',
        REFUSED,
    ),
    (
        "binary event, auth as attachment",
        '451-["user-join",{"auth":{"_placeholder":true,"num":0}}]',
        REFUSED,
    ),
    (
        "binary event, attachment index out of range",
        '451-["x",{"_placeholder":true,"num":1}]',
        REFUSED,
    ),
    ("binary event, huge attachment count", "459999999999-" + _join("t"), ["t"]),
    ("placeholder in a plain event is just an object", '42["x",{"_placeholder":true,"num":0}]', []),
]


@pytest.mark.parametrize(("frame", "tokens"), [r[1:] for r in FRAMES], ids=[r[0] for r in FRAMES])
def test_tokens_in_frames(frame, tokens) -> None:
    if tokens == REFUSED:
        with pytest.raises(Refused):
            frame_tokens(frame)
    else:
        assert frame_tokens(frame) == tokens


CONNECT_STOLEN = '40{"token":"%s"}' % STOLEN  # noqa: UP031
BODIES = [
    ("one packet", CONNECT_STOLEN.encode(), [STOLEN]),
    ("several packets", b'42["usage",{}]\x1e' + CONNECT_STOLEN.encode(), [STOLEN]),
    # python-engineio reads a body starting with d= as JSONP: URL-decoded (parse_qs, first
    # d), then split. Today's main relayed these untouched.
    ("jsonp body", b"d=" + quote(CONNECT_STOLEN).encode(), [STOLEN]),
    ("jsonp body, plus for spaces", b"d=" + quote_plus(CONNECT_STOLEN).encode(), [STOLEN]),
    (
        "jsonp body, separator encoded",
        b"d=" + quote('42["usage",{}]\x1e' + CONNECT_STOLEN).encode(),
        [STOLEN],
    ),
    ("jsonp body, first d wins", b"d=" + quote(CONNECT_STOLEN).encode() + b"&d=40", [STOLEN]),
    (
        "jsonp body, percent-encoded unicode digits",
        b"d=" + quote('\u0664\u0660{"token":"' + STOLEN + '"}').encode(),
        [STOLEN],
    ),
    ("json string body", ("4" + json.dumps(CONNECT_STOLEN[1:])).encode(), [STOLEN]),
    ("base64 packets pass unread", b"b" + base64.b64encode(CONNECT_STOLEN.encode()), []),
    ("empty body", b"", []),
    ("jsonp body without a value", b"d=", REFUSED),
    ("empty packet between separators", b"40\x1e\x1e40", REFUSED),
    ("seventeen packets (python-engineio takes 16)", b"\x1e".join([b"3"] * 17), REFUSED),
    ("not utf-8", CONNECT_STOLEN.encode() + b"\xff", REFUSED),
]


@pytest.mark.parametrize(("body", "tokens"), [r[1:] for r in BODIES], ids=[r[0] for r in BODIES])
def test_tokens_in_polling_bodies(body, tokens) -> None:
    if tokens == REFUSED:
        with pytest.raises(Refused):
            polling_tokens(body)
    else:
        assert polling_tokens(body) == tokens


def test_cache_key_is_injective() -> None:
    """No (token, email) pair shares a key with another, whatever the separators."""
    pairs = [
        ("a", "b\x00c"),
        ("a\x00b", "c"),
        ("ab", "c"),
        ("a", "bc"),
        ("a", "b\ud800"),  # a lone surrogate (JSON can carry one) must neither crash nor merge
        ("a", "b\ufffd"),
        ("a", "b?"),
        # The length prefix's own characters inside the values, and empty values.
        ("1:a", ""),
        ("1", ":a"),
        ("", "1:a"),
        ("a", ""),
        ("", "a"),
        ("10:", "aaaaaaa"),
        # A surrogate pair as two code points, and the character it stands for.
        ("\ud83d\ude00", ""),
        ("\U0001f600", ""),
        ("\ud83d", "\ude00"),
    ]
    keys = {owners.cache_key(token, email) for token, email in pairs}
    assert len(keys) == len(pairs)


PUBLIC_ORIGIN = "https://chat.example.edu"
ORIGINS = [
    ("get without origin (same-origin browser read)", "GET", [], "EIO=4&transport=polling", True),
    ("get with our origin", "GET", [PUBLIC_ORIGIN], "EIO=4", True),
    ("get from another site", "GET", ["https://evil.example"], "EIO=4", False),
    ("get with origin null", "GET", ["null"], "EIO=4", False),
    ("two origins", "GET", [PUBLIC_ORIGIN, "https://evil.example"], "EIO=4", False),
    ("jsonp get without origin (script tag)", "GET", [], "EIO=4&transport=polling&j=0", False),
    ("jsonp get, key percent-encoded", "GET", [], "EIO=4&%6A=0", False),
    ("jsonp get with our origin", "GET", [PUBLIC_ORIGIN], "j=0", True),
    ("post with our origin", "POST", [PUBLIC_ORIGIN], "EIO=4", True),
    ("post without origin", "POST", [], "EIO=4", False),
    ("post from another site", "POST", ["https://evil.example"], "EIO=4", False),
    ("options preflight from another site", "OPTIONS", ["https://evil.example"], "", False),
]


@pytest.mark.parametrize(
    ("method", "origins", "query", "allowed"), [r[1:] for r in ORIGINS], ids=[r[0] for r in ORIGINS]
)
def test_polling_origin_policy(method, origins, query, allowed) -> None:
    assert socketio.polling_origin_allowed(method, origins, query, PUBLIC_ORIGIN) is allowed


async def _closed(ws) -> int | None:
    msg = await ws.receive(timeout=10)
    assert msg.type == WSMsgType.CLOSE
    return msg.data


SOCKET = "/ws/socket.io/?EIO=4&transport=websocket"


async def test_own_token_passes_anothers_closes_the_socket(proxy, fake_upstream) -> None:
    async with proxy.ws_connect(SOCKET, headers=BOB_COOKIE) as ws:
        own = '40{"token":"%s"}' % OWN  # noqa: UP031
        await ws.send_str(own)
        assert (await ws.receive(timeout=10)).data == own
        stolen = "42" + _join(STOLEN)
        await ws.send_str(stolen)
        assert await _closed(ws) == 1008
    assert own in fake_upstream.ws_received
    assert stolen not in fake_upstream.ws_received


async def test_anothers_token_closes_the_socket_without_openwebuis_mismatch_check(
    proxy, fake_upstream
) -> None:
    # OpenWebUI before 0.6.14 answers 200 with the token's own user, whatever email header
    # comes along: the guard compares that user with the identity itself.
    fake_upstream.mismatch_check = False
    async with proxy.ws_connect(
        "/ws/socket.io/?EIO=4&transport=websocket", headers=BOB_COOKIE
    ) as ws:
        own = '40{"token":"tok.bob@example.edu"}'
        await ws.send_str(own)
        assert (await ws.receive(timeout=10)).data == own
        stolen = '42["user-join",{"auth":{"token":"tok.alice@example.edu"}}]'
        await ws.send_str(stolen)
        assert await _closed(ws) == 1008
    assert stolen not in fake_upstream.ws_received


@pytest.mark.parametrize(
    "frame",
    [
        CONNECT_STOLEN,
        '451-["user-join",{"auth":{"token":{"_placeholder":true,"num":0}}}]',
        '40{"token":"tok.alice@example.edu\\r\\nX: y"}',
        "\u0664\u06621" + _join(STOLEN),
        '\uff14\uff10{"token":"%s"}' % STOLEN,  # noqa: UP031
        "4" + json.dumps(CONNECT_STOLEN[1:]),
        '42["user-join",',
    ],
    ids=[
        "another user's token at connect",
        "token as binary attachment",
        "token with CRLF",
        "arabic-indic packet types",
        "fullwidth packet types",
        "packet inside a json string",
        "undecodable",
    ],
)
async def test_refused_frames_never_reach_upstream(proxy, fake_upstream, frame) -> None:
    async with proxy.ws_connect(SOCKET, headers=BOB_COOKIE) as ws:
        await ws.send_str(frame)
        assert await _closed(ws) == 1008
    await asyncio.sleep(0)
    assert fake_upstream.ws_received == []


async def test_other_websockets_pass_what_is_not_socketio(proxy, fake_upstream) -> None:
    """OpenWebUI's terminal and realtime-audio WebSockets are not Socket.IO: their frames
    pass, but a Socket.IO packet with another user's token is still refused there."""
    async with proxy.ws_connect("/ws", headers=BOB_COOKIE) as ws:
        for frame in ('{"type":"input","data":"ls"}', "4", '42["user-join",'):
            await ws.send_str(frame)
            assert (await ws.receive(timeout=10)).data == frame
        await ws.send_str(CONNECT_STOLEN)
        assert await _closed(ws) == 1008
    assert CONNECT_STOLEN not in fake_upstream.ws_received


FIRST_MESSAGE_STOLEN = [
    '{"type":"auth","token":"%s"}' % STOLEN,  # noqa: UP031 - terminals, realtime audio
    ' {"token":"%s","type":"auth","chat_id":"c"}' % STOLEN,  # noqa: UP031
    '{"type":"anything","token":"%s"}' % STOLEN,  # noqa: UP031 - stricter than the servers
    '{"type":"auth","token":["%s"]}' % STOLEN,  # noqa: UP031 - not a string: refused
]


@pytest.mark.parametrize("frame", FIRST_MESSAGE_STOLEN)
async def test_first_message_auth_on_other_websockets_must_be_the_users_token(
    proxy, fake_upstream, frame: str
) -> None:
    """OpenWebUI's terminal and realtime-audio WebSockets read a token from a first JSON
    message and never compare it with the trusted header: another user's is refused."""
    # (The fake upgrades /ws only; to the guard any path off Socket.IO is the same.)
    async with proxy.ws_connect("/ws", headers=BOB_COOKIE) as ws:
        await ws.send_str(frame)
        assert await _closed(ws) == 1008
    assert frame not in fake_upstream.ws_received


async def test_first_message_auth_with_the_users_own_token_passes(proxy, fake_upstream) -> None:
    frame = '{"type":"auth","token":"%s"}' % OWN  # noqa: UP031
    async with proxy.ws_connect("/ws", headers=BOB_COOKIE) as ws:
        await ws.send_str(frame)
        assert (await ws.receive(timeout=10)).data == frame


async def test_checks_are_cached_per_token_and_user(proxy, fake_upstream) -> None:
    async with proxy.ws_connect(SOCKET, headers=BOB_COOKIE) as ws:
        for _ in range(3):
            await ws.send_str('40{"token":"%s"}' % OWN)  # noqa: UP031
            assert (await ws.receive(timeout=10)).type == WSMsgType.TEXT
    checks = [s for s in fake_upstream.seen if s.raw_path == "/api/v1/auths/"]
    assert len(checks) == 1
    assert checks[0].values("Authorization") == [f"Bearer {OWN}"]
    assert checks[0].values("X-User-Email") == ["bob@example.edu"]


POLL = "/ws/socket.io/?EIO=4&transport=polling&sid=abc"
# What Bob's browser sends for that session: the id sealed for him (test_engineio_sessions.py).
BOBS_POLL = POLL.replace("abc", SessionSeals().seal("abc", "bob@example.edu"))


@pytest.mark.parametrize(
    "payload",
    [
        b'40{"token":"%s"}\x1e42["usage",{"model":"m"}]' % OWN.encode(),
        b"d=" + quote('40{"token":"%s"}' % OWN).encode(),  # noqa: UP031
    ],
    ids=["packets", "jsonp body"],
)
async def test_polling_payload_own_token_relayed_exactly(proxy, fake_upstream, payload) -> None:
    response = await proxy.post(BOBS_POLL, data=payload, headers=BOB_COOKIE)
    assert response.status == 200
    relayed = fake_upstream.last()
    assert relayed.raw_path == POLL
    assert relayed.body == payload
    assert relayed.values("Content-Length") == [str(len(payload))]


@pytest.mark.parametrize(
    "payload",
    [
        CONNECT_STOLEN.encode(),
        b'42["usage",{}]\x1e42' + _join(STOLEN).encode(),
        b"d=" + quote(CONNECT_STOLEN).encode(),
        b"d=" + quote('42["usage",{}]\x1e' + CONNECT_STOLEN).encode(),
        b'40{"token":"%s"}\xff' % OWN.encode(),
    ],
    ids=[
        "another user's token",
        "stolen token in the second packet",
        "jsonp body",
        "jsonp body, second packet",
        "not UTF-8",
    ],
)
async def test_polling_payload_refused(proxy, fake_upstream, payload) -> None:
    response = await proxy.post(BOBS_POLL, data=payload, headers=BOB_COOKIE)
    assert response.status == 403
    assert all(seen.raw_path != POLL for seen in fake_upstream.seen)


async def test_polling_payload_size_capped(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(max_body_bytes=64 * 1024 * 1024)
    body = b"4" + b"x" * socketio.POLLING_BODY_LIMIT
    response = await proxy.post(BOBS_POLL, data=body, headers=BOB_COOKIE)
    assert response.status == 413
    assert fake_upstream.seen == []


async def test_polling_origin_checked_at_the_edge(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(public_url=PUBLIC_ORIGIN)
    own = b'40{"token":"%s"}' % OWN.encode()
    cases = [
        ("GET", {}, 200),
        ("GET", {"Origin": "https://evil.example"}, 403),
        ("POST", {"Origin": "https://evil.example"}, 403),
        ("POST", {}, 403),
        ("POST", {"Origin": PUBLIC_ORIGIN}, 200),
    ]
    for method, extra, status in cases:
        fake_upstream.seen.clear()
        response = await proxy.request(
            method,
            BOBS_POLL,
            data=own if method == "POST" else None,
            headers={**BOB_COOKIE, **extra},
        )
        assert (method, extra, response.status) == (method, extra, status)
        relayed = [s for s in fake_upstream.seen if s.raw_path == POLL]
        assert len(relayed) == (1 if status == 200 else 0)
    jsonp = await proxy.get(BOBS_POLL + "&j=0", headers=BOB_COOKIE)
    assert jsonp.status == 403


async def test_a_refused_token_is_logged_by_pseudonym_when_logs_are_pseudonymised(
    make_proxy, tmp_path
) -> None:
    from structlog.testing import capture_logs

    from tests.proxy.test_logs import key_file, pseudonym_of

    proxy = await make_proxy(log_pseudonym_key_file=str(key_file(tmp_path)))
    with capture_logs() as logs:
        response = await proxy.post(BOBS_POLL, data=CONNECT_STOLEN.encode(), headers=BOB_COOKIE)
    assert response.status == 403
    (refused,) = [line for line in logs if line["event"] == "socketio_token_refused"]
    assert refused["pseudonym"] == pseudonym_of("bob@example.edu")
    assert "bob@example.edu" not in repr(logs)
