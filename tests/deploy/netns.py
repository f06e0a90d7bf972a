"""A four-host test network built from network namespaces and veth pairs.

::

    client  198.18.1.2 ──── 198.18.1.1  edge  198.18.2.1 ──── 198.18.2.2  app
                                        edge  198.18.3.1 ──── 198.18.3.2  internal

Each link is a point-to-point veth pair on its own /24 in 198.18.0.0/15 (the benchmarking
range); no namespace has a link to the host or any route out, and ``edge`` does not forward.
Names are unique per run (``owgt-<pid>-<random>-<role>``); :meth:`Topology.destroy` kills
whatever still runs inside and deletes the namespaces, and a new run first removes those
left by runs whose process is gone.

``edge`` gets an input filter on its public interface (:meth:`Topology.guard_edge`): there,
only packets addressed to the public address are delivered. Linux follows the weak host
model and would otherwise deliver a packet addressed to *any* of edge's addresses (say, the
internal listener's 198.18.3.1) that arrives on the public interface, from a client that
simply routes it there. Production does the same with a firewall (docs/deployment.md); here
``nft``/``iptables`` are not installed, so it is done with policy routing (iproute2 only):
rules for traffic arriving on the public interface look up a table holding only the public
address, then ``prohibit`` everything else.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.edge import REPO

ROLES = ("client", "edge", "app", "internal")
PREFIX = "owgt"

CLIENT, EDGE_PUBLIC = "198.18.1.2", "198.18.1.1"
EDGE_APP_SIDE, APP = "198.18.2.1", "198.18.2.2"
EDGE_INTERNAL_SIDE, INTERNAL = "198.18.3.1", "198.18.3.2"
# (namespace, interface, address/prefix) at both ends of each link.
LINKS = (
    (("client", "c0", f"{CLIENT}/24"), ("edge", "pub0", f"{EDGE_PUBLIC}/24")),
    (("edge", "app0", f"{EDGE_APP_SIDE}/24"), ("app", "a0", f"{APP}/24")),
    (("edge", "int0", f"{EDGE_INTERNAL_SIDE}/24"), ("internal", "i0", f"{INTERNAL}/24")),
)
PUBLIC_IF = "pub0"
GUARD_TABLE = "100"


class NetnsUnavailable(RuntimeError):
    """The namespaces cannot be created here (not root, no ip netns, ...)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill what runs inside (processes our runs started there), then delete it."""
    pids = ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def remove_stale() -> None:
    """Delete namespaces left by earlier runs whose pytest process no longer exists."""
    listing = ip("netns", "list", check=False).stdout
    for name in re.findall(rf"^({PREFIX}-(\d+)-[0-9a-f]+-[a-z]+)", listing, re.M):
        if not _alive(int(name[1])):
            _delete_namespace(name[0])


@dataclass
class Topology:
    tag: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        remove_stale()
        try:
            for role in ROLES:
                ip("netns", "add", self.ns(role))
                self.created.append(self.ns(role))
                ip("-n", self.ns(role), "link", "set", "lo", "up")
            for (ns_a, if_a, addr_a), (ns_b, if_b, addr_b) in LINKS:
                ip("link", "add", if_a, "netns", self.ns(ns_a), "type", "veth",
                   "peer", "name", if_b, "netns", self.ns(ns_b))  # fmt: skip
                for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
                    ip("-n", self.ns(ns), "addr", "add", addr, "dev", ifname)
                    ip("-n", self.ns(ns), "link", "set", ifname, "up")
            # edge is a host, not a router: nothing from client reaches app or internal.
            self.run("edge", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
            self.guard_edge()
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.destroy()
            raise NetnsUnavailable(f"cannot build the test network: {detail}") from exc

    def guard_edge(self) -> None:
        """Deliver only packets for the public address from the public interface."""
        edge = self.ns("edge")
        if ip("-n", edge, "rule", "show", "pref", "100").stdout.strip() == "":
            # Move the local-table lookup after our rules (it is rule 0 by default).
            ip("-n", edge, "rule", "add", "pref", "100", "lookup", "local")
            ip("-n", edge, "rule", "del", "pref", "0")
            ip("-n", edge, "route", "replace", "local", EDGE_PUBLIC, "dev", PUBLIC_IF,
               "table", GUARD_TABLE)  # fmt: skip
        ip("-n", edge, "rule", "add", "pref", "10", "iif", PUBLIC_IF, "lookup", GUARD_TABLE)
        ip("-n", edge, "rule", "add", "pref", "11", "iif", PUBLIC_IF, "prohibit")

    def unguard_edge(self) -> None:
        edge = self.ns("edge")
        ip("-n", edge, "rule", "del", "pref", "10", check=False)
        ip("-n", edge, "rule", "del", "pref", "11", check=False)

    def set_default_route(self, role: str, via: str | None) -> None:
        """Give ``role`` a default route via ``via`` (what an attacker on that link can do)."""
        if via is None:
            ip("-n", self.ns(role), "route", "del", "default", check=False)
        else:
            ip("-n", self.ns(role), "route", "replace", "default", "via", via)

    def argv(self, role: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(role), *argv]

    def run(
        self,
        role: str,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(role, argv),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=stdin,
        )

    def start(
        self, role: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(role, argv), stdout=out, stderr=out, env=env, cwd=REPO
            )
        self.processes.append(proc)
        return proc

    def destroy(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for name in self.created:
            _delete_namespace(name)
        self.created.clear()
