"""The admin listener: /healthz, /readyz, /metrics, nothing else; none of them public."""

from __future__ import annotations

import asyncio

import pytest

from proxy.app import Runtime, create_admin_app, create_app
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_relay import _closed_port


@pytest.fixture
async def stack(aiohttp_client, settings_for):
    async def make(**overrides):
        runtime = Runtime(settings_for(**overrides))
        await runtime.start()
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        # OpenWebUI is checked in the background (proxy/readiness.py): often, for the tests.
        admin = await aiohttp_client(
            create_admin_app(runtime.settings, runtime, check_every_s=0.05)
        )
        started.append(runtime)
        return public, admin

    started: list[Runtime] = []
    yield make
    for runtime in started:
        await runtime.close()


async def test_health_ready_and_nothing_else(stack) -> None:
    _public, admin = await stack()
    assert (await admin.get("/healthz")).status == 200
    ready = await admin.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"ready": True}
    assert (await admin.get("/api/models")).status == 404
    assert (await admin.post("/healthz")).status == 405


async def test_not_ready_when_upstream_down(stack) -> None:
    _public, admin = await stack(upstream=f"http://127.0.0.1:{_closed_port()}")
    assert (await admin.get("/healthz")).status == 200  # alive, just not ready
    ready = await admin.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["problems"][0].startswith("upstream: GET /health failed")


async def test_metrics_count_requests_auth_and_latency(stack) -> None:
    public, admin = await stack()
    assert (await public.get("/x", headers=ALICE_COOKIE)).status == 200
    assert (await public.get("/x")).status == 401
    text = await (await admin.get("/metrics")).text()
    assert 'owui_proxy_requests_total{listener="public",status_class="2xx"} 1.0' in text
    assert 'owui_proxy_requests_total{listener="public",status_class="4xx"} 1.0' in text
    assert 'owui_proxy_auth_decisions_total{outcome="identity"} 1.0' in text
    assert 'owui_proxy_auth_decisions_total{outcome="denied"} 1.0' in text
    assert "owui_proxy_upstream_response_seconds_count 1.0" in text
    assert "owui_proxy_open_websockets 0.0" in text
    assert "alice" not in text


async def test_admin_paths_are_not_special_on_the_public_listener(stack, fake_upstream) -> None:
    public, _admin = await stack()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await public.get(path)).status == 401  # no identity, no answer
        assert (await public.get(path, headers=ALICE_COOKIE)).status == 200
        assert fake_upstream.last().raw_path == path  # relayed like anything else


async def test_metrics_say_ready_as_readyz_does_at_each_scrape(stack) -> None:
    """``owui_proxy_ready`` is /readyz's answer, evaluated when Prometheus scrapes."""
    _public, admin = await stack()
    assert "owui_proxy_ready 1.0" in await (await admin.get("/metrics")).text()
    _public, down = await stack(upstream=f"http://127.0.0.1:{_closed_port()}")
    text = await (await down.get("/metrics")).text()
    assert "owui_proxy_ready 0.0" in text
    assert "owui_proxy_openwebui_release_refused 0.0" in text  # unknown is not refused


async def test_metrics_say_when_openwebui_runs_a_refused_release(stack, fake_upstream) -> None:
    """Replaced by a release the proxy refuses while running: 1 from the next scrape on."""
    _public, admin = await stack()
    assert "owui_proxy_openwebui_release_refused 0.0" in await (await admin.get("/metrics")).text()
    fake_upstream.version = "0.6.5"
    text = await scraped_once(admin, "owui_proxy_openwebui_release_refused 1.0")
    assert "owui_proxy_ready 0.0" in text
    fake_upstream.version = "0.12.4"
    text = await scraped_once(admin, "owui_proxy_openwebui_release_refused 0.0")
    assert "owui_proxy_ready 1.0" in text


async def scraped_once(admin, line: str) -> str:
    """The first scrape showing ``line``, once the background check has read the release."""
    for _ in range(100):
        text = await (await admin.get("/metrics")).text()
        if line in text.splitlines():
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"never scraped {line!r}")


async def test_the_series_alerts_watch_exist_at_zero_from_the_start(stack) -> None:
    """A rate over a fresh proxy is 0, not absent, and increase() sees the first error."""
    _public, admin = await stack()
    text = await (await admin.get("/metrics")).text()
    for listener in ("public", "internal"):
        for status_class in ("2xx", "4xx", "5xx", "client_closed"):
            sample = f'listener="{listener}",status_class="{status_class}"'
            assert f"owui_proxy_requests_total{{{sample}}} 0.0" in text
        for kind in ("unavailable", "timeout", "refused", "broke_off"):
            sample = f'kind="{kind}",listener="{listener}"'
            assert f"owui_proxy_upstream_errors_total{{{sample}}} 0.0" in text
    for kind in ("timeout", "unreachable", "status"):
        assert f'owui_proxy_auth_service_errors_total{{kind="{kind}"}} 0.0' in text
