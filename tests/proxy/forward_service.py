"""A ``ForwardAuthenticator`` asking a test auth service, the authenticator on its own
(no proxy app around it), for tests of how it talks to the service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from proxy.auth.forward import ForwardAuthenticator
from proxy.settings import Settings


@asynccontextmanager
async def authenticator_of(
    aiohttp_server: Any,
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    **settings: Any,
) -> AsyncIterator[ForwardAuthenticator]:
    """The authenticator of a proxy at https://chat.test whose auth service is ``handle``
    (served at ``/auth``); ``settings`` override. Its session is closed on the way out."""
    app = web.Application()
    app.router.add_get("/auth", handle)
    server = await aiohttp_server(app)
    values: dict[str, Any] = {
        "upstream": "http://127.0.0.1:9",
        "auth": "forward",
        "forward_auth_url": str(server.make_url("/auth")),
        "public_url": "https://chat.test",
        **settings,
    }
    async with aiohttp.ClientSession() as session:
        yield ForwardAuthenticator(Settings(**values), session)
