"""deploy/prometheus: the rules check and unit-test with Debian's promtool, every alert has a
case where it fires and one where it must not, each reads metrics that really exist, has a
comment saying why its threshold is what it is, and a runbook section that exists.

The e2e tier (tests/e2e/test_monitoring.py) runs the same rules in a real Prometheus.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.edge import REPO
from tests.deploy.prometheus import (
    PROXY_JOB,
    RECEIVER_JOB,
    RULE_TESTS,
    RULES,
    SCRAPE_CONFIG,
    alerts,
    exported_metric_names,
    load_rules,
    metric_names_in,
    scaled_rules,
    seconds,
    tool,
)

OPERATIONS = REPO / "docs" / "operations.md"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=RULES.parent,
    )


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_checks_the_example_configuration() -> None:
    result = promtool("check", "config", SCRAPE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    assert {job["job_name"] for job in config["scrape_configs"]} == {PROXY_JOB, RECEIVER_JOB}
    assert config["rule_files"] == [RULES.name]


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(tests: Path) -> None:
    result = promtool("test", "rules", tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _cases() -> dict[str, dict[str, int]]:
    """Per alert name, how many unit-test evaluations expect it firing and not firing."""
    seen: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                which = "fires" if check.get("exp_alerts") else "silent"
                counts = seen.setdefault(check["alertname"], {"fires": 0, "silent": 0})
                counts[which] += 1
    return seen


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = _cases()
    for name in alerts(load_rules()):
        counts = cases.get(name, {"fires": 0, "silent": 0})
        assert counts["fires"] >= 1, f"{name}: no unit test where it fires"
        assert counts["silent"] >= 1, f"{name}: no unit test where it must not fire"
    unknown = set(cases) - set(alerts(load_rules()))
    assert not unknown, f"unit tests of alerts that do not exist: {unknown}"


def test_every_metric_the_rules_and_their_tests_read_is_exported(tmp_path: Path) -> None:
    """A rule over a misspelt or removed metric is silently empty: never firing."""
    exported = exported_metric_names(tmp_path)
    used: set[str] = set()
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            used |= metric_names_in(rule["expr"])
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for series in case["input_series"]:
                used |= metric_names_in(series["series"].split("{", 1)[0])
    assert used, "no owui-gate metric found in the rules"
    assert not used - exported, f"not exported by the proxy or the receiver: {used - exported}"


def test_every_alert_has_a_severity_a_reasoned_threshold_and_a_runbook() -> None:
    text = RULES.read_text(encoding="utf-8").splitlines()
    headings = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for name, rule in alerts(load_rules()).items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        line = next(i for i, row in enumerate(text) if row.strip() == f"- alert: {name}")
        before = text[line - 1].strip()
        assert before.startswith("#"), f"{name}: no comment above it saying why its threshold"
        runbook = rule["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "docs/operations.md", name
        assert anchor in headings, f"{name}: docs/operations.md has no section #{anchor}"


def _anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (GitHub's rule)."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize(
    ("duration", "expected"),
    [("5m", 300), ("1h30m", 5400), ("7d", 604800), ("15s", 15), ("100ms", 0.1)],
)
def test_durations_read_as_prometheus_reads_them(duration: str, expected: float) -> None:
    assert seconds(duration) == expected


def test_the_e2e_copy_divides_every_duration_and_nothing_else() -> None:
    """The e2e tier's rules: every window, ``for`` and interval 60 times shorter, the same
    thresholds; the shipped file is not touched."""
    shipped = load_rules()
    fast = scaled_rules(60, shipped)
    assert shipped == load_rules()
    shipped_rules = [r for g in shipped["groups"] for r in g["rules"]]
    fast_rules = [r for g in fast["groups"] for r in g["rules"]]
    for before, after in zip(shipped_rules, fast_rules, strict=True):
        if "for" in before:
            assert seconds(after["for"]) == max(1, seconds(before["for"]) / 60)
        assert re.sub(r"\[[^\]]+\]", "[]", before["expr"]) == re.sub(
            r"\[[^\]]+\]", "[]", after["expr"]
        )
    assert "[5s]" in fast_rules[0]["expr"]
    assert [g.get("interval") for g in fast["groups"]] == [None, "5s", None]


def test_a_promtool_unit_test_really_catches_a_weakened_rule(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests over rules whose thresholds were raised."""
    weakened: dict[str, Any] = load_rules()
    for group in weakened["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "OwuiProxyUpstreamErrors":
                rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5", 1)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(weakened, sort_keys=False))
    for path in RULE_TESTS:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS[0].name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "OwuiProxyUpstreamErrors" in result.stdout + result.stderr
