"""Starting, pinning, watching and stopping the processes a benchmark run needs.

Every process is started in its own session (process group) pinned to given CPUs with
``taskset``, its output going to a log file in the run's work folder, and is stopped by
its own process-group id, never by name. :class:`Procs` stops whatever is still running
when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One started process (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Children left behind in the group (workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tree(self) -> list[int]:
        """This process and all its descendants (e.g. SO_REUSEPORT workers)."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy in processes since boot: user, nice, system
    and steal. Interrupt and softirq time is left out: the kernel books it there, not on
    any process, and loopback traffic makes plenty of it (guest time is inside user)."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def system_busy(interval: float = 1.0) -> float:
    """Share of all CPUs busy over ``interval`` seconds."""
    before = busy_seconds()
    time.sleep(interval)
    return (busy_seconds() - before) / (interval * (os.cpu_count() or 1))


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS) of /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Procs:
    """Starts processes and guarantees they are all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: str | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        cmd = ["taskset", "-c", cpus, *argv] if cpus else list(argv)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd or self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.running):
            with contextlib.suppress(Exception):
                proc.stop()
        self.running.clear()


def wait_http(
    url: str,
    proc: Proc,
    timeout: float = 20.0,
    headers: Mapping[str, str] | None = None,
    ok: Sequence[int] = (200,),
) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 (loopback)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status in ok:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: {url} not ready after {timeout}s ({last}):\n{proc.tail()}")
