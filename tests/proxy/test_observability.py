"""Observability: metrics from every worker, both listeners counted, auth-service and
upstream failures by kind, the build, readiness that follows the auth service, and access
lines that report the bytes actually sent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from proxy import version
from proxy.app import Runtime, create_admin_app, create_app
from proxy.internal import create_internal_app
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_internal import AUTH, STUDENT, TOKEN, make_settings, write_tokens
from tests.proxy.test_logs import sink  # noqa: F401 - the fixture
from tests.proxy.test_process import _metric, start_proxy  # noqa: F401 - the fixture
from tests.proxy.test_relay import _closed_port


async def test_a_two_worker_scrape_counts_every_request(start_proxy) -> None:  # noqa: F811
    proxy = start_proxy(workers="2")
    requests = 40
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        for _ in range(requests):
            # A connection each: the kernel spreads new connections over both workers.
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as c,
                c.get(proxy.public + "/x", headers=ALICE_COOKIE) as response,
            ):
                assert response.status == 200
        # Each worker hands its tallies over as the loop iteration that counted ends, which
        # may be just after the client has its answer: a scrape is that late at most.
        deadline = time.monotonic() + 5
        while True:
            async with session.get(proxy.admin + "/metrics") as response:
                text = await response.text()
            counted = _metric(
                text, "owui_proxy_requests_total", listener="public", status_class="2xx"
            )
            if counted >= requests or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        proxy.process.send_signal(2)  # SIGINT
        code, out = await proxy.wait_exit()
    assert code == 0
    served = {
        json.loads(line)["pid"]
        for line in out.splitlines()
        if line.startswith("{") and '"listening"' in line
    }
    assert len(served) == 2  # both workers were up
    assert counted == requests
    assert _metric(text, "owui_proxy_build_info", version=version()) == 1


@pytest.fixture
async def runtime_apps(settings_for, aiohttp_client):
    runtimes: list[Runtime] = []

    async def make(**overrides: Any):
        runtime = Runtime(settings_for(**overrides))
        await runtime.start()
        runtimes.append(runtime)
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        admin = await aiohttp_client(create_admin_app(runtime.settings, runtime))
        return runtime, public, admin

    yield make
    for runtime in runtimes:
        await runtime.close()


async def test_readyz_follows_the_auth_service(runtime_apps, fake_auth) -> None:
    runtime, _public, admin = await runtime_apps()
    assert (await admin.get("/readyz")).status == 200
    fake_auth.mode = "error"  # every request would now be a 503
    await runtime.authenticator.probe()
    ready = await admin.get("/readyz")
    assert ready.status == 503
    assert any(
        p.startswith("auth: auth service answered 500") for p in (await ready.json())["problems"]
    )
    fake_auth.mode = "ok"
    await runtime.authenticator.probe()
    assert (await admin.get("/readyz")).status == 200
    assert fake_auth.probes == 3
    assert fake_auth.seen == []  # probes are not users' requests


async def test_readyz_when_the_auth_service_is_unreachable(runtime_apps) -> None:
    _runtime, _public, admin = await runtime_apps(
        forward_auth_url=f"http://127.0.0.1:{_closed_port()}/oauth2/auth"
    )
    ready = await admin.get("/readyz")
    assert ready.status == 503
    assert any("auth service unreachable" in p for p in (await ready.json())["problems"])


async def test_auth_service_latency_and_errors_are_counted(runtime_apps, fake_auth) -> None:
    _runtime, public, admin = await runtime_apps(auth_timeout_s=0.5)
    assert (await public.get("/x", headers=ALICE_COOKIE)).status == 200
    fake_auth.mode = "error"
    assert (await public.get("/x", headers=ALICE_COOKIE)).status == 503
    fake_auth.mode, fake_auth.delay = "slow", 2
    assert (await public.get("/x", headers=ALICE_COOKIE)).status == 503
    text = await (await admin.get("/metrics")).text()
    assert _metric(text, "owui_proxy_auth_service_errors_total", kind="status") == 1
    assert _metric(text, "owui_proxy_auth_service_errors_total", kind="timeout") == 1
    assert _unlabelled(text, "owui_proxy_auth_service_seconds_count") == 2  # the two answers


async def test_upstream_errors_by_kind(settings_for, aiohttp_client) -> None:
    settings = settings_for(upstream=f"http://127.0.0.1:{_closed_port()}")
    runtime = Runtime(settings)
    await runtime.start()
    try:
        public = await aiohttp_client(create_app(settings, runtime))
        admin = await aiohttp_client(create_admin_app(settings, runtime))
        assert (await public.get("/x", headers=ALICE_COOKIE)).status == 502
        text = await (await admin.get("/metrics")).text()
    finally:
        await runtime.close()
    assert (
        _metric(text, "owui_proxy_upstream_errors_total", kind="unavailable", listener="public")
        == 1
    )


def _unlabelled(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_generated_bodies_count_in_the_access_line(proxy, sink) -> None:  # noqa: F811
    response = await proxy.get("/x")  # no session: the proxy's own 401 JSON
    body = await response.read()
    assert response.status == 401
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert lines[-1]["status"] == 401
    assert lines[-1]["bytes"] == len(body) > 0


async def test_streamed_and_relayed_bodies_count_too(proxy, sink) -> None:  # noqa: F811
    response = await proxy.get("/download?bytes=300000", headers=ALICE_COOKIE)
    body = await response.read()
    assert len(body) == 300000
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    # What went on the wire after the head, chunked framing included (as nginx counts it).
    assert 300000 <= lines[-1]["bytes"] <= 300000 + 1024


async def test_internal_calls_are_counted_by_outcome_and_rule(
    aiohttp_client, aiohttp_server, tmp_path: Path
) -> None:
    from proxy.metrics import Metrics
    from proxy.upstream import Upstream
    from tests.fakes import FakeUpstream

    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, str(server.make_url("/")))
    upstream = Upstream.open(settings)
    metrics = Metrics()
    client = await aiohttp_client(create_internal_app(settings, upstream, metrics))
    try:
        with capture_logs():
            assert (
                await client.get("/api/config", headers={**AUTH, "X-User-Email": STUDENT})
            ).status == 200
            assert (await client.get("/api/config")).status == 407
            assert (await client.get("/api/v1/users", headers=AUTH)).status == 403
    finally:
        await upstream.close()
    text = metrics.render().decode()
    assert (
        _metric(text, "owui_proxy_internal_calls_total", outcome="relayed", rule="GET /api/config")
        == 1
    )
    assert (
        _metric(text, "owui_proxy_internal_calls_total", outcome="proxy_auth_required", rule="none")
        == 1
    )
    assert _metric(text, "owui_proxy_internal_calls_total", outcome="forbidden", rule="none") == 1
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="2xx") == 1
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="4xx") == 2
