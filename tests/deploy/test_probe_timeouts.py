"""Every health probe the project ships waits longer than ``/readyz`` may take.

``/readyz`` answers within ``proxy.readiness.READYZ_TIMEOUT_S``; a probe that gives up
sooner (Kubernetes' default ``timeoutSeconds`` is 1 s) marks a working pod unready. So every
probe, in the Kubernetes manifests, the compose file and the container image, names its
timeout, above that bound; a probe that runs a command with a timeout of its own gives the
command less than the probe (so the command's failure is what gets reported) and still
more than the bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.readiness import READYZ_TIMEOUT_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
# A command's own timeout (``urlopen(..., timeout=2)``), not the probe's ``--timeout=``.
_COMMAND_TIMEOUT = re.compile(r"(?<![-\w])timeout=(\d+(?:\.\d+)?)")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _walk(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every (path, value) below ``node``."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}[{index}]")


def _seconds(value: object) -> float:
    """A compose/Containerfile duration (``3s``, ``500ms``, ``1m``) in seconds."""
    match = _DURATION.match(str(value))
    assert match, f"not a duration: {value!r}"
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


def _command_timeouts(probe: Any) -> list[float]:
    text = " ".join(str(part) for _, part in _walk(probe, "") if isinstance(part, str))
    return [float(found) for found in _COMMAND_TIMEOUT.findall(text)]


def kubernetes_probes() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")):
        for number, doc in enumerate(_documents(path)):
            for where, node in _walk(doc, f"{path.relative_to(DEPLOY)}#{number}"):
                for kind in PROBES:
                    if where.endswith(f".{kind}") and isinstance(node, dict):
                        found.append((where, node))
    return found


def compose_healthchecks() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "compose").rglob("*.y*ml")):
        for doc in _documents(path):
            for name, service in (doc.get("services") or {}).items():
                check = service.get("healthcheck")
                if isinstance(check, dict) and not check.get("disable"):
                    found.append((f"{path.relative_to(DEPLOY)}: {name}", check))
    return found


def container_healthchecks() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DEPLOY.rglob("Containerfile*")):
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            if line.strip().upper().startswith("HEALTHCHECK") and "NONE" not in line.upper():
                found.append((str(path.relative_to(DEPLOY)), line))
    return found


def _where(value: object) -> str:
    """Test ids: where a probe is, not what it holds."""
    return value if isinstance(value, str) and not value.startswith("HEALTHCHECK") else ""


def test_there_are_probes_to_check() -> None:
    assert kubernetes_probes(), "no Kubernetes probes found: is the path right?"
    assert any("readyz" in str(probe) for _, probe in kubernetes_probes())
    assert compose_healthchecks()
    assert container_healthchecks()


@pytest.mark.parametrize(("where", "probe"), kubernetes_probes(), ids=_where)
def test_kubernetes_probes_wait_longer_than_readyz(where: str, probe: dict[str, Any]) -> None:
    assert "timeoutSeconds" in probe, f"{where}: no timeoutSeconds (the default is 1 s)"
    timeout = float(probe["timeoutSeconds"])
    assert timeout > READYZ_TIMEOUT_S, f"{where}: timeoutSeconds {timeout} <= {READYZ_TIMEOUT_S}"
    for inner in _command_timeouts(probe):
        assert READYZ_TIMEOUT_S < inner < timeout, f"{where}: its command waits {inner} s"


@pytest.mark.parametrize(("where", "check"), compose_healthchecks(), ids=_where)
def test_compose_healthchecks_wait_longer_than_readyz(where: str, check: dict[str, Any]) -> None:
    assert "timeout" in check, f"{where}: no timeout"
    timeout = _seconds(check["timeout"])
    assert timeout > READYZ_TIMEOUT_S, f"{where}: timeout {timeout} s <= {READYZ_TIMEOUT_S}"
    for inner in _command_timeouts(check):
        assert READYZ_TIMEOUT_S < inner < timeout, f"{where}: its command waits {inner} s"


@pytest.mark.parametrize(("where", "line"), container_healthchecks(), ids=_where)
def test_the_image_healthcheck_waits_longer_than_readyz(where: str, line: str) -> None:
    match = re.search(r"--timeout=(\S+)", line)
    assert match, f"{where}: HEALTHCHECK without --timeout (the default is 30 s)"
    timeout = _seconds(match.group(1))
    assert timeout > READYZ_TIMEOUT_S, f"{where}: --timeout {timeout} s <= {READYZ_TIMEOUT_S}"
    for inner in (float(found) for found in _COMMAND_TIMEOUT.findall(line)):
        assert READYZ_TIMEOUT_S < inner < timeout, f"{where}: its command waits {inner} s"
