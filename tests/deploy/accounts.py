"""The accounts deploy/systemd/owui-gate.sysusers creates, without touching this machine's.

``systemd-sysusers --root=DIR`` applies the shipped file to a copy of this machine's
``/etc/passwd`` and ``/etc/group`` in ``DIR``. :meth:`Accounts.shell` runs documented shell
commands in a private mount namespace where those copies stand in for the real files, so
``install -g owui-gate`` resolves as on an installed host. :meth:`Accounts.read_as` opens a
secret file with the proxy's or the receiver's own loader as a given uid, gid and
supplementary groups: the Python process starts as root (it must, to switch users), loads
the file once so every module is imported, then drops to those credentials and loads again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.edge import REPO

SYSUSERS = REPO / "deploy" / "systemd" / "owui-gate.sysusers"

# Loads a secret file the way a service does: "hook" as the proxy's settings do, "tokens" as
# the proxy's internal listener does, "receiver" as `owui-provision webhook --secret-file`.
_READ_AS = r"""
import json, os, sys
from pathlib import Path
uid, gid, groups = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
kind, path = sys.argv[4], Path(sys.argv[5])
if kind == "receiver":
    from provisioner.webhook import load_secrets
    load = lambda: load_secrets(path)
else:
    from proxy.settings import Settings
    if kind == "hook":
        files = {"signin_hook_url": "http://127.0.0.1:8090/webhooks/signup",
                 "signin_hook_secret_file": path}
    else:
        files = {"internal_listen": "127.0.0.1:8001", "internal_tokens_file": path}
    load = lambda: Settings(upstream="http://127.0.0.1:9", auth="forward",
                            forward_auth_url="http://127.0.0.1:9/oauth2/auth", **files)
load()
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
try:
    load()
except Exception as exc:
    print(json.dumps({"read": False, "error": str(exc)}))
else:
    print(json.dumps({"read": True, "error": ""}))
"""


@dataclass(frozen=True)
class Credentials:
    """A process's uid, gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Accounts:
    root: Path
    users: dict[str, tuple[int, int]]  # name -> (uid, primary gid)
    groups: dict[str, int]
    members: dict[str, tuple[str, ...]]  # group -> member user names

    @classmethod
    def create(cls, root: Path) -> Accounts:
        (root / "etc").mkdir(parents=True)
        for name in ("passwd", "group"):
            shutil.copy(f"/etc/{name}", root / "etc" / name)
        subprocess.run(
            ["systemd-sysusers", f"--root={root}", str(SYSUSERS)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        users = {}
        for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
            name, _, uid, gid, *_ = line.split(":")
            users[name] = (int(uid), int(gid))
        groups, members = {}, {}
        for line in (root / "etc" / "group").read_text(encoding="utf-8").splitlines():
            name, _, gid, listed = line.split(":")
            groups[name] = int(gid)
            members[name] = tuple(m for m in listed.split(",") if m)
        return cls(root, users, groups, members)

    def shell(self, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """``script`` in bash (-e, -u, pipefail), these accounts standing in for the host's."""
        passwd, group = self.root / "etc" / "passwd", self.root / "etc" / "group"
        wrapper = (
            f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
            'exec bash -euo pipefail -c "$0"'
        )
        return subprocess.run(
            ["unshare", "--mount", "--propagation=private", "sh", "-c", wrapper, script],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def of_unit(self, unit: dict[str, list[str]], dynamic_uid: int = 61184) -> Credentials:
        """What systemd gives a unit's processes: User=/Group= (or a dynamic user), the
        user's group memberships and SupplementaryGroups=."""
        extra = [
            self.groups[g] for line in unit.get("SupplementaryGroups", []) for g in line.split()
        ]
        if unit.get("DynamicUser") == ["yes"]:
            return Credentials(dynamic_uid, dynamic_uid, tuple(extra))
        (user,) = unit["User"]
        uid, gid = self.users[user]
        if "Group" in unit:
            gid = self.groups[unit["Group"][0]]
        memberships = [self.groups[g] for g, names in self.members.items() if user in names]
        return Credentials(uid, gid, tuple(sorted({*memberships, *extra})))


def read_as(who: Credentials, kind: str, path: Path) -> dict[str, object]:
    """Load ``path`` with a service's loader (``kind``) as ``who``; ``{"read", "error"}``."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _READ_AS,
            str(who.uid),
            str(who.gid),
            json.dumps(list(who.groups)),
            kind,
            str(path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer
