"""Test-suite-wide rules.

With ``CI=true`` a skipped test is a failed test: every tier must run in CI, and a missing
dependency (nginx, chromium, root for network namespaces, OpenWebUI) is a failure to fix,
not a reason to pass.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"


# Property tests run a bounded, repeatable set of examples: the same inputs on every run and
# machine (no example database, derandomized), so CI never passes or fails by luck.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
else:
    _hypothesis_settings.register_profile(
        "owui-gate",
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=300,
        suppress_health_check=[HealthCheck.too_slow],
    )
    _hypothesis_settings.load_profile("owui-gate")
