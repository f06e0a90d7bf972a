"""``auth=jwt`` through the whole proxy: the real app, a recording fake OpenWebUI, an
in-process JWKS, and the admin listener reporting on the key set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.app import Runtime, create_admin_app, create_app
from proxy.settings import Settings
from tests.proxy.test_jwt import AUDIENCE, ISSUER, JwksEndpoint, SigningKey

HEADER = "Cf-Access-Jwt-Assertion"
PUBLIC = "https://chat.example.edu"
LOGIN = "https://team.cloudflareaccess.com/login"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


class Stack:
    def __init__(self, public: TestClient[Any, Any], admin: TestClient[Any, Any]) -> None:
        self.public = public
        self.admin = admin


@pytest.fixture
async def stack(
    aiohttp_client, aiohttp_server, upstream_server, key: SigningKey
) -> AsyncIterator[Callable[..., Any]]:
    runtimes: list[Runtime] = []

    async def make(jwks: JwksEndpoint, **overrides: Any) -> Stack:
        jwks_server = await aiohttp_server(jwks.app())
        values: dict[str, Any] = {
            "upstream": str(upstream_server.make_url("/")),
            "auth": "jwt",
            "jwt_source": f"header:{HEADER}",
            "jwt_jwks_url": str(jwks_server.make_url("/jwks")),
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "public_url": PUBLIC,
            "login_url": LOGIN,
            **overrides,
        }
        settings = Settings(**values)
        runtime = Runtime(settings)
        await runtime.start()
        runtimes.append(runtime)
        public = await aiohttp_client(create_app(settings, runtime))
        admin = await aiohttp_client(create_admin_app(settings, runtime))
        return Stack(public, admin)

    yield make
    for runtime in runtimes:
        await runtime.close()


async def test_verified_identity_reaches_openwebui_and_spoofs_do_not(
    stack, fake_upstream, key: SigningKey
) -> None:
    s = await stack(JwksEndpoint([key]))
    headers = {
        HEADER: key.mint(),
        "X-User-Email": "admin@example.edu",
        "X-User-Role": "admin",
        "Accept": "application/json",
    }
    async with s.public.get("/api/v1/chats/list", headers=headers) as response:
        assert response.status == 200
    seen = fake_upstream.seen[-1]
    assert seen.values("X-User-Email") == ["ada@example.edu"]
    assert seen.values("X-User-Name") == ["Ada%20Lovelace"]
    assert seen.values("X-User-Role") == []


async def test_refused_token_browser_goes_to_login_api_gets_401(
    stack, fake_upstream, key: SigningKey
) -> None:
    s = await stack(JwksEndpoint([key]))
    expired = key.mint({"exp": int(time.time()) - 3600})
    page = {HEADER: expired, "Accept": "text/html"}
    async with s.public.get("/c/1", headers=page, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"].startswith(f"{LOGIN}?rd=")
    api = {HEADER: expired, "Accept": "application/json"}
    async with s.public.get("/api/v1/chats/list", headers=api) as response:
        assert response.status == 401
    assert fake_upstream.seen == []


async def test_jwks_outage_shows_on_readyz_and_metrics_while_serving(
    stack, key: SigningKey
) -> None:
    endpoint = JwksEndpoint([key])
    s = await stack(endpoint, jwt_jwks_refresh_s=0.05, jwt_jwks_min_refetch_s=0.05)
    async with s.admin.get("/readyz") as response:
        assert response.status == 200, await response.text()
    endpoint.status = 500
    deadline = time.monotonic() + 10
    while True:
        async with s.admin.get("/readyz") as response:
            if response.status == 503:
                problems = (await response.json())["problems"]
                break
        assert time.monotonic() < deadline, "the outage never showed on /readyz"
        await asyncio.sleep(0.05)
    assert any("JWKS refresh failing" in p for p in problems)
    async with s.public.get("/", headers={HEADER: key.mint()}) as response:
        assert response.status == 200  # still serving with the cached key
    async with s.admin.get("/metrics") as response:
        text = await response.text()
    failures = next(
        line for line in text.splitlines() if line.startswith("owui_proxy_jwks_fetch_failures")
    )
    assert float(failures.split()[-1]) >= 1
    assert "owui_proxy_jwks_keys 1.0" in text
