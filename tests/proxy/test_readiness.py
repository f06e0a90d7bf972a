"""``/readyz`` answers within ``READYZ_TIMEOUT_S`` from what the proxy already knows.

OpenWebUI here is a small app whose ``/health`` and ``/api/config`` can be made to hang:
``/readyz`` took 8.1 s while only ``/api/config`` hung (Kubernetes' default probe timeout is
1 s), although requests kept flowing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import Runtime, create_admin_app, create_app
from proxy.readiness import READYZ_TIMEOUT_S
from proxy.settings import Settings
from tests.proxy.conftest import ALICE_COOKIE

CHECK_EVERY_S = 0.1


@dataclass
class HangingOpenWebUI:
    hang_config: bool = False
    hang_health: bool = False

    async def health(self, _request: web.Request) -> web.Response:
        if self.hang_health:
            await asyncio.sleep(60)
        return web.json_response({"status": True})

    async def config(self, _request: web.Request) -> web.Response:
        if self.hang_config:
            await asyncio.sleep(60)
        return web.json_response({"version": "0.12.4"})

    @staticmethod
    async def anything(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/api/config", self.config)
        app.router.add_get("/x", self.anything)
        return app


@dataclass
class Proxy:
    public: TestClient[Any, Any]
    admin: TestClient[Any, Any]
    owui: HangingOpenWebUI

    async def ready(self) -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        response = await self.admin.get("/readyz")
        body = await response.json()
        return response.status, body, time.monotonic() - started


@pytest.fixture
async def proxy(
    aiohttp_server: Any, aiohttp_client: Any, auth_server: TestServer
) -> AsyncIterator[Proxy]:
    owui = HangingOpenWebUI()
    server: TestServer = await aiohttp_server(owui.app())
    settings = Settings(
        upstream=str(server.make_url("/")),
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
        connect_timeout_s=2,
    )
    runtime = Runtime(settings)
    await runtime.start()
    public = await aiohttp_client(create_app(settings, runtime))
    admin = await aiohttp_client(create_admin_app(settings, runtime, check_every_s=CHECK_EVERY_S))
    yield Proxy(public, admin, owui)
    await runtime.close()


async def test_readyz_does_not_wait_on_a_hanging_api_config(proxy: Proxy) -> None:
    """The release was read as safe; ``/api/config`` hanging now is no reason to wait, nor to
    turn unready: requests still flow."""
    assert (await proxy.ready())[0] == 200
    proxy.owui.hang_config = True
    deadline = time.monotonic() + 4  # two whole hung reads of 2 s
    while time.monotonic() < deadline:
        status, body, took = await proxy.ready()
        assert took < READYZ_TIMEOUT_S
        assert (status, body) == (200, {"ready": True})
        await asyncio.sleep(0.1)
    assert (await proxy.public.get("/x", headers=ALICE_COOKIE)).status == 200


async def test_readyz_reports_a_hanging_health_in_bounded_time(proxy: Proxy) -> None:
    proxy.owui.hang_health = True
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        status, body, took = await proxy.ready()
        assert took < READYZ_TIMEOUT_S
        if status == 503:
            assert body["problems"] == ["upstream: GET /health failed (TimeoutError)"]
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a hanging /health never made the proxy unready")
    proxy.owui.hang_health = False
    for _ in range(100):
        if (await proxy.ready())[0] == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("never ready again")
