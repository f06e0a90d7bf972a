"""scripts/compat's pure parts and the harness's release setting (no OpenWebUI needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo import compat, openwebui


def test_latest_of_each_line_from_the_oldest_supported_line() -> None:
    listed = ["0.12.4", "0.12.3", "0.10.2", "0.9.0", "0.8.12", "0.8.2", "0.7.2", "0.6.43",
              "0.6.9", "0.5.20", "0.4.8", "0.12.5rc1", "0.1.125"]  # fmt: skip
    assert compat.latest_of_each_line(listed) == [
        "0.6.43", "0.7.2", "0.8.12", "0.9.0", "0.10.2", "0.12.4",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("release", "gaps"),
    [
        ("0.6.13", "no 'User mismatch' check: proxy refuses"),
        ("0.6.20", "pinned chats not listed: provisioner refuses; sign-up trap: fix applied "
         "(sign-ups on); names shown percent-encoded"),
        ("0.7.2", "sign-up trap: fix applied (sign-ups on)"),
        ("0.8.12", "none"),
    ],
)  # fmt: skip
def test_known_gaps(release: str, gaps: str) -> None:
    assert compat.known_gaps(release) == gaps


def test_junit_counts_and_the_refusal_by_design(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="test_ok"/>'
        '<testcase name="test_bad"><failure message="boom"/></testcase>'
        '<testcase name="test_broken"><error message="setup"/></testcase>'
        f'<testcase name="test_skip"><skipped message="{compat.REFUSED_SKIP}: 0.6.13"/></testcase>'
        "</testsuite></testsuites>"
    )
    outcome = compat.Outcome("0.6.13")
    compat._read_junit(report, outcome)
    assert (outcome.passed, outcome.failed, outcome.skipped) == (1, 2, 1)
    assert outcome.refused_by_design
    assert outcome.verdict() == "**2 failed**: test_bad, test_broken"


def test_the_table_goes_between_the_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "compatibility.md"
    doc.write_text(f"# x\n{compat.BEGIN}\nold\n{compat.END}\ntail\n")
    monkeypatch.setattr(compat, "DOCS", doc)
    compat.put_in_docs("new\n")
    assert doc.read_text() == f"# x\n{compat.BEGIN}\nnew\n{compat.END}\ntail\n"


def test_the_release_is_a_setting_with_its_own_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(openwebui.VERSION_ENV, raising=False)
    assert openwebui.version() == openwebui.VERSION == "0.12.4"
    monkeypatch.setenv(openwebui.VERSION_ENV, "0.8.12")
    assert openwebui.version() == "0.8.12"
    assert openwebui.venv_dir().name == "openwebui-0.8.12"
    assert openwebui.executable("0.7.2").parent.parent.name == "openwebui-0.7.2"
    monkeypatch.setenv(openwebui.VERSION_ENV, "latest")
    with pytest.raises(openwebui.OpenWebUIError, match="OWUI_GATE_OPENWEBUI_VERSION='latest'"):
        openwebui.version()
