"""The internal listener in front of a test OpenWebUI: as ``owui-proxy`` runs it
(``server._start``: a client that disconnects cancels its handler there), or as a
``TestClient``; and such an OpenWebUI that only signs people in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy import server
from proxy.internal import create_internal_app
from proxy.upstream import Upstream
from tests.proxy.test_internal import TOKEN, make_settings, write_tokens
from tests.proxy.test_relay import _closed_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _no_onboarding(_request: web.Request) -> web.Response:
    return web.json_response({"onboarding": False})


def signing_in(signin: Handler, config: Handler = _no_onboarding, **app: Any) -> web.Application:
    """An OpenWebUI answering ``POST /api/v1/auths/signin`` with ``signin`` and
    ``GET /api/config`` with ``config`` (by default: it has its first account already)."""
    application = web.Application(**app)
    application.router.add_post("/api/v1/auths/signin", signin)
    application.router.add_get("/api/config", config)
    return application


@asynccontextmanager
async def internal_listener(
    aiohttp_server: Any, tmp_path: Path, owui: web.Application, **settings: Any
) -> AsyncIterator[int]:
    """The internal app (the service token ``TOKEN``, ``settings`` over test_internal's) on a
    port of its own, in front of ``owui``: the port."""
    owui_server = await aiohttp_server(owui)
    write_tokens(tmp_path / "tokens", TOKEN)
    values = make_settings(tmp_path, str(owui_server.make_url("/")), **settings)
    upstream = Upstream.open(values)
    port = _closed_port()
    runner = await server._start(
        create_internal_app(values, upstream), f"127.0.0.1:{port}", values, False
    )
    try:
        yield port
    finally:
        await runner.cleanup()
        await upstream.close()


@asynccontextmanager
async def internal_client(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    owui: web.Application,
    **settings: Any,
) -> AsyncIterator[TestClient[Any, Any]]:
    """The internal app (the service token ``TOKEN``, ``settings`` over test_internal's) in
    front of ``owui``, as a test client."""
    owui_server = await aiohttp_server(owui)
    write_tokens(tmp_path / "tokens", TOKEN)
    values = make_settings(tmp_path, str(owui_server.make_url("/")), **settings)
    upstream = Upstream.open(values)
    try:
        yield await aiohttp_client(create_internal_app(values, upstream))
    finally:
        await upstream.close()
