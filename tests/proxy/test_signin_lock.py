"""The internal listener's per-email sign-in lock covers exactly the upstream sign-in.

Overlapping first sign-ins of one email are how OpenWebUI creates an account twice, so the
fake upstream here counts the sign-ins of each email it is processing at once: whatever the
callers do (give up, disconnect, trickle their bodies), never more than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.proxy.internal_listener import internal_listener
from tests.proxy.rawhttp import raw_request
from tests.proxy.test_internal import TOKEN

EMAIL = "first-time@school.edu"
BODY = b'{"email":"","password":""}'


@dataclass
class SlowOpenWebUI:
    """Sign-in takes ``delay`` seconds; ``most`` is the peak of concurrent sign-ins per email.

    Like OpenWebUI, a sign-in that has begun runs to its end even if the connection it came
    on is gone (the account is being created either way).
    """

    delay: float
    in_flight: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)
    arrived: int = 0
    finished: int = 0
    _work: set[asyncio.Task[None]] = field(default_factory=set)

    async def signin(self, request: web.Request) -> web.Response:
        email = request.headers["X-User-Email"]
        self.arrived += 1
        work = asyncio.create_task(self._sign_in(email))
        self._work.add(work)
        work.add_done_callback(self._work.discard)
        with contextlib.suppress(Exception):
            await request.read()
        await asyncio.shield(work)
        return web.json_response({"email": email, "role": "user", "token": "t"})

    async def _sign_in(self, email: str) -> None:
        self.in_flight[email] = self.in_flight.get(email, 0) + 1
        self.most[email] = max(self.most.get(email, 0), self.in_flight[email])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight[email] -= 1
        self.finished += 1

    @staticmethod
    async def config(_request: web.Request) -> web.Response:
        return web.json_response({"onboarding": False})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/auths/signin", self.signin)
        app.router.add_get("/api/config", self.config)
        return app


@dataclass
class Listener:
    port: int
    owui: SlowOpenWebUI


@pytest.fixture
async def listener(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Listener]:
    """The internal app behind the runner ``owui-proxy`` uses: a client that disconnects
    cancels its handler there (``handler_cancellation``), as in production."""
    owui = SlowOpenWebUI(delay=0.25)
    async with internal_listener(aiohttp_server, tmp_path, owui.app(), body_timeout_s=5) as port:
        with capture_logs():
            yield Listener(port, owui)


def signin_head(length: int = len(BODY)) -> bytes:
    return (
        "POST /api/v1/auths/signin HTTP/1.1\r\nHost: internal\r\n"
        f"Proxy-Authorization: Bearer {TOKEN}\r\nX-User-Email: {EMAIL}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def abandoned_signin(port: int, owui: SlowOpenWebUI, after: float) -> None:
    """A whole sign-in request, then the caller gives up and disconnects ``after`` seconds
    once OpenWebUI has begun the first sign-in (not on a clock of its own: on a loaded
    machine every caller could leave before the proxy has read one request, and the test
    would tell nothing)."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(signin_head() + BODY)
    await writer.drain()
    for _ in range(1000):  # 10 s at most
        if owui.arrived:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(after)
    writer.transport.abort()


async def test_abandoned_signins_of_one_email_never_overlap_upstream(listener: Listener) -> None:
    """Callers that give up (or time out) while OpenWebUI is still signing them in do not
    release the lock: the next sign-in of that email waits for OpenWebUI's answer."""
    owui = listener.owui
    callers = 8
    # Each gives up while OpenWebUI is still at work on the first sign-in.
    await asyncio.gather(
        *[abandoned_signin(listener.port, owui, after=0.01 * i) for i in range(callers)]
    )
    for _ in range(int(callers * owui.delay / 0.05) + 100):  # until the upstream is done
        if owui.finished == owui.arrived >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(owui.delay)  # one more sign-in could still be on its way
    assert owui.arrived >= 2, "too few sign-ins reached the upstream to tell"
    assert owui.most == {EMAIL: 1}


async def test_a_caller_trickling_its_body_holds_no_lock(listener: Listener) -> None:
    """The body is read before the lock is taken: another sign-in of the same email goes
    ahead while a caller is still sending its own, slowly."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(signin_head() + BODY[:5])  # and the rest never comes, for now
        await writer.drain()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        answer = await raw_request(
            "127.0.0.1",
            listener.port,
            "/api/v1/auths/signin",
            [
                ("Proxy-Authorization", f"Bearer {TOKEN}"),
                ("X-User-Email", EMAIL),
                ("Content-Type", "application/json"),
            ],
            method="POST",
            body=BODY,
        )
        took = time.monotonic() - started
    finally:
        writer.close()
    assert answer.status == 200
    assert took < 2, f"waited {took:.1f} s behind a caller still sending its body"
