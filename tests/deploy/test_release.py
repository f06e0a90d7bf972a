"""Releases: the version written once, the package that is built, what a user installs.

The build runs offline with this environment's setuptools (``python -m build
--no-isolation``): first the sdist, then the wheel built FROM the sdist, so a file missing from
either shows. The wheel goes into a fresh venv with ``--no-deps``; its dependencies come from
this environment through a ``.pth`` line placed after the fresh venv's own site-packages, so
every owui-gate module and entry point is the wheel's and nothing needs the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import proxy
from tests.deploy.edge import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
COMMANDS = ("owui-proxy", "owui-provision", "owui-demo-idp")
# Copied to a scratch folder for the build: setuptools writes egg-info and build/ next to
# the sources, which must not land in the checkout.
SOURCES = (
    *("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "proxy", "provisioner", "demo"),
    *("deploy/prometheus", "deploy/grafana"),
)
# Operators' files installed under <prefix>/share/owui-gate/ (pyproject's data-files).
SHARED = {
    "prometheus": sorted(p.name for p in (REPO / "deploy" / "prometheus").glob("*.yml")),
    "grafana": ["owui-gate.json"],
}
PAGE_TEMPLATES = sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "proxy" / "page_templates").glob("*.html")
)


def test_version_is_written_once() -> None:
    """pyproject.toml holds the version; no module repeats it."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    pattern = re.compile(rf"""["']{re.escape(VERSION)}["']""")
    for package in ("proxy", "provisioner", "demo"):
        for path in (REPO / package).rglob("*.py"):
            assert not pattern.search(path.read_text(encoding="utf-8")), path


def test_version_falls_back_to_the_source_trees_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout that was never installed, the version still comes from pyproject."""

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    proxy.version.cache_clear()
    try:
        assert proxy.version() == VERSION
    finally:
        proxy.version.cache_clear()


def test_changelog_has_this_release() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert "`Apache-2.0`" in changelog


def test_licence_is_the_one_declared() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    licence = (REPO / "LICENSE").read_text(encoding="utf-8").split()
    assert licence[:4] == ["Apache", "License", "Version", "2.0,"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built offline from a copy of the sources."""
    work = tmp_path_factory.mktemp("release")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = work / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "work": work}


def test_sdist_and_wheel_carry_the_version_and_the_licence(built: dict[str, Path]) -> None:
    assert built["sdist"].name == f"owui_gate-{VERSION}.tar.gz"
    assert built["wheel"].name == f"owui_gate-{VERSION}-py3-none-any.whl"
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "pyproject.toml", "proxy/cli.py"} <= names
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        meta = wheel.read(f"owui_gate-{VERSION}.dist-info/METADATA").decode()
    assert f"owui_gate-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in meta
    # Every module of the three packages made it in (the wheel is built from the sdist).
    for package in ("proxy", "provisioner", "demo"):
        for path in (REPO / package).rglob("*.py"):
            assert path.relative_to(REPO).as_posix() in names, path
    # The proxy's pages, and the monitoring files as data.
    assert len(PAGE_TEMPLATES) == 24
    assert set(PAGE_TEMPLATES) <= names
    data = f"owui_gate-{VERSION}.data/data/share/owui-gate"
    for folder, files in SHARED.items():
        for name in files:
            assert f"{data}/{folder}/{name}" in names, name


def test_the_sdist_carries_the_monitoring_files_and_the_pages(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for folder, files in SHARED.items():
        for name in files:
            assert f"deploy/{folder}/{name}" in names, name
    assert set(PAGE_TEMPLATES) <= names


@pytest.fixture(scope="module")
def installed(built: dict[str, Path]) -> Path:
    """A fresh venv with the wheel installed (bin/ folder)."""
    venv = built["work"] / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies (aiohttp, pydantic, ...) from this environment, searched after the
    # fresh site-packages, so owui-gate itself is found only where the wheel put it.
    (site / "zz-owui-gate-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python),
         "install", "--no-deps", "--no-index", "-q", str(built["wheel"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


def _run(installed: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH: nothing from the checkout may shadow the installed package.
    env = {"PATH": f"{installed}:/usr/bin:/bin", "HOME": str(installed.parent)}
    return subprocess.run(
        [str(installed / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=installed.parent,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_installed_commands_report_the_version(installed: Path, command: str) -> None:
    result = _run(installed, command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{command} {VERSION}\n"


def test_installed_provisioner_help_and_modules_come_from_the_wheel(installed: Path) -> None:
    """`owui-provision --help` runs, and every package it imports is the installed one."""
    result = _run(installed, "owui-provision", "--help")
    assert result.returncode == 0, result.stderr
    assert "{user,bulk,status,remove,webhook,check}" in result.stdout
    where = _run(
        installed,
        "python",
        "-c",
        "import proxy, provisioner, demo, proxy.cli, provisioner.cli, demo.idp;"
        "print(proxy.__file__, provisioner.__file__, demo.__file__, sep='\\n')",
    )
    assert where.returncode == 0, where.stderr
    venv = installed.parent.resolve()
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv), line


def test_installed_monitoring_files_and_pages_are_the_repositorys(installed: Path) -> None:
    """Rules and dashboard under the venv's share/owui-gate/, byte for byte; the installed
    proxy renders its pages from its own package data."""
    share = installed.parent / "share" / "owui-gate"
    for folder, files in SHARED.items():
        for name in files:
            source = REPO / "deploy" / folder / name
            assert (share / folder / name).read_bytes() == source.read_bytes(), name
    page = _run(
        installed,
        "python",
        "-c",
        "from proxy.pages import Page, Pages;"
        "print(Pages('/out').render(Page('auth-down', {}), 'es', "
        "{'status': '503', 'request_id': 'r'})[1])",
    )
    assert page.returncode == 0, page.stderr
    assert "El inicio de sesión no está disponible ahora" in page.stdout
