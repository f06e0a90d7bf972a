"""Where owui-proxy's latency tail comes from: ``python -m bench.tail [--against DIR]``.

Runs owui-proxy (1 worker, forward-auth with its decision cache, as in case 1) on the
server CPU against nginx, drives it with wrk on the load CPU, and records inside the proxy
what can stop its event loop: every garbage collection (``gc.callbacks``: generation and
pause), every ``malloc_trim`` (``proxy/server.py``'s trimmer) and every event-loop stall
(a 1 ms timer that fires late). Prints wrk's latency percentiles next to those pauses,
for this checkout and, with ``--against``, another one (a git worktree of main, say),
alternating ``--rounds`` times. What was found with it is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import configs
from bench.procs import Procs, free_port, wait_http
from bench.stages import COOKIE

ROOT = Path(__file__).resolve().parent.parent
STALL_MS = 3.0  # a 1 ms timer this late is a stall


def run_proxy(record: str) -> int:
    """The proxy's own entry point, with the recorders attached (run in the proxy's
    process: ``python -c ... run_proxy``)."""
    import asyncio
    import gc

    from proxy import logs, server
    from proxy.settings import load_settings

    found: dict[str, list[Any]] = {"gc": [], "trim": [], "stalls": []}
    started = [0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        else:
            pause = (time.perf_counter_ns() - started[0]) / 1e6
            found["gc"].append((info["generation"], pause, time.monotonic()))

    gc.callbacks.append(collected)
    trim_factory = server._malloc_trim

    def timed_trim() -> Any:
        trim = trim_factory()
        if trim is None:
            return None

        def timed() -> None:
            began = time.perf_counter_ns()
            trim()
            found["trim"].append(((time.perf_counter_ns() - began) / 1e6, time.monotonic()))

        return timed

    server._malloc_trim = timed_trim  # type: ignore[assignment]
    serve = server.serve

    async def watch_stalls() -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(0.001)
            late = (loop.time() - began - 0.001) * 1000
            if late > STALL_MS:
                found["stalls"].append((late, time.monotonic()))

    async def recorded(*args: Any, **kwargs: Any) -> None:
        watcher = asyncio.create_task(watch_stalls())
        try:
            await serve(*args, **kwargs)
        finally:
            watcher.cancel()

    server.serve = recorded  # type: ignore[assignment]
    logs.configure("info")
    try:
        return server.run(load_settings())
    finally:
        Path(record).write_text(json.dumps(found))


def one_run(
    tree: Path, label: str, work: Path, procs: Procs, upstream_port: int, args: argparse.Namespace
) -> dict[str, Any]:
    port, admin = free_port(), free_port()
    record = work / f"tail-{label}.json"
    base = f"http://127.0.0.1:{upstream_port}"
    env = {
        "OWUI_PROXY_UPSTREAM": base,
        "OWUI_PROXY_LISTEN": f"127.0.0.1:{port}",
        "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "OWUI_PROXY_AUTH": "forward",
        "OWUI_PROXY_FORWARD_AUTH_URL": base + "/oauth2/auth",
        "OWUI_PROXY_FORWARD_AUTH_CACHE_S": "60",
    }
    boot = (
        "import sys; sys.path.insert(0, sys.argv[1]); import proxy; sys.path[0] = sys.argv[2]; "
        "from bench.tail import run_proxy; sys.exit(run_proxy(sys.argv[3]))"
    )
    argv = [sys.executable, "-c", boot, str(tree), str(ROOT), str(record)]
    proc = procs.start(f"proxy-{label}", argv, cpus=args.server_cpu, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    wait_http(url, proc, headers={"Cookie": COOKIE}, timeout=60)

    def wrk(seconds: int) -> list[str]:
        argv = ["wrk", "-t1", f"-c{args.conns}", f"-d{seconds}s", "--latency"]
        argv += ["-H", f"Cookie: {COOKIE}", url]
        return ["taskset", "-c", args.load_cpu, *argv] if args.load_cpu is not None else argv

    subprocess.run(wrk(2), capture_output=True, check=True)  # warm: connections, caches
    began = time.monotonic()  # one clock for every process: events are kept from here on
    out = subprocess.run(wrk(args.duration), capture_output=True, text=True, check=True).stdout
    ended = time.monotonic()
    procs.stop(proc)  # SIGTERM: the proxy drains and writes what it recorded
    found = json.loads(record.read_text())
    during = {k: [e[:-1] for e in v if began <= e[-1] <= ended] for k, v in found.items()}
    return {"wrk": _latencies(out), **during}


def _latencies(out: str) -> dict[str, str]:
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            result[parts[0]] = parts[1]
        elif line.startswith("Requests/sec:"):
            result["req/s"] = parts[1]
    return result


def summary(found: dict[str, Any]) -> list[str]:
    lines = [f"  wrk: {found['wrk']} (what follows: during the measured wrk run only)"]
    for generation in (0, 1, 2):
        pauses = sorted(ms for gen, ms in found["gc"] if gen == generation)
        if pauses:
            median = pauses[len(pauses) // 2]
            lines.append(
                f"  gen{generation} collections: {len(pauses)}, median {median:.2f} ms, "
                f"max {pauses[-1]:.2f} ms, total {sum(pauses):.0f} ms"
            )
    trims = [ms for (ms,) in found["trim"]]
    lines.append(f"  malloc_trim: {len(trims)}, max {max(trims, default=0):.2f} ms")
    stalls = sorted(ms for (ms,) in found["stalls"])
    lines.append(
        f"  loop stalls > {STALL_MS:g} ms: {len(stalls)}, longest "
        + ", ".join(f"{ms:.0f}" for ms in stalls[-5:])
        + " ms"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tail", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout too")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--duration", type=int, default=15, help="seconds of wrk per run")
    args = parser.parse_args(argv)
    two = (os.cpu_count() or 1) >= 2
    args.server_cpu, args.load_cpu = ("0", "1") if two else (None, None)
    trees = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    work = Path(tempfile.mkdtemp(prefix="owui-tail-"))
    procs = Procs(work)
    try:
        upstream_port = free_port()
        conf = configs.nginx_static(work, "upstream", upstream_port)
        nginx = procs.start(
            "upstream", ["nginx", "-c", str(conf), "-e", "stderr"], cpus=args.load_cpu
        )
        wait_http(f"http://127.0.0.1:{upstream_port}/", nginx)
        for index in range(args.rounds):
            for label, tree in trees.items():
                found = one_run(tree, f"{label}-{index}", work, procs, upstream_port, args)
                print(f"{label} ({tree}), round {index + 1}:")
                print("\n".join(summary(found)), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
