"""No CORS grant leaves the proxy (round 4, reviewer ad).

OpenWebUI 0.12.4's default is ``CORS_ALLOW_ORIGIN="*"`` with credentials allowed, through
Starlette's ``CORSMiddleware``: whenever a request carries a cookie, its ``Origin`` is echoed
in ``Access-Control-Allow-Origin`` with ``Access-Control-Allow-Credentials: true``. The proxy
relayed both, so a page on another origin whose fetch carries the person's cookies (a
sibling subdomain is the same site, so Lax cookies go along) could read their chats. Here
the real ``CORSMiddleware`` under the real uvicorn, configured as OpenWebUI configures it,
behind the public app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.app import create_app
from proxy.headers import response_header_items
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.uvicorn_serving import uvicorn_serving

EVIL = "https://student-pages.school.edu"


async def _chats(_request: Request) -> JSONResponse:
    return JSONResponse([{"id": "c1", "title": "Alice's private chat"}])


async def _config(_request: Request) -> JSONResponse:
    return JSONResponse({"version": "0.12.4"})


def _openwebui_like() -> Starlette:
    return Starlette(
        routes=[Route("/api/v1/chats/", _chats), Route("/api/config", _config)],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],  # OpenWebUI 0.12.4's default CORS_ALLOW_ORIGIN
                allow_credentials=True,
                allow_methods=["*"],
                allow_headers=["*"],
            )
        ],
    )


@pytest.fixture
async def openwebui_port() -> AsyncIterator[int]:
    async with uvicorn_serving(_openwebui_like()) as port:
        yield port


@pytest.mark.parametrize("public_url", [None, "https://chat.school.edu"])
async def test_another_origin_is_never_granted_a_read(
    aiohttp_client: Any, settings_for: Any, openwebui_port: int, public_url: str | None
) -> None:
    settings = settings_for(upstream=f"http://127.0.0.1:{openwebui_port}", public_url=public_url)
    client = await aiohttp_client(create_app(settings))
    headers = {**ALICE_COOKIE, "Origin": EVIL, "Sec-Fetch-Site": "same-site"}
    response = await client.get("/api/v1/chats/", headers=headers)
    assert response.status == 200  # Alice's own request: relayed
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_openwebui_does_grant_it_without_the_proxy(openwebui_port: int) -> None:
    """The control: the fake is OpenWebUI's configuration, which echoes the origin."""
    reader, writer = await asyncio.open_connection("127.0.0.1", openwebui_port)
    writer.write(
        f"GET /api/v1/chats/ HTTP/1.1\r\nHost: x\r\nOrigin: {EVIL}\r\nCookie: a=1\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    head = (await reader.read()).decode("latin-1").lower()
    writer.close()
    assert f"access-control-allow-origin: {EVIL}" in head
    assert "access-control-allow-credentials: true" in head


@pytest.mark.parametrize(
    "name",
    [
        "Access-Control-Allow-Origin",
        "access-control-allow-credentials",
        "Access-Control-Expose-Headers",
        "ACCESS-CONTROL-ALLOW-METHODS",
        "Access_Control_Allow_Origin",
        "Access-Control-Max-Age",
    ],
)
def test_every_cors_answer_header_is_dropped(name: str) -> None:
    kept = response_header_items([(name, "*"), ("Vary", "Origin"), ("Content-Type", "x/y")])
    assert kept == [("Vary", "Origin"), ("Content-Type", "x/y")]
