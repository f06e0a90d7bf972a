"""The internal listener, round 3b: account endpoints stay closed whatever the rules say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.internal import create_internal_app
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.test_internal import ACT, AUTH, TOKEN, load_settings_from, write_tokens

# Each passes the settings' check (it names no account path literally), yet its {param}
# matches one: /api/v1/auths/api_key hands out the user's API key, /api/v1/auths/update/...
# changes who they are, /oauth/... signs them in elsewhere.
SNEAKY_RULES = (
    "GET /api/v1/{section}/api_key",
    "POST /api/v1/{section}/api_key",
    "POST /api/v1/{section}/update/password",
    "POST /api/{version}/auths/add",
    "GET /{prefix}/{provider}/login",
)
ACCOUNT_TARGETS = (
    ("GET", "/api/v1/auths/api_key"),
    ("POST", "/api/v1/auths/api_key"),
    ("POST", "/api/v1/auths/update/password"),
    ("POST", "/api/v1/auths/add"),
    ("GET", "/oauth/google/login"),
)


@pytest.fixture
async def sneaky(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], FakeUpstream]]:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = load_settings_from(
        tmp_path,
        upstream=str(server.make_url("/")),
        internal_allow=",".join(("POST /api/v1/auths/signin", *SNEAKY_RULES)),
    )
    upstream = Upstream.open(settings)
    app: web.Application = create_internal_app(settings, upstream)
    client = await aiohttp_client(app)
    yield client, fake
    await upstream.close()


@pytest.mark.parametrize(("method", "target"), ACCOUNT_TARGETS)
async def test_a_param_rule_never_opens_an_account_endpoint(
    sneaky: tuple[TestClient[Any, Any], FakeUpstream], method: str, target: str
) -> None:
    client, fake = sneaky
    response = await client.request(method, target, headers={**AUTH, **ACT}, json={})
    assert response.status == 403
    assert "account" in (await response.json())["error"]
    assert fake.seen == []
