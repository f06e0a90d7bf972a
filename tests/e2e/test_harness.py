"""The harness's installer (demo.openwebui.ensure_installed), with a stand-in for pip.

Installing the real OpenWebUI takes minutes and gigabytes, so these tests give the cache a
venv whose ``python`` is a small script: ``-c`` (the version probe) answers 0.12.4 once
"installed", and ``-m pip install open-webui==...`` takes a second and records each run.
What is tested is ours: the cache location, the stamp, adoption, and the lock that makes
concurrent first runs install once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo import openwebui

FAKE_PYTHON = textwrap.dedent(
    """\
    #!/bin/sh
    root="$(dirname "$0")/.."
    if [ "$1" = "-c" ]; then
        [ -f "$root/installed" ] && echo 0.12.4 && exit 0
        exit 1
    fi
    case "$*" in
        *open-webui==0.12.4*)
            [ -f "$root/pip-fails" ] && echo "ERROR: No matching distribution" && exit 1
            echo "Collecting open-webui==0.12.4"
            sleep 1
            echo run >> "$root/pip-runs"
            : > "$root/installed"
            : > "$root/bin/open-webui"
            echo "Successfully installed open-webui-0.12.4" ;;
    esac
    exit 0
    """
)


def fake_venv(cache: Path, installed: bool) -> Path:
    venv = cache / f"openwebui-{openwebui.VERSION}"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if installed:
        (venv / "installed").touch()
        (venv / "bin" / "open-webui").touch()
    return venv


def ensure_in_subprocess(cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from demo import openwebui; print(openwebui.ensure_installed())"],
        env={**os.environ, openwebui.CACHE_ENV: str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cache_folder_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(openwebui.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert openwebui.venv_dir() == tmp_path / "elsewhere" / "openwebui-0.12.4"
    monkeypatch.delenv(openwebui.CACHE_ENV)
    assert openwebui.cache_dir() == Path.home() / ".cache" / "owui-gate"


def test_an_existing_install_of_the_right_version_is_adopted_and_stamped(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, installed=True)
    result = ensure_in_subprocess(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(venv / "bin" / "open-webui")
    assert "adopting" in result.stderr
    assert (venv / ".owui-gate-installed").is_file()
    assert not (venv / "pip-runs").exists()
    # Stamped: the next call does not even probe.
    again = ensure_in_subprocess(tmp_path)
    assert again.returncode == 0
    assert again.stderr == ""


def test_concurrent_first_runs_install_once(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, installed=False)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: ensure_in_subprocess(tmp_path), range(3)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(venv / "bin" / "open-webui")
    assert (venv / "pip-runs").read_text().splitlines() == ["run"]
    stderr = "".join(result.stderr for result in results)
    assert stderr.count("installing open-webui==0.12.4") == 1
    assert "Collecting open-webui==0.12.4" in stderr  # pip's progress is shown
    assert (venv / ".owui-gate-installed").is_file()


def test_a_failed_install_is_reported_and_not_stamped(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, installed=False)
    (venv / "pip-fails").touch()
    result = ensure_in_subprocess(tmp_path)
    assert result.returncode != 0
    assert "pip install open-webui==0.12.4 failed" in result.stderr
    assert "ERROR: No matching distribution" in result.stderr  # pip's own words
    assert not (venv / ".owui-gate-installed").exists()
