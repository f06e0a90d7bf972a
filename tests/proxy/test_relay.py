"""The data plane through the real proxy app against the recording fake upstream."""

from __future__ import annotations

import asyncio
import gzip
import resource
import socket
import time

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE
from tests.proxy.rawhttp import raw_request


async def test_sse_events_arrive_before_the_upstream_finishes(proxy, fake_upstream) -> None:
    response = await proxy.get("/sse?events=3", headers=ALICE_COOKIE)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=10)
    assert first == b"data: 0\n\n"
    assert not fake_upstream.sse_finished  # the upstream is still holding the stream open
    fake_upstream.release_sse()
    rest = await asyncio.wait_for(response.content.read(), timeout=10)
    assert rest == b"data: 1\n\ndata: 2\n\n"
    assert fake_upstream.sse_finished


async def test_websocket_echo_text_binary_ping_and_close_codes(proxy, fake_upstream) -> None:
    async with proxy.ws_connect(
        "/ws", headers=ALICE_COOKIE, protocols=("chat",), autoping=False
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello"
        await ws.send_bytes(b"\x00\x01\xff")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.BINARY, b"\x00\x01\xff")
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are-you-there")
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001
    upgrade = fake_upstream.seen[-1]
    assert upgrade.raw_path == "/ws"
    assert upgrade.values("X-User-Email") == ["alice@example.edu"]


async def test_websocket_client_close_code_reaches_upstream(proxy, fake_upstream) -> None:
    ws = await proxy.ws_connect("/ws", headers=ALICE_COOKIE)
    await ws.send_str("x")
    assert (await ws.receive(timeout=10)).data == "x"
    await ws.close(code=4002)
    for _ in range(100):
        if fake_upstream.ws_closed_with is not None:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.ws_closed_with == 4002


async def test_websocket_needs_identity_and_upstream_101(proxy, fake_upstream) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/ws")
    assert refused.value.status == 401
    assert fake_upstream.seen == []
    # The upstream refusing the upgrade: its status, never a 101 of our own.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/status/403", headers=ALICE_COOKIE)
    assert refused.value.status == 403


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_upstream_down_is_a_fast_502(make_proxy) -> None:
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    response = await proxy.get("/", headers=ALICE_COOKIE)
    assert response.status == 502
    body = await response.json()
    assert body["error"].startswith("upstream unreachable")
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert time.monotonic() - started < 5


async def test_slow_upstream_is_a_504(make_proxy) -> None:
    proxy = await make_proxy(response_timeout_s=0.5)
    started = time.monotonic()
    response = await proxy.get("/slow?delay=20", headers=ALICE_COOKIE)
    assert response.status == 504
    assert "request_id" in await response.json()
    assert time.monotonic() - started < 10


async def test_raw_path_and_query_preserved_byte_for_byte(proxy, fake_upstream) -> None:
    for target in (
        "/api/v1/files/a%2Fb/../c/%2e%2e/d?x=%41&y=&z=a+b",
        "/x//y/./z%20?%zz",
        "/..%2F..%2Fetc/passwd",
    ):
        response = await raw_request(proxy.host, proxy.port, target, list(ALICE_COOKIE.items()))
        assert response.status == 200, target
        assert fake_upstream.last().raw_path == target


async def test_absolute_form_target_cannot_pick_another_host(proxy, fake_upstream) -> None:
    response = await raw_request(
        proxy.host, proxy.port, "http://169.254.169.254/latest", list(ALICE_COOKIE.items())
    )
    assert response.status == 400
    assert fake_upstream.seen == []


async def test_forwarded_headers_from_the_real_peer(make_proxy, fake_upstream) -> None:
    spoof = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        *ALICE_COOKIE.items(),
    ]
    untrusting = await make_proxy()
    await raw_request(untrusting.host, untrusting.port, "/", spoof)
    seen = fake_upstream.last()
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    assert seen.values("X-Forwarded-Host") == [f"{untrusting.host}:{untrusting.port}"]

    trusting = await make_proxy(trusted_proxies="127.0.0.0/8")
    await raw_request(trusting.host, trusting.port, "/", spoof)
    seen = fake_upstream.last()
    assert seen.values("X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]
    assert seen.values("X-Forwarded-Proto") == ["https"]
    assert seen.values("X-Forwarded-Host") == ["evil.example"]


async def test_request_id_generated_sent_upstream_and_returned(proxy, fake_upstream) -> None:
    response = await proxy.get("/", headers={**ALICE_COOKIE, "X-Request-ID": "mine"})
    rid = response.headers["X-Request-ID"]
    assert len(rid) == 32
    assert rid != "mine"
    assert fake_upstream.last().values("X-Request-ID") == [rid]
    other = await proxy.get("/", headers=ALICE_COOKIE)
    assert other.headers["X-Request-ID"] != rid


async def test_no_compression_added_or_removed(proxy) -> None:
    response = await proxy.get("/gzip", headers=ALICE_COOKIE, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await response.read()) == b'{"compressed": true}'
    plain = await proxy.get("/", headers={**ALICE_COOKIE, "Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers


async def test_hop_by_hop_response_headers_removed(proxy) -> None:
    response = await proxy.get("/hop", headers=ALICE_COOKIE)
    assert response.headers["X-Kept"] == "yes"
    for name in ("X-Secret-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in response.headers


async def test_body_limit_413_declared_and_streamed(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(max_body_bytes=1000)
    declared = await proxy.post("/echo", data=b"x" * 2000, headers=ALICE_COOKIE)
    assert declared.status == 413
    assert fake_upstream.seen == []

    async def chunks():
        for _ in range(40):
            yield b"y" * 100

    streamed = await proxy.post("/upload", data=chunks(), headers=ALICE_COOKIE)
    assert streamed.status == 413
    small = await proxy.post("/echo", data=b"z" * 1000, headers=ALICE_COOKIE)
    assert small.status == 200
    assert fake_upstream.last().body == b"z" * 1000


async def test_large_upload_streams_without_buffering(make_proxy, fake_upstream) -> None:
    """128 MiB through the proxy must not grow this process by anything like 128 MiB."""
    proxy = await make_proxy(max_body_bytes=1 << 30)
    size, block = 128 * 1024 * 1024, b"\xab" * (256 * 1024)

    async def body():
        for _ in range(size // len(block)):
            yield block

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    response = await proxy.post("/upload", data=body(), headers=ALICE_COOKIE)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert response.status == 200
    assert (await response.json()) == {"bytes": size}
    assert grown_mib < 48, f"RSS grew by {grown_mib:.0f} MiB"


async def test_shared_session_keeps_no_cookies_between_users(proxy, fake_upstream) -> None:
    signin = await proxy.post("/api/v1/auths/signin", json={}, headers=ALICE_COOKIE)
    assert "token" in signin.cookies  # Alice's browser gets her cookie ...
    proxy.session.cookie_jar.clear()
    await proxy.get("/", headers=BOB_COOKIE)
    assert "token=" not in " ".join(fake_upstream.last().values("Cookie"))  # ... Bob never


async def test_upstream_breaking_mid_body_cuts_the_client(proxy) -> None:
    """Never a truncated body that looks complete: the client sees the stream break."""
    response = await proxy.get("/broken", headers=ALICE_COOKIE)
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_idle_stream_is_cut_after_idle_timeout(make_proxy, fake_upstream) -> None:
    """Headers came in time, then silence longer than idle_timeout_s: the stream is cut."""
    proxy = await make_proxy(idle_timeout_s=0.5)
    response = await proxy.get("/sse?events=2", headers=ALICE_COOKIE)
    assert response.status == 200
    assert await response.content.readuntil(b"\n\n") == b"data: 0\n\n"
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(response.content.read(), timeout=20)


async def test_silent_websocket_closed_after_idle_timeout(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(idle_timeout_s=0.5)
    async with proxy.ws_connect("/ws", headers=ALICE_COOKIE, autoping=False) as ws:
        msg = await ws.receive(timeout=20)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1001


SMUGGLING = [
    (
        "CL and TE together",
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    ),
    ("two Content-Lengths", b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
    ("TE not ending in chunked", b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("tail", [r[1] for r in SMUGGLING], ids=[r[0] for r in SMUGGLING])
async def test_ambiguous_framing_refused_before_upstream(proxy, fake_upstream, tail) -> None:
    """Request smuggling needs two parsers to disagree; ours refuses the ambiguous ones."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: h\r\nCookie: _oauth2_proxy=alice-session\r\n" + tail)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.split(b"\r\n")[0].endswith(b"400 Bad Request")
    assert fake_upstream.seen == []


async def test_a_small_answer_in_one_write_carries_one_content_length_its_size(proxy) -> None:
    for target in ("/gzip", "/"):
        response = await raw_request(proxy.host, proxy.port, target, list(ALICE_COOKIE.items()))
        assert response.status == 200, target
        assert response.headers.getall("Content-Length") == [str(len(response.body))], target
        assert "Transfer-Encoding" not in response.headers, target
        assert response.body, target
