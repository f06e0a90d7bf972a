"""Prometheus metrics in the proxy's own registry, served on the admin listener only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class JwksStatus(Protocol):
    """What the JWT identity source reports about its key set (``proxy/auth/jwt.py``)."""

    @property
    def jwks_last_success(self) -> float | None: ...
    @property
    def jwks_fetches(self) -> int: ...
    @property
    def jwks_fetch_failures(self) -> int: ...
    @property
    def jwks_keys(self) -> int: ...


class _JwksCollector(Collector):
    """Read at scrape time, so the JWT source keeps plain counters and no metrics import."""

    def __init__(self, source: JwksStatus) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        fetches = CounterMetricFamily("owui_proxy_jwks_fetches", "JWKS fetches.")
        fetches.add_metric([], self.source.jwks_fetches)
        failures = CounterMetricFamily("owui_proxy_jwks_fetch_failures", "Failed JWKS fetches.")
        failures.add_metric([], self.source.jwks_fetch_failures)
        keys = GaugeMetricFamily("owui_proxy_jwks_keys", "Keys currently held.")
        keys.add_metric([], self.source.jwks_keys)
        last = GaugeMetricFamily(
            "owui_proxy_jwks_last_success_timestamp_seconds",
            "Unix time of the last good JWKS fetch (0: never).",
        )
        last.add_metric([], self.source.jwks_last_success or 0)
        yield from (fetches, failures, keys, last)


# nginx's code for a request whose client closed the connection first.
CLIENT_CLOSED_STATUS = 499
CLIENT_CLOSED = "client_closed"

# Upstream latency is time to response headers: streams would swamp a total-time histogram.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Everything the proxy counts. One instance per process, made in ``create_app``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "owui_proxy_requests",
            "Requests answered, by listener and status class (2xx, 4xx, ...; client_closed: "
            "the client left before the response was complete).",
            ("listener", "status_class"),
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "owui_proxy_upstream_response_seconds",
            "Time from sending a request upstream to its response headers.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.open_websockets = Gauge(
            "owui_proxy_open_websockets",
            "WebSockets currently relayed.",
            registry=self.registry,
        )
        self.auth_decisions = Counter(
            "owui_proxy_auth_decisions",
            "Identity decisions on the public listener, by outcome.",
            ("outcome",),
            registry=self.registry,
        )
        self.forward_auth_cache = Counter(
            "owui_proxy_forward_auth_cache",
            "Forward-auth decision cache lookups, by result (hit, miss).",
            ("result",),
            registry=self.registry,
        )
        self.forward_auth_calls = Counter(
            "owui_proxy_forward_auth_calls",
            "Requests sent to the forward-auth service.",
            registry=self.registry,
        )

        # Label children resolved once: labels() builds and locks on every call.
        self._requests: dict[tuple[str, int], Counter] = {}
        self._decisions: dict[str, Counter] = {}
        self._cache: dict[str, Counter] = {}

    def watch_jwks(self, source: JwksStatus) -> None:
        self.registry.register(_JwksCollector(source))

    def count_request(self, listener: str, status: int) -> None:
        """One answered request; 499 (the client went away) is ``client_closed``, apart from
        4xx, so neither client nor server error rates count a user closing a tab."""
        key = (listener, status)
        child = self._requests.get(key)
        if child is None:
            label = CLIENT_CLOSED if status == CLIENT_CLOSED_STATUS else f"{status // 100}xx"
            child = self._requests[key] = self.requests.labels(listener, label)
        child.inc()

    def count_decision(self, outcome: str) -> None:
        """An identity decision on the public listener (``identity``, ``denied``, ...)."""
        child = self._decisions.get(outcome)
        if child is None:
            child = self._decisions[outcome] = self.auth_decisions.labels(outcome)
        child.inc()

    def count_cache(self, result: str) -> None:
        """A forward-auth decision cache lookup (``hit`` or ``miss``)."""
        child = self._cache.get(result)
        if child is None:
            child = self._cache[result] = self.forward_auth_cache.labels(result)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
