"""The per-request metrics are tallied in plain numbers and pushed into prometheus-client
later (proxy/metrics.py): what /metrics shows must be what counting at once showed."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.metrics import _LATENCY_BUCKETS, MULTIPROC_ENV, Metrics
from tests.proxy.test_process import _metric

# On a bound, between bounds, below the first, above the last finite one, zero.
OBSERVED = [0.005, 0.0051, 0.001, 0.0, 120.0, 121.5, 0.3, 0.3, 7.25]


def _histogram_lines(text: str, name: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.startswith(name + "_") and "created" not in line
    ]


def test_the_latency_histogram_renders_as_prometheus_client_observing_each_value() -> None:
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "owui_proxy_upstream_response_seconds",
        "reference",
        buckets=_LATENCY_BUCKETS,
        registry=reference_registry,
    )
    for value in OBSERVED:
        metrics.upstream_latency.observe(value)
        reference.observe(value)
    name = "owui_proxy_upstream_response_seconds"
    rendered = _histogram_lines(metrics.render().decode(), name)
    assert rendered == _histogram_lines(generate_latest(reference_registry).decode(), name)
    assert f"{name}_count {float(len(OBSERVED))}" in rendered
    # A second render pushes nothing twice.
    assert _histogram_lines(metrics.render().decode(), name) == rendered


def test_counts_render_as_counted() -> None:
    metrics = Metrics()
    for status in (200, 204, 404, 499, 502):
        metrics.count_request("public", status)
    for outcome in ("identity", "identity", "denied"):
        metrics.count_decision(outcome)
    metrics.count_cache("hit")
    text = metrics.render().decode()
    assert _metric(text, "owui_proxy_requests_total", listener="public", status_class="2xx") == 2
    assert _metric(text, "owui_proxy_requests_total", listener="public", status_class="4xx") == 1
    assert (
        _metric(text, "owui_proxy_requests_total", listener="public", status_class="client_closed")
        == 1
    )
    assert _metric(text, "owui_proxy_requests_total", listener="public", status_class="5xx") == 1
    assert _metric(text, "owui_proxy_auth_decisions_total", outcome="identity") == 2
    assert _metric(text, "owui_proxy_forward_auth_cache_total", result="hit") == 1
    metrics.count_decision("identity")
    assert (
        _metric(metrics.render().decode(), "owui_proxy_auth_decisions_total", outcome="identity")
        == 3
    )


@pytest.fixture
def shared_folder(tmp_path, monkeypatch):
    """prometheus-client's multiprocess mode, as proxy/server.py turns it on for workers."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())
    return tmp_path


def _files(folder) -> str:
    """What worker 0's scrape reads: every worker's files, summed."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(folder))
    return generate_latest(registry).decode()


async def test_with_workers_a_count_reaches_the_files_when_the_iteration_ends(shared_folder):
    """Another worker's scrape reads the files, not this process's tallies."""
    metrics = Metrics()
    metrics.count_request("public", 200)
    metrics.count_decision("identity")
    metrics.upstream_latency.observe(0.02)
    await asyncio.sleep(0)  # the iteration that counted has ended
    text = _files(shared_folder)
    assert _metric(text, "owui_proxy_requests_total", listener="public", status_class="2xx") == 1
    assert _metric(text, "owui_proxy_auth_decisions_total", outcome="identity") == 1
    assert "owui_proxy_upstream_response_seconds_count 1.0" in text


def test_with_workers_outside_a_loop_a_count_is_pushed_at_once(shared_folder):
    metrics = Metrics()
    metrics.count_request("internal", 503)
    metrics.count_request("internal", 503)
    text = _files(shared_folder)
    assert _metric(text, "owui_proxy_requests_total", listener="internal", status_class="5xx") == 2
