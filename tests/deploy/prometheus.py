"""The shipped monitoring files and Debian's Prometheus, for the rules and dashboard tests.

- where the files are, and the names of the metrics the proxy and the receiver export (read
  from their real registries, so a rule over a metric that does not exist shows);
- :func:`scaled_rules`: a copy of the shipped rules with every duration divided (windows,
  ``for``, group intervals), so a real Prometheus shows an alert fire and resolve in seconds
  while the shipped file keeps its real thresholds;
- :class:`PrometheusServer`: a private Prometheus (its own config, data folder, loopback
  port) and its HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.edge import REPO

RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "owui-gate.rules.yml"
RULE_TESTS = (RULES_DIR / "owui-gate.rules.test.yml", RULES_DIR / "owui-gate.rules.week.test.yml")
SCRAPE_CONFIG = RULES_DIR / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "owui-gate.json"
PROXY_JOB = "owui-proxy"
RECEIVER_JOB = "owui-provision-webhook"

_DURATION = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_RANGE = re.compile(r"\[((?:\d+(?:ms|[smhdwy]))+)\]")
_OFFSET = re.compile(r"\boffset\s+((?:\d+(?:ms|[smhdwy]))+)")
# A metric name, not part of a recorded name (``level:metric:operations``).
_METRIC = re.compile(r"(?<![\w:])(owui_[a-z0-9_]+)(?![\w:])")


def tool(name: str) -> str:
    """Debian's ``prometheus``/``promtool``; a missing one fails loudly, never skips."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: install Debian's prometheus (scripts/test does it)",
            pytrace=False,
        )
    return path


def load_rules(path: Path = RULES) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def alerts(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every alerting rule by name."""
    return {
        rule["alert"]: rule
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def seconds(duration: str) -> float:
    """A Prometheus duration (``1h30m``, ``7d``) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(number) * _UNIT_S[unit] for number, unit in parts)


def _scaled(duration: str, factor: float) -> str:
    return f"{max(1, round(seconds(duration) / factor))}s"


def scaled_rules(factor: float, rules: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped rules with every duration divided by ``factor`` (60: a minute is a second)."""
    copy = json.loads(json.dumps(rules if rules is not None else load_rules()))

    def expr(text: str) -> str:
        text = _RANGE.sub(lambda m: f"[{_scaled(m.group(1), factor)}]", text)
        return _OFFSET.sub(lambda m: f"offset {_scaled(m.group(1), factor)}", text)

    for group in copy["groups"]:
        if "interval" in group:
            group["interval"] = _scaled(group["interval"], factor)
        for rule in group["rules"]:
            rule["expr"] = expr(rule["expr"])
            if "for" in rule:
                rule["for"] = _scaled(rule["for"], factor)
    return copy


def metric_names_in(expression: str) -> set[str]:
    """The owui-gate metric names an expression reads (not the recorded ones)."""
    return set(_METRIC.findall(expression))


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every sample name the proxy (forward-auth and JWT status, sign-in hook) and the
    receiver can export, from their real registries."""
    from prometheus_client import CollectorRegistry

    from provisioner.metrics import WebhookMetrics
    from proxy.metrics import Metrics
    from proxy.settings import Settings
    from proxy.signin_hook import SigninHook
    from proxy.webhooks import new_secret

    @dataclass
    class _Status:  # the JWT source's status attributes (proxy.metrics.JwksStatus)
        jwks_last_success: float | None = 1.0
        jwks_fetches: int = 1
        jwks_fetch_failures: int = 0
        jwks_keys: int = 1

    metrics = Metrics()
    metrics.watch_jwks(_Status())
    secret = tmp_path / "hook-secret"
    secret.write_text(new_secret() + "\n")
    secret.chmod(0o600)
    settings = Settings(
        upstream="http://127.0.0.1:1",
        auth="forward",
        forward_auth_url="http://127.0.0.1:1/auth",
        signin_hook_url="http://127.0.0.1:1/hook",
        signin_hook_secret_file=secret,
    )
    SigninHook(settings, None, metrics)  # type: ignore[arg-type]  # registers its counter only
    # Histograms, and families with labels, name their samples only once one exists.
    metrics.upstream_latency.observe(0.1)
    metrics.auth_service_latency.observe(0.1)
    metrics.internal_calls.labels("allowed", "GET /api/config")
    metrics.count_decision("identity")
    metrics.count_cache("hit")
    receiver = WebhookMetrics(["course"])
    receiver.seconds.observe(1)
    names: set[str] = set()
    registry: CollectorRegistry
    for registry in (metrics.registry, receiver.registry):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """A private Prometheus: its own config and data folder, on a loopback port."""

    def __init__(self, folder: Path, scrape: dict[str, str], rules: dict[str, Any]) -> None:
        """``scrape``: job name to ``HOST:PORT`` of its /metrics; ``rules``: a rules document."""
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in scrape.items()
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    # Debian's default console paths point at files the package may lack.
                    f"--web.console.templates={self.folder}",
                    f"--web.console.libraries={self.folder}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result; a query Prometheus refuses fails the test with why."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expression}: {body}"
        assert body["data"]["resultType"] == "vector", expression
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alert_states(self) -> dict[str, str]:
        """Alert name to state (``pending`` or ``firing``) of every active alert."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        return {a["labels"]["alertname"]: a["state"] for a in response.json()["data"]["alerts"]}

    def targets_up(self) -> dict[str, str]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        active = response.json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}


def running(server: PrometheusServer) -> Iterator[PrometheusServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
