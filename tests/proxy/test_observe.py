"""One observation middleware for both listeners (``proxy/observe.py``): what the public
listener always had (upstream failures counted by kind, a cut mid-body stream told apart
from a client that left) holds on the internal listener too."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from proxy import logs
from proxy.internal import create_internal_app
from proxy.metrics import Metrics
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream
from tests.proxy.test_internal import AUTH, TOKEN, audits, make_settings, write_tokens
from tests.proxy.test_process import _metric
from tests.proxy.test_relay import _closed_port


@contextlib.asynccontextmanager
async def internal_listener(
    aiohttp_client: Any, tmp_path: Path, upstream_url: str, **overrides: Any
) -> AsyncIterator[tuple[Any, Metrics]]:
    """A test client for the internal listener in front of ``upstream_url``, and its metrics."""
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, upstream_url, **overrides)
    upstream = Upstream.open(settings)
    metrics = Metrics()
    try:
        yield await aiohttp_client(create_internal_app(settings, upstream, metrics)), metrics
    finally:
        await upstream.close()


def assert_counted_once(metrics: Metrics, kind: str) -> None:
    """One upstream error of ``kind`` and one 5xx request, both on the internal listener."""
    text = metrics.render().decode()
    assert _metric(text, "owui_proxy_upstream_errors_total", kind=kind, listener="internal") == 1
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="5xx") == 1


async def test_an_internal_upstream_failure_is_counted_by_kind(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    async with internal_listener(aiohttp_client, tmp_path, closed) as (client, metrics):
        with capture_logs() as captured:
            response = await client.get("/api/config", headers=AUTH)
            assert response.status == 502
            assert (await response.json())["error"].startswith("upstream unreachable")
    [audit] = audits(captured)
    assert (audit["outcome"], audit["status"]) == ("upstream_error", 502)
    assert_counted_once(metrics, "unavailable")


async def test_an_internal_stream_that_breaks_mid_body_is_cut_and_counted(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    server = await aiohttp_server(FakeUpstream().app())
    url, allow = str(server.make_url("/")), ("GET /broken",)
    async with internal_listener(aiohttp_client, tmp_path, url, internal_allow=allow) as (
        client,
        metrics,
    ):
        with capture_logs() as captured:
            response = await client.get("/broken", headers=AUTH)
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    [audit] = audits(captured)
    assert (audit["outcome"], audit["status"]) == ("broken", None)
    assert [entry["event"] for entry in captured].count("upstream_broke_off") == 1
    assert_counted_once(metrics, "broke_off")


async def test_a_line_logged_while_a_request_is_handled_carries_its_id(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The request id reaches every line logged during the request (through the
    ``add_request_id`` processor), and no line after it."""
    closed = f"http://127.0.0.1:{_closed_port()}"
    async with internal_listener(aiohttp_client, tmp_path, closed) as (client, _):
        with capture_logs(processors=[logs.add_request_id]) as lines:
            response = await client.get("/api/config", headers=AUTH)
            assert response.status == 502
            logs.get().warning("after_the_request")
    [failed] = [line for line in lines if line["event"] == "request_failed"]
    assert failed["request_id"] == response.headers["X-Request-ID"]
    [after] = [line for line in lines if line["event"] == "after_the_request"]
    assert "request_id" not in after


@pytest.mark.parametrize(
    ("bound", "line", "expected"),
    [
        (None, {"event": "x"}, {"event": "x"}),
        ("r1", {"event": "x"}, {"request_id": "r1", "event": "x"}),
        ("r1", {"event": "x", "request_id": "own"}, {"event": "x", "request_id": "own"}),
    ],
)
def test_add_request_id(bound: str | None, line: dict[str, Any], expected: dict[str, Any]) -> None:
    token = logs.request_id.set(bound)
    try:
        assert logs.add_request_id(None, "warning", dict(line)) == expected
    finally:
        logs.request_id.reset(token)
