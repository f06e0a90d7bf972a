"""The shipped rules and dashboard in a real Prometheus, scraping a real proxy and receiver.

A gate of the module's own (demo IdP, proxy, receiver; ``tests/e2e/private_gate.py``) in
front of the session's real OpenWebUI, scraped every second by Debian's Prometheus with its
own config and data folder on loopback. The rules are the shipped ones with every duration
divided by 60 (a minute becomes a second: windows, ``for``, group intervals), so an alert
fires and resolves within a test; thresholds are unchanged.

- while traffic flows (a first sign-in provisioned by the receiver through the internal
  listener, API calls, a refused WebSocket upgrade, anonymous requests), every expression of
  every dashboard panel parses and returns at least one series;
- stopping the auth service makes ``OwuiProxyAuthServiceErrors`` fire, and starting it again
  resolves it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from demo.stack import Stack
from tests.deploy.prometheus import (
    DASHBOARD,
    PROXY_JOB,
    RECEIVER_JOB,
    PrometheusServer,
    running,
    scaled_rules,
)
from tests.e2e.conftest import ARTIFACTS, fresh_email, idp_login, sign_in_through_proxy
from tests.e2e.private_gate import private_gate

pytestmark = pytest.mark.e2e

# The dashboard's variables, as Grafana would fill them in for this Prometheus.
VARIABLES = {
    "$proxy_job": PROXY_JOB,
    "$receiver_job": RECEIVER_JOB,
    "$__rate_interval": "1m",
}
ALERT = "OwuiProxyAuthServiceErrors"


@pytest.fixture(scope="module")
def gate(stack: Stack) -> Iterator[Stack]:
    # The decision cache on, so its panel has hits and misses to show.
    with private_gate(
        stack, ARTIFACTS / "monitoring", proxy_env={"OWUI_PROXY_FORWARD_AUTH_CACHE_S": "5"}
    ) as own:
        yield own


@pytest.fixture(scope="module")
def prometheus(gate: Stack) -> Iterator[PrometheusServer]:
    receiver = gate.webhook_url.removeprefix("http://").split("/", 1)[0]
    server = PrometheusServer(
        ARTIFACTS / "monitoring" / "prometheus",
        {PROXY_JOB: gate.admin_url.removeprefix("http://"), RECEIVER_JOB: receiver},
        scaled_rules(60),
    )
    yield from running(server)


def panel_expressions() -> list[tuple[str, str]]:
    """(panel title, expression with the variables filled in) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"]
            for name, value in VARIABLES.items():
                expression = expression.replace(name, value)
            found.append((panel["title"], expression))
    return found


def traffic(gate: Stack) -> Callable[[], None]:
    """One round of what a school's morning sends through the proxy."""
    student = sign_in_through_proxy(gate, fresh_email("monitored"))  # the hook provisions them

    def one_round() -> None:
        with httpx.Client(base_url=gate.public_url, timeout=30) as anonymous:
            anonymous.get("/api/models")  # no session: denied
        client = student.client
        client.get("/api/models", headers=student.auth())
        client.get("/api/v1/chats/list", headers=student.auth())
        client.get("/", headers={"Accept": "text/html"})
        # OpenWebUI says no to a WebSocket upgrade here: an upstream error of kind "refused".
        client.get(
            "/ws/not-a-socket",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Origin": gate.public_url,
            },
        )

    return one_round


def wait_for(
    what: str, check: Callable[[], bool], during: Callable[[], None], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        during()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_both_targets_are_scraped(gate: Stack, prometheus: PrometheusServer) -> None:
    wait_for(
        "both targets up",
        lambda: prometheus.targets_up() == {PROXY_JOB: "up", RECEIVER_JOB: "up"},
        lambda: None,
    )
    # A target shows "up" as its scrape is reported, a moment before the scrape's samples are
    # committed: wait for the series, then read it.
    ready: list[str] = []

    def read_ready() -> bool:
        series = prometheus.query(f'owui_proxy_ready{{job="{PROXY_JOB}"}}')
        ready[:] = [s["value"][1] for s in series]
        return ready != []

    wait_for("the proxy's readiness scraped", read_ready, lambda: None)
    assert ready in (["0"], ["1"])


def test_every_dashboard_panel_returns_a_series_while_traffic_flows(
    gate: Stack, prometheus: PrometheusServer
) -> None:
    expressions = panel_expressions()
    assert len(expressions) >= 15
    one_round = traffic(gate)
    empty: list[str] = []

    def all_answer() -> bool:
        empty[:] = [
            f"{title}: {expression}"
            for title, expression in expressions
            if not prometheus.query(expression)
        ]
        return not empty

    try:
        wait_for("every panel answers", all_answer, one_round, timeout=120)
    except AssertionError:
        raise AssertionError("panels without a series:\n" + "\n".join(empty)) from None
    # Real numbers, not only series: the requests panel counts what was sent, the receiver's
    # the student's delivery. A series can exist at 0 before that: the delivery ends a few
    # seconds after the sign-in (its threads made and archived), then waits for a scrape.
    wait_for(
        "the public requests counted",
        lambda: (
            _value(
                prometheus,
                f'sum(owui_proxy_requests_total{{job="{PROXY_JOB}", listener="public"}})',
            )
            > 0
        ),
        lambda: None,
    )
    wait_for(
        "the student's delivery counted as provisioned",
        lambda: (
            _value(
                prometheus,
                "owui_provision_webhook_deliveries_total"
                f'{{job="{RECEIVER_JOB}", outcome="provisioned"}}',
            )
            >= 1
        ),
        lambda: None,
    )


def _value(prometheus: PrometheusServer, expression: str) -> float:
    """The one value ``expression`` has now (0 without a series)."""
    series = prometheus.query(expression)
    return float(series[0]["value"][1]) if series else 0.0


def test_stopping_the_auth_service_fires_the_alert_and_starting_it_resolves_it(
    gate: Stack, prometheus: PrometheusServer
) -> None:
    email = fresh_email("auth-outage")
    cookies = idp_login(gate, email)
    session: dict[str, Any] = {"client": httpx.Client(base_url=gate.public_url, cookies=cookies)}

    def requests() -> None:
        for _ in range(5):
            with contextlib.suppress(httpx.HTTPError):
                session["client"].get("/api/config", timeout=10)

    def state() -> str | None:
        return prometheus.alert_states().get(ALERT)

    wait_for("a scrape of a healthy gate", lambda: prometheus.query("up") != [], requests)
    assert state() is None
    gate.services.pop("idp").stop()
    try:
        wait_for(f"{ALERT} firing", lambda: state() == "firing", requests)
    finally:
        gate.start_idp()  # same port; its sessions are new (a restarted IdP signs everyone out)
    session["client"].close()
    session["client"] = httpx.Client(base_url=gate.public_url, cookies=idp_login(gate, email))
    with session["client"]:
        wait_for(f"{ALERT} resolved", lambda: state() is None, requests)
        answered = session["client"].get("/api/config", timeout=10)
    assert answered.status_code == 200
