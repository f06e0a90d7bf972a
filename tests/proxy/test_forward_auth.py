"""Forward-auth: what the auth service is asked, how its answers map, and the decision cache."""

from __future__ import annotations

import aiohttp
import pytest
from structlog.testing import capture_logs

from proxy.auth.forward import DecisionCache, ForwardAuthenticator
from proxy.identity import Identity
from proxy.settings import Settings
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE


async def test_auth_service_gets_cookie_and_original_request_never_authorization(
    proxy, fake_auth
) -> None:
    await proxy.post(
        "/api/v1/chats/new?x=1",
        headers={**ALICE_COOKIE, "Authorization": "Bearer owui-token", "X-Forwarded-Host": "e.v"},
        data=b"{}",
    )
    asked = fake_auth.seen[-1]
    assert asked.method == "GET"
    assert asked.body == b""
    assert asked.values("Cookie") == ["_oauth2_proxy=alice-session"]
    assert asked.values("Authorization") == []
    assert asked.values("X-Forwarded-Method") == ["POST"]
    assert asked.values("X-Forwarded-Uri") == ["/api/v1/chats/new?x=1"]
    assert asked.values("X-Forwarded-Proto") == ["http"]
    host = f"{proxy.host}:{proxy.port}"
    assert asked.values("X-Forwarded-Host") == [host]  # the client's copy is not believed
    assert asked.values("X-Original-URL") == [f"http://{host}/api/v1/chats/new?x=1"]


async def test_auth_service_told_our_public_name_not_the_clients_host(make_proxy, fake_auth):
    proxy = await make_proxy(public_url="https://chat.example.edu")
    await proxy.get("/c/1", headers={**ALICE_COOKIE, "Host": "evil.example"})
    asked = fake_auth.seen[-1]
    assert asked.values("X-Forwarded-Host") == ["chat.example.edu"]
    assert asked.values("X-Forwarded-Proto") == ["https"]
    assert asked.values("X-Original-URL") == ["https://chat.example.edu/c/1"]


async def test_denial_passes_status_and_login_hints(proxy, fake_auth, fake_upstream) -> None:
    response = await proxy.get("/api/models", allow_redirects=False)
    assert response.status == 401
    assert response.headers["Location"] == fake_auth.login_url
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="fake"'
    fake_auth.mode = "forbidden"
    forbidden = await proxy.get("/api/models", headers=ALICE_COOKIE)
    assert forbidden.status == 403
    assert (await forbidden.json())["error"] == "forbidden"
    fake_auth.mode = "redirect"  # Authelia's way of saying 401 to a browser
    redirected = await proxy.get("/api/models", headers=ALICE_COOKIE, allow_redirects=False)
    assert redirected.status == 401
    assert redirected.headers["Location"] == fake_auth.login_url
    assert fake_upstream.seen == []


@pytest.mark.parametrize("mode", ["error", "slow"])
async def test_auth_service_failure_is_503(make_proxy, fake_auth, fake_upstream, mode) -> None:
    proxy = await make_proxy(auth_timeout_s=0.5)
    fake_auth.mode = mode
    response = await proxy.get("/", headers=ALICE_COOKIE)
    assert response.status == 503
    assert (await response.json())["error"].startswith("auth service")
    assert fake_upstream.seen == []


async def test_auth_service_down_is_503(make_proxy, fake_upstream) -> None:
    from tests.proxy.test_relay import _closed_port

    proxy = await make_proxy(forward_auth_url=f"http://127.0.0.1:{_closed_port()}/auth")
    assert (await proxy.get("/", headers=ALICE_COOKIE)).status == 503
    assert fake_upstream.seen == []


async def test_without_cache_every_request_asks(proxy, fake_auth) -> None:
    for _ in range(3):
        assert (await proxy.get("/", headers=ALICE_COOKIE)).status == 200
    assert len(fake_auth.seen) == 3


async def test_cache_hits_misses_and_failures_not_cached(make_proxy, fake_auth, fake_upstream):
    proxy = await make_proxy(forward_auth_cache_s=60)
    for _ in range(3):
        assert (await proxy.get("/", headers=ALICE_COOKIE)).status == 200
    assert len(fake_auth.seen) == 1  # one miss, two hits
    assert fake_upstream.last().values("X-User-Email") == ["alice@example.edu"]
    assert (await proxy.get("/", headers=BOB_COOKIE)).status == 200
    assert len(fake_auth.seen) == 2  # other credentials, other key
    assert fake_upstream.last().values("X-User-Email") == ["bob@example.edu"]

    # Denials are never cached: each unknown session is asked about again.
    for _ in range(2):
        assert (await proxy.get("/", headers={"Cookie": "_oauth2_proxy=nobody"})).status == 401
    assert len(fake_auth.seen) == 4
    # Failures are never cached either, and a failure does not poison a later success.
    fake_auth.mode = "error"
    cookie = {"Cookie": "_oauth2_proxy=carol-session"}
    assert (await proxy.get("/", headers=cookie)).status == 503
    fake_auth.mode = "ok"
    fake_auth.users = {**fake_auth.users, "carol-session": {"X-Auth-Request-Email": "c@x.edu"}}
    assert (await proxy.get("/", headers=cookie)).status == 200
    assert len(fake_auth.seen) == 6


async def test_cached_allow_never_answers_for_another_request(make_proxy, fake_auth) -> None:
    """Path-aware services (Authelia rules) decide per request: the key is all they see."""
    proxy = await make_proxy(forward_auth_cache_s=60)
    fake_auth.deny_uris = {"/api/v1/admin/config"}
    assert (await proxy.get("/api/v1/chats/list", headers=ALICE_COOKIE)).status == 200
    assert (await proxy.get("/api/v1/admin/config", headers=ALICE_COOKIE)).status == 403
    assert (await proxy.post("/api/v1/chats/list", headers=ALICE_COOKIE)).status == 200
    assert len(fake_auth.seen) == 3  # other path, other method: asked each time
    assert (await proxy.get("/api/v1/chats/list", headers=ALICE_COOKIE)).status == 200
    assert len(fake_auth.seen) == 3  # the very same request: served from the cache


def test_decision_cache_expires_and_is_bounded() -> None:
    now = [1000.0]
    cache = DecisionCache(ttl_s=10, size=2, clock=lambda: now[0])
    a, b, c = (Identity(f"{n}@x.edu") for n in "abc")
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") == a  # a is now the most recently used
    cache.put(b"c", c)  # evicts b, the least recently used
    assert cache.get(b"b") is None
    assert cache.get(b"a") == a
    now[0] += 10
    assert cache.get(b"a") is None  # expired at exactly ttl
    assert len(cache) == 1


@pytest.mark.parametrize(("public_url", "warned"), [(None, True), ("https://chat.example", False)])
async def test_start_warns_when_the_auth_service_would_see_the_clients_host(
    public_url, warned
) -> None:
    settings = Settings(
        upstream="http://127.0.0.1:9",
        auth="forward",
        forward_auth_url="http://127.0.0.1:9/oauth2/auth",
        public_url=public_url,
    )
    async with aiohttp.ClientSession() as session:
        with capture_logs() as logs:
            await ForwardAuthenticator(settings, session).start()
    assert any(line["event"] == "public_url_unset" for line in logs) is warned
