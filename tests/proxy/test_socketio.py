"""The Socket.IO token guard: tokens inside Socket.IO frames must belong to the SSO user."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType

from proxy.socketio import tokens_in
from tests.proxy.conftest import BOB_COOKIE

PLACEHOLDER = {"_placeholder": True, "num": 0}
FRAMES = [
    ("connect auth", '40{"token":"t1"}', ["t1"]),
    ("connect to a namespace", '40/chat,{"token":"t1"}', ["t1"]),
    ("namespace with query", '40/chat?x=1,{"token":"t1"}', ["t1"]),
    ("connect without auth", "40", []),
    ("connect with empty auth", "40{}", []),
    ("user-join", '42["user-join",{"auth":{"token":"t2"}}]', ["t2"]),
    ("join-note with ack id", '4217["join-note",{"auth":{"token":"t3"},"note_id":"n"}]', ["t3"]),
    ("namespaced event", '42/chat,["join-channels",{"auth":{"token":"t4"}}]', ["t4"]),
    (
        "binary event, token as attachment",
        '451-["user-join",{"auth":{"token":{"_placeholder":true,"num":0}}}]',
        [PLACEHOLDER],
    ),
    ("duplicate keys: the last wins, as in json.loads", '40{"token":"a","token":"b"}', ["b"]),
    ("ordinary event", '42["usage",{"model":"m"}]', []),
    ("token outside auth is not read by handlers", '42["x",{"token":"t"}]', []),
    ("engine.io ping", "2", []),
    ("engine.io probe", "3probe", []),
    ("broken json is dropped by python-socketio too", '42["user-join",', []),
    ("not socket.io at all", "hello", []),
    # Packet types are read with int(), which takes any Unicode decimal digit.
    (
        "arabic-indic digits as packet types",
        '\u0664\u06621["user-join",{"auth":{"token":"t5"}}]',
        ["t5"],
    ),
    ("fullwidth digits as packet types", '\uff14\uff10{"token":"t6"}', ["t6"]),
    # Engine.IO JSON-decodes a body that does not start with a digit: a JSON string holding
    # a Socket.IO packet reaches Socket.IO as that packet.
    (
        "socket.io packet inside a json string",
        '4"2[\\"user-join\\",{\\"auth\\":{\\"token\\":\\"t7\\"}}]"',
        ["t7"],
    ),
    ("json that is not a string is refused whole", '4{"token":"t8"}', [{"token": "t8"}]),
    ("base64 binary attachment", "bAAE=", []),
]


@pytest.mark.parametrize(("frame", "tokens"), [r[1:] for r in FRAMES], ids=[r[0] for r in FRAMES])
def test_tokens_in_frames(frame, tokens) -> None:
    assert tokens_in(frame) == tokens


async def _closed(ws) -> int | None:
    msg = await ws.receive(timeout=10)
    assert msg.type == WSMsgType.CLOSE
    return msg.data


async def test_own_token_passes_anothers_closes_the_socket(proxy, fake_upstream) -> None:
    async with proxy.ws_connect(
        "/ws/socket.io/?EIO=4&transport=websocket", headers=BOB_COOKIE
    ) as ws:
        own = '40{"token":"tok.bob@example.edu"}'
        await ws.send_str(own)
        assert (await ws.receive(timeout=10)).data == own
        stolen = '42["user-join",{"auth":{"token":"tok.alice@example.edu"}}]'
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
        '40{"token":"tok.alice@example.edu"}',
        '451-["user-join",{"auth":{"token":{"_placeholder":true,"num":0}}}]',
        '40{"token":"tok.alice@example.edu\\r\\nX: y"}',
        '\u0664\u06621["user-join",{"auth":{"token":"tok.alice@example.edu"}}]',
        '\uff14\uff10{"token":"tok.alice@example.edu"}',
        '4"0{\\"token\\":\\"tok.alice@example.edu\\"}"',
    ],
    ids=[
        "another user's token at connect",
        "token as binary attachment",
        "token with CRLF",
        "arabic-indic packet types",
        "fullwidth packet types",
        "packet inside a json string",
    ],
)
async def test_refused_frames_never_reach_upstream(proxy, fake_upstream, frame) -> None:
    async with proxy.ws_connect("/ws", headers=BOB_COOKIE) as ws:
        await ws.send_str(frame)
        assert await _closed(ws) == 1008
    await asyncio.sleep(0)
    assert fake_upstream.ws_received == []


async def test_checks_are_cached_per_token_and_user(proxy, fake_upstream) -> None:
    async with proxy.ws_connect("/ws", headers=BOB_COOKIE) as ws:
        for _ in range(3):
            await ws.send_str('40{"token":"tok.bob@example.edu"}')
            assert (await ws.receive(timeout=10)).type == WSMsgType.TEXT
    checks = [s for s in fake_upstream.seen if s.raw_path == "/api/v1/auths/"]
    assert len(checks) == 1
    assert checks[0].values("Authorization") == ["Bearer tok.bob@example.edu"]
    assert checks[0].values("X-User-Email") == ["bob@example.edu"]


POLL = "/ws/socket.io/?EIO=4&transport=polling&sid=abc"


async def test_polling_payload_own_token_relayed_exactly(proxy, fake_upstream) -> None:
    payload = b'40{"token":"tok.bob@example.edu"}\x1e42["usage",{"model":"m"}]'
    response = await proxy.post(POLL, data=payload, headers=BOB_COOKIE)
    assert response.status == 200
    relayed = fake_upstream.last()
    assert relayed.raw_path == POLL
    assert relayed.body == payload
    assert relayed.values("Content-Length") == [str(len(payload))]


@pytest.mark.parametrize(
    "payload",
    [
        b'40{"token":"tok.alice@example.edu"}',
        b'42["usage",{}]\x1e42["user-join",{"auth":{"token":"tok.alice@example.edu"}}]',
        b'40{"token":"tok.bob@example.edu"}\xff',
    ],
    ids=["another user's token", "stolen token in the second packet", "not UTF-8"],
)
async def test_polling_payload_refused(proxy, fake_upstream, payload) -> None:
    response = await proxy.post(POLL, data=payload, headers=BOB_COOKIE)
    assert response.status == 403
    assert all(seen.raw_path != POLL for seen in fake_upstream.seen)


async def test_polling_payload_size_capped(proxy, fake_upstream) -> None:
    response = await proxy.post(POLL, data=b"4" + b"x" * 1_000_000, headers=BOB_COOKIE)
    assert response.status == 413
    assert fake_upstream.seen == []
