"""Fixtures: the recording fakes served in-process, and the real proxy app in front of them."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import create_app
from proxy.settings import Settings
from tests.fakes import FakeAuthService, FakeUpstream

ALICE = {
    "X-Auth-Request-Email": "Alice@Example.EDU",
    "X-Auth-Request-User": "Alice Ängström",
    "X-Auth-Request-Groups": "staff,,students",
}
BOB = {"X-Auth-Request-Email": "bob@example.edu", "X-Auth-Request-User": "Bob"}
ALICE_COOKIE = {"Cookie": "_oauth2_proxy=alice-session"}
BOB_COOKIE = {"Cookie": "_oauth2_proxy=bob-session"}

MakeProxy = Callable[..., Awaitable[TestClient[Any, Any]]]

# The least an environment needs for ``load_settings`` to load (forward auth on loopback).
SETTINGS_BASE = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080",
    "OWUI_PROXY_AUTH": "forward",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:4180/oauth2/auth",
}
# The same for OWUI_PROXY_AUTH=jwt (no FORWARD_AUTH_*: that source's settings are refused).
JWT_BASE = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080",
    "OWUI_PROXY_AUTH": "jwt",
    "OWUI_PROXY_JWT_SOURCE": "header:Cf-Access-Jwt-Assertion",
    "OWUI_PROXY_JWT_JWKS_URL": "https://team.cloudflareaccess.com/cdn-cgi/access/certs",
    "OWUI_PROXY_JWT_ISSUER": "https://team.cloudflareaccess.com",
    "OWUI_PROXY_JWT_AUDIENCE": "aud-tag",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """No OWUI_PROXY_* variable (in any case) from the machine; ``env(**values)`` sets
    ``SETTINGS_BASE`` (or the base given first: ``env(JWT_BASE, ...)``), then ``values``.
    (Some settings tests define their own ``env``.)"""
    for name in list(os.environ):
        if name.upper().startswith("OWUI_PROXY_"):
            monkeypatch.delenv(name)

    def set_env(base: Mapping[str, str] = SETTINGS_BASE, /, **values: str) -> None:
        for name, value in {**base, **values}.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.release_sse()  # a failed test must not leave a stream the server waits on forever


@pytest.fixture
def fake_auth() -> FakeAuthService:
    return FakeAuthService(users={"alice-session": ALICE, "bob-session": BOB})


@pytest.fixture
async def upstream_server(aiohttp_server, fake_upstream) -> TestServer:
    return await aiohttp_server(fake_upstream.app())


@pytest.fixture
async def auth_server(aiohttp_server, fake_auth) -> TestServer:
    return await aiohttp_server(fake_auth.app())


@pytest.fixture
def settings_for(upstream_server, auth_server) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "upstream": str(upstream_server.make_url("/")),
            "auth": "forward",
            "forward_auth_url": str(auth_server.make_url("/oauth2/auth")),
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_proxy(aiohttp_client, settings_for) -> MakeProxy:
    async def make(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(settings_for(**overrides)))

    return make


@pytest.fixture
async def proxy(make_proxy) -> TestClient[Any, Any]:
    return await make_proxy()
