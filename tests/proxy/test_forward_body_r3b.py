"""The auth service's answer body is never read past a small bound.

The proxy needs only the status and headers of the auth service's answer. Before the fix,
both the per-request call and the readiness probe read the whole body into memory
(``response.read()``): an auth service (or whatever answers at its URL) streaming a large
body made the proxy buffer all of it, once per request in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from proxy.identity import Identity
from tests.proxy.forward_service import authenticator_of

CHUNK = b"x" * (1024 * 1024)
STREAMED_MB = 128


class Streaming:
    def __init__(self, status: int) -> None:
        self.status = status
        self.sent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=self.status, headers={"X-Auth-Request-Email": "a@school.edu"}
        )
        await response.prepare(request)
        try:
            for _ in range(STREAMED_MB):
                await response.write(CHUNK)
                self.sent += len(CHUNK)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


async def test_a_huge_answer_body_is_not_buffered(aiohttp_server, aiohttp_client) -> None:
    service = Streaming(202)
    async with authenticator_of(aiohttp_server, service.handle, auth_timeout_s=20) as auth:
        outcome: list[Any] = []

        async def handler(request: web.Request) -> web.Response:
            outcome.append(await auth.authenticate(request))
            return web.Response(text="ok")

        front = web.Application()
        front.router.add_get("/", handler)
        client = await aiohttp_client(await aiohttp_server(front))
        async with client.get("/", headers={"Cookie": "_oauth2_proxy=s"}) as response:
            assert response.status == 200
        assert isinstance(outcome[0], Identity)
        assert outcome[0].email == "a@school.edu"
        await asyncio.sleep(0.2)
        assert service.sent < STREAMED_MB * len(CHUNK) // 4  # was all of it


async def test_the_probe_does_not_buffer_a_huge_body(aiohttp_server) -> None:
    service = Streaming(200)
    async with authenticator_of(aiohttp_server, service.handle, auth_timeout_s=20) as auth:
        await auth.probe()
        assert auth.problem() is None
        await asyncio.sleep(0.2)
        assert service.sent < STREAMED_MB * len(CHUNK) // 4


async def test_a_small_answer_body_is_read_and_the_connection_kept(aiohttp_server) -> None:
    """The bound does not cost keep-alive: a short body is read to its end."""
    peers: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(status=401, text="unauthorized " * 100)

    async with authenticator_of(aiohttp_server, handle) as auth:
        for _ in range(3):
            await auth.probe()
    assert len(peers) == 3
    assert len(set(peers)) == 1
