"""One observation middleware for both listeners (``proxy/observe.py``): what the public
listener always had (upstream failures counted by kind, a cut mid-body stream told apart
from a client that left) holds on the internal listener too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from proxy.internal import create_internal_app
from proxy.metrics import Metrics
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.test_internal import AUTH, TOKEN, audits, make_settings, write_tokens
from tests.proxy.test_process import _metric
from tests.proxy.test_relay import _closed_port


async def test_an_internal_upstream_failure_is_counted_by_kind(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    upstream = Upstream.open(settings)
    metrics = Metrics()
    client = await aiohttp_client(create_internal_app(settings, upstream, metrics))
    try:
        with capture_logs() as logs:
            response = await client.get("/api/config", headers=AUTH)
            assert response.status == 502
            assert (await response.json())["error"].startswith("upstream unreachable")
    finally:
        await upstream.close()
    [audit] = audits(logs)
    assert (audit["outcome"], audit["status"]) == ("upstream_error", 502)
    text = metrics.render().decode()
    assert (
        _metric(text, "owui_proxy_upstream_errors_total", kind="unavailable", listener="internal")
        == 1
    )
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="5xx") == 1


async def test_an_internal_stream_that_breaks_mid_body_is_cut_and_counted(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, str(server.make_url("/")), internal_allow=("GET /broken",))
    upstream = Upstream.open(settings)
    metrics = Metrics()
    client = await aiohttp_client(create_internal_app(settings, upstream, metrics))
    try:
        with capture_logs() as logs:
            response = await client.get("/broken", headers=AUTH)
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    finally:
        await upstream.close()
    [audit] = audits(logs)
    assert (audit["outcome"], audit["status"]) == ("broken", None)
    assert [entry["event"] for entry in logs].count("upstream_broke_off") == 1
    text = metrics.render().decode()
    assert (
        _metric(text, "owui_proxy_upstream_errors_total", kind="broke_off", listener="internal")
        == 1
    )
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="5xx") == 1
