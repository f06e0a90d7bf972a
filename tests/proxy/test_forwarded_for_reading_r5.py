"""OpenWebUI reads the client's address from the far end of ``X-Forwarded-For``.

OpenWebUI 0.12.4 runs uvicorn with ``forwarded_allow_ips=os.getenv('FORWARDED_ALLOW_IPS',
'*')`` (``open_webui/__init__.py``): every peer is trusted, and uvicorn's
``ProxyHeadersMiddleware`` then takes the **first** entry of ``X-Forwarded-For`` as the
client (``request.client.host``). OpenWebUI keys its MFA rate limit on that address
(``routers/mfa.py``: 100 attempts per address per 15 minutes) and writes it into its audit
log and MFA security events as ``source_ip``.

The proxy believes only the entries its trusted front proxies vouch for: read from the
closest hop back, the first address that is not a trusted proxy is the client. It relayed
the whole chain, though, so behind a trusted front proxy that extends the client's list
(HAProxy ``option forwardfor``, Traefik, cloud load balancers, nginx's
``$proxy_add_x_forwarded_for``) the entries the client made up came first, and OpenWebUI
took one of them for the client: every request its own rate-limit key, any address in the
audit log. The chain relayed now starts at the entry the proxy believes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from multidict import CIMultiDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.app import create_app
from proxy.headers import HeaderPolicy, forwarded_view, request_headers_upstream
from tests.proxy.conftest import ALICE_COOKIE

POLICY = HeaderPolicy(
    email_header="X-User-Email",
    name_header="X-User-Name",
    groups_header="X-User-Groups",
    role_header="X-User-Role",
    trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")),
)


async def _client(request: Request) -> JSONResponse:
    assert request.client is not None
    return JSONResponse({"client": request.client.host})


async def _config(_request: Request) -> JSONResponse:
    return JSONResponse({"version": "0.12.4"})


@asynccontextmanager
async def _openwebui_like() -> AsyncIterator[int]:
    """A Starlette app under uvicorn (httptools) configured as OpenWebUI runs it."""
    app = Starlette(
        routes=[Route("/api/config", _config), Route("/api/v1/whoami", _client)],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan="off",
        log_level="critical",
        forwarded_allow_ips="*",  # OpenWebUI 0.12.4's default (FORWARDED_ALLOW_IPS)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize(
    ("sent", "believed"),
    [
        # HAProxy's option forwardfor: a line of its own after the client's.
        ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")], "203.0.113.9"),
        # nginx's $proxy_add_x_forwarded_for: appended to the client's line.
        ([("X-Forwarded-For", "6.6.6.6, 7.7.7.7, 203.0.113.9")], "203.0.113.9"),
        # Two trusted hops (a CDN, then a load balancer): the client is behind both.
        ([("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.9.9.9")], "203.0.113.9"),
        # A client that names a trusted proxy's address first gains nothing.
        ([("X-Forwarded-For", "10.0.0.1, 203.0.113.9")], "203.0.113.9"),
    ],
)
async def test_openwebui_reads_the_client_the_proxy_believes(
    aiohttp_client: Any, settings_for: Any, sent: list[tuple[str, str]], believed: str
) -> None:
    async with _openwebui_like() as port:
        settings = settings_for(
            upstream=f"http://127.0.0.1:{port}", trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]
        )
        client = await aiohttp_client(create_app(settings))
        headers = CIMultiDict([*ALICE_COOKIE.items(), *sent, ("Accept", "application/json")])
        response = await client.get("/api/v1/whoami", headers=headers)
        assert response.status == 200
        assert (await response.json()) == {"client": believed}


LONG = ", ".join(["6.6.6.6"] + ["10.0.0.1"] * 40)


@pytest.mark.parametrize(
    ("chain", "relayed"),
    [
        ("6.6.6.6, 203.0.113.9", "203.0.113.9, 10.1.2.3"),
        ("6.6.6.6,203.0.113.9,10.9.9.9", "203.0.113.9, 10.9.9.9, 10.1.2.3"),
        ("203.0.113.9", "203.0.113.9, 10.1.2.3"),
        ("10.0.0.1, 10.9.9.9", "10.0.0.1, 10.9.9.9, 10.1.2.3"),  # every hop trusted
        ("6.6.6.6, , 203.0.113.9, ", "203.0.113.9, 10.1.2.3"),
        ("6.6.6.6, unknown", "unknown, 10.1.2.3"),  # what the closest hop said, kept
        (" , ", "10.1.2.3"),
        # A long chain costs no more: the entry the closest hop added decides.
        ("6.6.6.6, " + "10.0.0.1, " * 5000 + "203.0.113.9", "203.0.113.9, 10.1.2.3"),
        # Past _MAX_HOPS trusted entries the rest is relayed as it came (only a client inside
        # the trusted networks gets there, and reading on would believe a made-up entry too).
        (LONG, LONG + ", 10.1.2.3"),
    ],
)
def test_the_chain_starts_at_the_believed_client(chain: str, relayed: str) -> None:
    sent = [("X-Forwarded-For", chain)]
    view = forwarded_view(sent, peer="10.1.2.3", scheme="http", host="h", policy=POLICY)
    assert view.for_ == relayed
    headers, _ = request_headers_upstream(
        CIMultiDict(sent), identity=None, policy=POLICY, request_id=None, forwarded=view
    )
    assert headers.getall("X-Forwarded-For") == [relayed]
