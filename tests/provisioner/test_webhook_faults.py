"""The webhook receiver under faults: replays, malformed and fuzzed input, stalled clients.

Bad input is a 4xx and never a 500; a signed delivery replayed inside the tolerance window
is answered, not run again; a client that stalls is cut off by the proxy listeners' own
timeouts, on the receiver's real runner (``provisioner.webhook.make_runner``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.webhook import Deliveries, create_app, make_runner
from proxy.connections import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEPALIVE_TIMEOUT_S
from proxy.settings import Settings as ProxySettings
from tests.provisioner.cli_helpers import finish, start
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, SECRET, headers

ADA = json.dumps({"email": "ada@example.edu", "name": "Ada"}).encode()


def signins(fake: FakeOpenWebUI) -> int:
    return fake.count("POST", "/api/v1/auths/signin")


# --- replays ----------------------------------------------------------------------------------


async def test_a_replay_inside_the_window_is_answered_not_run(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    now = [float(NOW)]
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: now[0])
    )
    first = await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))
    assert first.status == 200
    ran = len(fake.calls)
    for later in (1, 150, 299):  # the same signed bytes, again and again within five minutes
        now[0] = NOW + later
        replay = await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))
        assert replay.status == 200
        assert await replay.json() == {"duplicate": True}
    assert len(fake.calls) == ran  # OpenWebUI was not asked anything again
    now[0] = NOW + 301  # out of the window: the signature check refuses it, as before
    assert (await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))).status == 401
    metrics = await (await client.get("/metrics")).text()
    assert 'owui_provision_webhook_deliveries_total{outcome="duplicate"} 3.0' in metrics


async def test_a_delivery_that_failed_runs_again_when_the_sender_retries_it(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
    )
    admin = fake.users.pop("admin@example.edu")  # onboarding not over: refused, 503
    refused = await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))
    assert refused.status == 503
    fake.users["admin@example.edu"] = admin
    retried = await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))
    assert retried.status == 200
    assert "duplicate" not in await retried.json()
    assert len(fake.chats_of("ada@example.edu")) == 2


async def test_a_replay_while_the_first_still_runs_is_409(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/chats/new", 1)
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=10, clock=lambda: NOW)
    )
    first = asyncio.create_task(client.post("/webhooks/signup", data=ADA, headers=headers(ADA)))
    for _ in range(500):  # until the first one is at OpenWebUI
        if signins(fake):
            break
        await asyncio.sleep(0.01)
    replay = await client.post("/webhooks/signup", data=ADA, headers=headers(ADA))
    assert replay.status == 409
    assert (await first).status == 200
    assert signins(fake) == 1


def test_the_memory_is_bounded_and_forgets_what_left_the_window() -> None:
    now = [float(NOW)]
    memory = Deliveries(size=3, clock=lambda: now[0])
    for i in range(5):
        memory.begin(f"msg_{i}")
        memory.end(f"msg_{i}", timestamp=NOW, handled=True)
    assert len(memory) == 3
    assert memory.state("msg_0") is None  # the oldest went first
    assert memory.state("msg_4") == "handled"
    memory.begin("msg_x")
    memory.end("msg_x", timestamp=NOW, handled=False)  # a failure is never remembered
    assert memory.state("msg_x") is None
    now[0] = NOW + 301
    assert memory.state("msg_4") is None


# --- malformed and fuzzed input ---------------------------------------------------------------


def signed(body: bytes, **overrides: str) -> dict[str, str]:
    return {**headers(body), **overrides}


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        pytest.param(signed(ADA, **{"webhook-timestamp": "9" * 5000}), 400, id="5000-digit-ts"),
        pytest.param(signed(ADA, **{"webhook-timestamp": "1" * 13}), 400, id="13-digit-ts"),
        pytest.param(signed(ADA, **{"webhook-id": "m" * 257}), 400, id="long-id"),
        pytest.param(signed(ADA, **{"webhook-id": "msg 1"}), 400, id="id-with-space"),
        pytest.param(
            signed(ADA, **{"webhook-signature": "v1,x " * 1000}), 400, id="huge-signatures"
        ),
        pytest.param(signed(ADA, **{"webhook-id": ""}), 401, id="no-id"),
    ],
)
async def test_malformed_headers_are_400_never_500(
    aiohttp_client: Any,
    provisioner: Provisioner,
    course: Course,
    fake: FakeOpenWebUI,
    sent: dict[str, str],
    status: int,
) -> None:
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
    )
    response = await client.post("/webhooks/signup", data=ADA, headers=sent)
    assert response.status == status
    assert "error" in await response.json()
    assert fake.calls == []


@pytest.fixture
async def receiver(
    provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> AsyncIterator[int]:
    """The receiver on a real port, behind its real runner, with short timeouts."""
    app = create_app(
        [course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW, body_timeout_s=1
    )
    runner = make_runner(app, header_timeout_s=1, keepalive_timeout_s=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    yield port
    await runner.cleanup()


def exchange(port: int, head: bytes, body: bytes) -> int:
    """One raw request on a blocking socket; the status, or 0 if none came."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 else 0


# Header bytes a client may send: anything but CR and LF (which would end the line).
HEADER_BYTES = st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
NEAR_SIGNUPS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["user.seen", "user.created", "user.updated"]) | JSON,
        "email": st.sampled_from(["a@b.cd", "\u212aate@x.io", ""]) | JSON,
        "name": JSON,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "email": st.sampled_from(["fuzz@school.edu", "x"]) | JSON,
                "groups": st.lists(st.text(max_size=6), max_size=3) | JSON,
                "primary_email_address_id": JSON,
                "email_addresses": JSON,
                "first_name": JSON,
            },
        ),
    },
)
BODIES = (
    st.binary(max_size=200)
    | JSON.map(lambda value: json.dumps(value).encode())
    | NEAR_SIGNUPS.map(lambda value: json.dumps(value).encode())
    | st.integers(1, 200_000).map(lambda depth: b"[" * depth)
)


async def test_fuzzed_deliveries_never_get_a_500(receiver: int) -> None:
    """Unsigned garbage in every header, and signed bodies of every shape: always a 4xx or
    a 2xx, never a 5xx (the receiver answers 5xx only when OpenWebUI or the deadline fails)."""

    @given(
        id_=HEADER_BYTES,
        timestamp=HEADER_BYTES | st.integers(1, 6000).map(lambda n: b"9" * n),
        signature=HEADER_BYTES,
        body=BODIES,
    )
    def unsigned(id_: bytes, timestamp: bytes, signature: bytes, body: bytes) -> None:
        head = (
            b"POST /webhooks/signup HTTP/1.1\r\nHost: receiver\r\n"
            b"webhook-id: " + id_ + b"\r\nwebhook-timestamp: " + timestamp + b"\r\n"
            b"webhook-signature: " + signature + b"\r\n"
        )
        status = exchange(receiver, head, body)
        assert 400 <= status < 500, (status, id_, timestamp[:20], signature, body[:40])

    @given(body=BODIES, msg=st.integers(0, 10**9))
    def signed_bodies(body: bytes, msg: int) -> None:
        sent = headers(body, msg_id=f"msg_fuzz{msg}")
        head = b"POST /webhooks/signup HTTP/1.1\r\nHost: receiver\r\n" + b"".join(
            f"{name}: {value}\r\n".encode() for name, value in sent.items()
        )
        status = exchange(receiver, head, body)
        assert status in (200, 409, 413, 422), (status, body[:80])

    # In a thread: the receiver and the fake OpenWebUI are served by this test's loop.
    await asyncio.to_thread(unsigned)
    await asyncio.to_thread(signed_bodies)


# --- stalled clients --------------------------------------------------------------------------


async def hold(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
        await writer.drain()
    return reader, writer


async def closed_within(held: tuple[asyncio.StreamReader, asyncio.StreamWriter], s: float) -> bytes:
    reader, writer = held
    try:
        return await asyncio.wait_for(reader.read(), timeout=s)
    finally:
        writer.close()


async def test_stalled_connections_are_closed_by_the_proxys_timeouts(receiver: int) -> None:
    """Silent sockets, half-sent heads, stalled bodies and idle kept-alive connections are all
    closed in time (all 300 were still open after 20 s before)."""
    partial = b"POST /webhooks/signup HTTP/1.1\r\nHost: receiver\r\nwebhook-id: msg_1\r\n"
    stalled = b"POST /webhooks/signup HTTP/1.1\r\nHost: receiver\r\nContent-Length: 1000\r\n\r\n{"
    kept = b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n"
    started = time.monotonic()
    heads = await asyncio.gather(
        *[hold(receiver, b"") for _ in range(50)], *[hold(receiver, partial) for _ in range(50)]
    )
    bodies = await asyncio.gather(*[hold(receiver, stalled) for _ in range(50)])
    idle = await asyncio.gather(*[hold(receiver, kept) for _ in range(20)])
    assert set(await asyncio.gather(*[closed_within(h, 5) for h in heads])) == {b""}
    answers = await asyncio.gather(*[closed_within(h, 15) for h in bodies])
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
    answers = await asyncio.gather(*[closed_within(h, 5) for h in idle])
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)  # answered, then closed idle
    assert time.monotonic() - started < 16


def test_the_receiver_uses_the_proxy_listeners_timeouts() -> None:
    """The same numbers as the proxy's defaults, from one place."""
    defaults = inspect.signature(make_runner).parameters
    assert defaults["header_timeout_s"].default == HEADER_TIMEOUT_S
    assert defaults["keepalive_timeout_s"].default == KEEPALIVE_TIMEOUT_S
    assert inspect.signature(create_app).parameters["body_timeout_s"].default == BODY_TIMEOUT_S
    fields = ProxySettings.model_fields
    assert fields["header_timeout_s"].default == HEADER_TIMEOUT_S
    assert fields["keepalive_timeout_s"].default == KEEPALIVE_TIMEOUT_S
    assert fields["body_timeout_s"].default == BODY_TIMEOUT_S


async def test_the_webhook_command_closes_half_sent_heads(
    env: dict[str, str], course_file: Path, tmp_path: Path
) -> None:
    """The real ``owui-provision webhook`` process, with its default (the proxy's) head
    timeout: half-sent heads are closed after it, not held."""
    secrets = tmp_path / "secrets"
    secrets.write_text(SECRET + "\n", encoding="utf-8")
    secrets.chmod(0o600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await start(
        env,
        "webhook",
        str(course_file),
        "--listen",
        f"127.0.0.1:{port}",
        "--secret-file",
        str(secrets),
    )
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        partial = b"POST /webhooks/signup HTTP/1.1\r\nHost: receiver\r\n"
        held = await asyncio.gather(*[hold(port, partial) for _ in range(30)])
        answers = await asyncio.gather(*[closed_within(h, HEADER_TIMEOUT_S + 5) for h in held])
        assert set(answers) == {b""}
    finally:
        process.terminate()
        await finish(process, timeout=30)
