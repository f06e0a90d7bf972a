"""The secret files of the one-host set-up: readable by the services that need them, and by
nobody else.

The commands are docs/deployment.md's own ("Setting it up on one host", step 2), run as
written with ``/etc/owui-gate`` and ``/tmp`` moved to a scratch folder, against the accounts
``deploy/systemd/owui-gate.sysusers`` creates (tests/deploy/accounts.py: a private mount
namespace, this machine's accounts untouched). Each file is then loaded with the service's
own loader as the uid, gid and supplementary groups its unit gives it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.accounts import Accounts, Credentials, read_as
from tests.deploy.edge import REPO
from tests.deploy.test_kit import SYSTEMD, unit_settings

DEPLOYMENT = REPO / "docs" / "deployment.md"
NOBODY = Credentials(65534, 65534, ())


def documented_commands() -> str:
    """The shell block of step 2 that makes the secret files."""
    text = DEPLOYMENT.read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "/etc/owui-gate/hook-secret" in b]
    return "\n".join(line.strip() for line in block.splitlines())


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[Accounts, Path]]:
    """The accounts, and the folder standing in for /etc/owui-gate after the commands ran."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    with tempfile.TemporaryDirectory(prefix="owgt-secrets-") as scratch:
        base = Path(scratch)
        base.chmod(0o755)  # the services' users must reach the files inside
        etc = base / "owui-gate"
        etc.mkdir(mode=0o755)
        accounts = Accounts.create(base / "root")
        # The docs' own paths, moved into the scratch folder in one pass.
        moved = {"/etc/owui-gate/": f"{etc}/", "/tmp/": f"{base}/"}  # noqa: S108
        script = re.sub(
            "|".join(map(re.escape, moved)), lambda m: moved[m[0]], documented_commands()
        )
        ran = accounts.shell(script, cwd=base)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        yield accounts, etc


def service(accounts: Accounts, unit: str) -> Credentials:
    return accounts.of_unit(unit_settings(SYSTEMD / unit))


@pytest.mark.parametrize(
    ("who", "file", "loader", "readable"),
    [
        ("owui-proxy.service", "hook-secret", "hook", True),
        ("owui-proxy.service", "internal-tokens", "tokens", True),
        ("owui-provision-webhook.service", "hook-secret", "receiver", True),
        ("owui-provision-webhook.service", "internal-tokens", "tokens", False),
        ("nobody", "hook-secret", "hook", False),
        ("nobody", "hook-secret", "receiver", False),
        ("nobody", "internal-tokens", "tokens", False),
    ],
)
def test_each_secret_file_is_read_by_its_services_alone(
    host: tuple[Accounts, Path], who: str, file: str, loader: str, readable: bool
) -> None:
    accounts, etc = host
    credentials = NOBODY if who == "nobody" else service(accounts, who)
    answer = read_as(credentials, loader, etc / file)
    assert answer["read"] is readable, answer
    if not readable:
        assert "Permission denied" in str(answer["error"]), answer


def test_the_files_are_root_owned_and_never_world_readable(host: tuple[Accounts, Path]) -> None:
    accounts, etc = host
    expected = {
        "internal-tokens": ("owui-proxy", 0o640),
        "provision-token": ("root", 0o600),  # a systemd credential: systemd reads it as root
        "hook-secret": ("owui-gate", 0o640),
    }
    for name, (group, mode) in expected.items():
        stat = (etc / name).stat()
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (
            0,
            accounts.groups[group],
            mode,
        ), name


def test_a_root_only_hook_secret_stops_the_proxy(host: tuple[Accounts, Path]) -> None:
    """Why the group: `chmod 600` as root (what docs/access.md once said) leaves the proxy's
    user unable to read the file, and the proxy refuses to start."""
    accounts, etc = host
    root_only = etc / "hook-secret-root-only"
    root_only.write_bytes((etc / "hook-secret").read_bytes())
    root_only.chmod(0o600)
    answer = read_as(service(accounts, "owui-proxy.service"), "hook", root_only)
    assert answer["read"] is False
    assert "Permission denied" in str(answer["error"])
