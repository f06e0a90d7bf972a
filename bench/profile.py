"""Where owui-proxy spends its time under load: py-spy sampling while wrk drives it.

The profile is taken in a separate wrk run after the measured ones, so the sampler's own
cost never shows in the tables. Output: the collapsed stacks next to the results
(``profiles/<timestamp>-collapsed.txt``), and in the report the top functions by own time
and by total time. Under uvloop py-spy sees each coroutine step as its own stack, so
"total" undercounts callers; own time is exact.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Run


def _py_spy() -> str | None:
    import sys

    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(run: Run, pid: int, url: str, cookie: str) -> dict[str, Any]:
    spy = _py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    seconds = run.plan.profile_s
    raw = run.work / "profile.txt"
    out: dict[str, Any] = {}

    def load() -> None:
        from bench.run import wrk

        out["wrk"] = wrk(run, url, 32, seconds + 2, {"Cookie": cookie})

    loader = threading.Thread(target=load)
    loader.start()
    base = [spy, "record", "--pid", str(pid), "--rate", "200", "--duration", str(seconds)]
    base += ["--nonblocking", "--subprocesses"]
    cpus = ["taskset", "-c", run.cpus.load] if run.cpus.load else []
    spy_raw = subprocess.run(
        [*cpus, *base, "--format", "raw", "--output", str(raw)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    loader.join()
    if spy_raw.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {spy_raw.stderr.strip()[-500:]}"}
    stacks = _read(raw)
    out.update(summarise(stacks))
    # Collapsed stacks load into any flame-graph viewer (speedscope, inferno, flamegraph.pl).
    dest = run.args.out / "profiles"
    dest.mkdir(parents=True, exist_ok=True)
    out["raw_file"] = str(dest / f"{run.results.get('stamp', 'profile')}-collapsed.txt")
    shutil.copy(raw, out["raw_file"])
    return out


def _read(path: Path) -> list[tuple[list[str], int]]:
    """Collapsed stacks: ``frame;frame;frame COUNT`` per line (root first)."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``; line numbers vary per sample."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({tail})"


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> dict[str, Any]:
    """Top functions by own (leaf) samples and by total (inclusive) samples, and the
    share of time spent in big buckets (event loop idle, logging, auth, relay...)."""
    total = sum(count for _, count in stacks)
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        names = [_short(f) for f in frames if not f.startswith("process ")]
        if not names:
            continue
        own[names[-1]] += count
        for name in set(names):
            incl[name] += count

    def pct(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "own": pct(own), "inclusive": pct(incl)}
