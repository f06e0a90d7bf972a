"""Prometheus metrics in the proxy's own registry, served on the admin listener only.

With several workers (``OWUI_PROXY_WORKERS``), every worker's counters, histograms and
gauges live in prometheus-client's multiprocess files (``proxy/server.py`` turns the mode on
before forking, in a fresh folder per run); the admin listener, on worker 0, renders the sum
over all workers. Collectors read at scrape time (the JWKS status) are worker 0's: every
worker fetches the same key set.

What every request counts (the request, the identity decision, the decision cache, the
upstream latency) is first tallied in plain numbers, which costs a tenth of a
prometheus-client update (that one takes a lock and, with workers, writes a memory-mapped
file; several per request added up to ~4 % of a request's instructions). The tallies are
pushed into prometheus-client's values when ``/metrics`` is rendered and, with workers,
also when the event-loop iteration that counted ends, so worker 0's scrape sees every
worker's counts one iteration after they were made. A worker that dies keeps what it had
pushed in its files (summed as before); a worker killed with SIGKILL loses at most the
tallies of its last iteration.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proxy import version

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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


# Upstream failures by kind (proxy/errors.py's class names; metrics does not import them).
_UPSTREAM_KINDS = {
    "UpstreamUnavailable": "unavailable",
    "UpstreamTimeout": "timeout",
    "UpstreamRefused": "refused",
    "UpstreamError": "unavailable",
}

# nginx's code for a request whose client closed the connection first.
CLIENT_CLOSED_STATUS = 499
CLIENT_CLOSED = "client_closed"

# The listeners that count requests (proxy/observe.py's ``listener``).
LISTENERS = ("public", "internal")

# Upstream latency is time to response headers: streams would swamp a total-time histogram.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _Tally:
    """What one counter child has been counted since the last push."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0

    def push(self) -> None:
        pending, self.pending = self.pending, 0
        self.child.inc(pending)


class _TalliedHistogram:
    """An unlabelled histogram observed into plain bucket counts, pushed as
    :class:`_Tally` is. ``observe`` is what ``Histogram.observe`` is to its caller."""

    def __init__(self, histogram: Histogram, buckets: tuple[float, ...], owner: Metrics) -> None:
        self.histogram = histogram
        self.bounds = [*buckets, float("inf")]  # prometheus-client's buckets, +Inf last
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.owner = owner
        self.pending = 0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is at least the value: Histogram.observe's choice.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if not self.pending:
            self.pending = 1
            self.owner.tallied(self)

    def push(self) -> None:
        # prometheus-client keeps a histogram as one value per bucket and one for the sum,
        # and its observe() adds to them one observation at a time; these add the tally.
        for index, count in enumerate(self.counts):
            if count:
                self.histogram._buckets[index].inc(count)
                self.counts[index] = 0
        self.histogram._sum.inc(self.sum)
        self.sum = 0.0
        self.pending = 0


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
        upstream_latency = Histogram(
            "owui_proxy_upstream_response_seconds",
            "Time from sending a request upstream to its response headers.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.open_websockets = Gauge(
            "owui_proxy_open_websockets",
            "WebSockets currently relayed.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        build = Gauge(
            "owui_proxy_build_info",
            "Always 1; the running version in the label.",
            ("version",),
            registry=self.registry,
            multiprocess_mode="max",
        )
        build.labels(version()).set(1)
        self.auth_service_latency = Histogram(
            "owui_proxy_auth_service_seconds",
            "Time the forward-auth service took to answer.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_service_errors = Counter(
            "owui_proxy_auth_service_errors",
            "Forward-auth calls that gave no decision, by kind (timeout, unreachable, status, "
            "too_large).",
            ("kind",),
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "owui_proxy_upstream_errors",
            "Requests OpenWebUI failed, by kind (unavailable: no connection or broke before "
            "headers; timeout; refused: a WebSocket upgrade refused; broke_off: mid-body).",
            ("listener", "kind"),
            registry=self.registry,
        )
        self.internal_calls = Counter(
            "owui_proxy_internal_calls",
            "Internal listener calls, by audit outcome and the allowlist rule that matched "
            "(none: refused before one did).",
            ("outcome", "rule"),
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
        # Set by the admin listener at each scrape (worker 0's is the one that counts), so
        # an alert needs no /readyz prober: Prometheus itself asks.
        self.ready = Gauge(
            "owui_proxy_ready",
            "1 when /readyz would answer 200 at this scrape, else 0.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.openwebui_release_refused = Gauge(
            "owui_proxy_openwebui_release_refused",
            "1 while OpenWebUI runs a release the proxy refuses to relay to, else 0.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

        # The series alerts watch exist from the start, at 0: a rate over a fresh process is
        # then 0 rather than absent, and increase() sees the first error (a series born at 1
        # would hide it).
        for listener in LISTENERS:
            for status_class in ("2xx", "4xx", "5xx", CLIENT_CLOSED):
                self.requests.labels(listener, status_class)
            for kind in ("unavailable", "timeout", "refused", "broke_off"):
                self.upstream_errors.labels(listener, kind)
        for kind in ("timeout", "unreachable", "status"):
            self.auth_service_errors.labels(kind)

        # Per request: tallied (see the module's docstring). Children resolved once.
        self.upstream_latency = _TalliedHistogram(upstream_latency, _LATENCY_BUCKETS, self)
        self._requests: dict[tuple[str, int], _Tally] = {}
        self._decisions: dict[str, _Tally] = {}
        self._cache: dict[str, _Tally] = {}
        self._pending: list[_Tally | _TalliedHistogram] = []
        self._shared = bool(os.environ.get(MULTIPROC_ENV))  # several workers: push often
        self._scrape_time: list[Collector] = []

    def watch_jwks(self, source: JwksStatus) -> None:
        collector = _JwksCollector(source)
        self._scrape_time.append(collector)
        self.registry.register(collector)

    def count_request(self, listener: str, status: int) -> None:
        """One answered request; 499 (the client went away) is ``client_closed``, apart from
        4xx, so neither client nor server error rates count a user closing a tab."""
        key = (listener, status)
        tally = self._requests.get(key)
        if tally is None:
            label = CLIENT_CLOSED if status == CLIENT_CLOSED_STATUS else f"{status // 100}xx"
            tally = self._requests[key] = _Tally(self.requests.labels(listener, label))
        tally.pending += 1
        if tally.pending == 1:
            self.tallied(tally)

    def count_decision(self, outcome: str) -> None:
        """An identity decision on the public listener (``identity``, ``denied``, ...)."""
        tally = self._decisions.get(outcome)
        if tally is None:
            tally = self._decisions[outcome] = _Tally(self.auth_decisions.labels(outcome))
        tally.pending += 1
        if tally.pending == 1:
            self.tallied(tally)

    def count_cache(self, result: str) -> None:
        """A forward-auth decision cache lookup (``hit`` or ``miss``)."""
        tally = self._cache.get(result)
        if tally is None:
            tally = self._cache[result] = _Tally(self.forward_auth_cache.labels(result))
        tally.pending += 1
        if tally.pending == 1:
            self.tallied(tally)

    def tallied(self, tally: _Tally | _TalliedHistogram) -> None:
        """``tally`` has counts to push (it had none): remember it; with workers, push when
        this event-loop iteration ends (at once outside a running loop)."""
        self._pending.append(tally)
        if self._shared and len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.push)
            except RuntimeError:
                self.push()

    def push(self) -> None:
        """Every tally into prometheus-client's values (with workers: their files)."""
        pending, self._pending = self._pending, []
        for tally in pending:
            tally.push()

    def count_upstream_error(self, listener: str, exc: Exception) -> None:
        """An upstream failure that became the request's answer, by kind."""
        kind = _UPSTREAM_KINDS.get(type(exc).__name__, "other")
        self.upstream_errors.labels(listener, kind).inc()

    def render(self) -> bytes:
        """The exposition text: this process's registry, or with several workers the sum
        over every worker (plus this process's scrape-time collectors)."""
        self.push()
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, folder)  # type: ignore[no-untyped-call]
        for collector in self._scrape_time:
            merged.register(collector)
        return generate_latest(merged)
