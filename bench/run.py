"""owui-gate benchmarks: ``python -m bench.run [--quick] [--cases 1,2,...]``.

Starts everything it needs on loopback (nginx, Caddy, owui-proxy, a Python streaming
upstream, a real OpenWebUI), runs every case side by side in one run, and writes
``bench/results/<timestamp>.md`` and ``.json`` with the machine's description.

CPU pinning (on a machine with 2 or more CPUs): CPU 0 is the *server* CPU, where the system
under test runs (the proxy being measured, or the upstream itself for "direct" rows, and
OpenWebUI); CPU 1 is the *load* CPU, where wrk, the measuring clients, the static
upstream and the fake auth service run. So every proxy gets exactly one CPU of its own and
the same one, and the load generator never competes with it. Rows with more than one
worker are pinned to both CPUs and say so.

Cases (issue 7): 1 small JSON through each proxy, 2 a real OpenWebUI endpoint, 3 SSE
added latency, 4 WebSocket round trip, 5 a 1 GiB upload and the proxy's peak RSS,
6 provisioning through the internal listener, 7 forward-auth with the decision cache off/on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import clients, configs, profile
from bench.configs import BENCH_EMAIL
from bench.procs import (
    Proc,
    Procs,
    busy_seconds,
    cpu_seconds,
    free_port,
    proc_status_kb,
    system_busy,
    wait_http,
)
from bench.report import FLOOR

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LUA = Path(__file__).resolve().parent / "wrk_json.lua"
RESULTS = Path(__file__).resolve().parent / "results"
# What a browser behind oauth2-proxy sends: the session cookie the auth service checks.
COOKIE = "_oauth2_proxy=bench-session-cookie"
GIB = 1 << 30
BEFORE = "owui-proxy before, 1 worker"


@dataclass
class Plan:
    """How long and how big each case is; ``--quick`` shrinks everything."""

    duration: int = 10
    warmup: int = 2
    conns: tuple[int, ...] = (32, 256)
    owui_conns: int = 32
    owui_rounds: int = 3
    sse_events: int = 500
    sse_interval_ms: float = 5.0
    ws_messages: int = 2000
    upload_bytes: int = GIB
    prov_users: int = 200
    prov_modules: int = 3
    prov_concurrency: int = 8
    profile_s: int = 10
    smoke: bool = False

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            duration=3,
            warmup=1,
            owui_rounds=1,
            sse_events=100,
            ws_messages=300,
            upload_bytes=256 << 20,
            prov_users=10,
            profile_s=3,
            smoke=True,
        )


@dataclass
class Cpus:
    server: str | None
    load: str | None
    both: str | None

    @classmethod
    def detect(cls) -> Cpus:
        if (os.cpu_count() or 1) < 2:
            return cls(None, None, None)
        return cls("0", "1", "0,1")


@dataclass
class Run:
    args: argparse.Namespace
    plan: Plan
    cpus: Cpus
    work: Path
    procs: Procs
    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def attempt(self, what: str, start: Callable[[], Any]) -> Any:
        """Start something; on failure record why and return None, so the rows that do
        not need it still run."""
        try:
            return start()
        except Exception as exc:
            self.failures[what] = f"{type(exc).__name__}: {exc}"
            self.log(f"{what} failed: {exc}")
            return None

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _cmd_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def machine() -> dict[str, str]:
    """CPU, kernel and the versions of every program the numbers depend on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    import aiohttp

    versions = {
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": _cmd_version(["nginx", "-v"]).removeprefix("nginx version: "),
        "caddy": _cmd_version(["caddy", "version"]),
        "wrk": _cmd_version(["wrk", "--version"]).split(" [")[0],
    }
    with contextlib.suppress(ImportError):
        import uvloop

        versions["uvloop"] = uvloop.__version__
    with contextlib.suppress(Exception):
        from demo import openwebui

        versions["open-webui"] = openwebui.version()
    versions["owui-gate"] = _git_rev(ROOT)
    return versions


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def _git_rev(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--", "proxy"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out.stdout.strip() + (" (proxy/ modified)" if dirty else "")


# --------------------------------------------------------------------------- wrk


def wrk(
    run: Run, url: str, conns: int, duration: int, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One wrk run (1 thread, on the load CPU); returns its JSON summary plus req/s."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "-s", str(LUA)]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    if run.cpus.load:
        argv = ["taskset", "-c", run.cpus.load, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    match = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk gave no summary: {out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(v for k, v in result.items() if k.startswith("errors_"))
    result["conns"] = conns
    return result


def measure(
    run: Run,
    url: str,
    conns: int,
    headers: Mapping[str, str] | None = None,
    server: Proc | None = None,
    warm: bool = True,
    also: Mapping[str, Proc] | None = None,
    counter: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Warm up (connections, caches, pools), then measure. With ``server``, also the CPU
    time its process tree used per request (what one request costs that server); ``also``
    names more processes whose CPU per request is recorded under ``cpu_us_per_req_<name>``;
    ``counter`` (e.g. auth-service calls so far) is read around the measurement (``counted``).

    Other programs on the machine spoil numbers, so the CPU time nobody in this run used
    during the measurement (``foreign_cpu``, in CPUs) is recorded, and a row disturbed by
    more than 0.15 CPU is measured again (at most ``--retries`` times); the least
    disturbed attempt is kept.
    """
    if warm:
        wrk(run, url, conns, run.plan.warmup, headers)
    watched = dict(also or {})
    if server is not None:
        watched[""] = server
    best: dict[str, Any] | None = None
    for attempt in range(1 + run.args.retries):
        settle(run)
        pids = {name: proc.tree() for name, proc in watched.items()}
        before = {name: cpu_seconds(p) for name, p in pids.items()}
        ours_before = _ours(run)
        busy_before = busy_seconds()
        counted = counter() if counter else 0
        result = wrk(run, url, conns, run.plan.duration, headers)
        if counter:
            result["counted"] = counter() - counted
        seconds = result["duration_us"] / 1e6
        foreign = busy_seconds() - busy_before - (_ours(run) - ours_before)
        result["foreign_cpu"] = round(max(foreign, 0.0) / seconds, 3)
        result["attempts"] = attempt + 1
        for name, p in pids.items():
            used = cpu_seconds(p) - before[name]
            suffix = f"_{name}" if name else ""
            result[f"cpu_us_per_req{suffix}"] = 1e6 * used / max(result["requests"], 1)
            result[f"cpu_util{suffix}"] = used / seconds
        if best is None or result["foreign_cpu"] < best["foreign_cpu"]:
            best = result
        if result["foreign_cpu"] <= 0.15:
            break
        run.log(f"  disturbed by other programs ({result['foreign_cpu']:.2f} CPU); again")
    assert best is not None
    return best


def _ours(run: Run) -> float:
    """CPU seconds used so far by this run: its servers, this process and reaped children
    (wrk). Processes stopped meanwhile are not counted; no process stops mid-row."""
    pids = [pid for proc in run.procs.running for pid in proc.tree()]
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(pids) + me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def settle(run: Run, threshold: float = 0.05) -> None:
    """Wait (bounded) until other programs leave the CPUs idle."""
    started = time.monotonic()
    limit = 10 if run.plan.smoke else 30
    while system_busy(0.5) > threshold and time.monotonic() - started < limit:
        time.sleep(1.5)


# --------------------------------------------------------------------------- servers


def start_nginx(run: Run, name: str, conf: Path, port: int, cpus: str | None) -> Proc:
    proc = run.procs.start(name, ["nginx", "-c", str(conf), "-e", "stderr"], cpus=cpus)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc


def start_caddy(run: Run, name: str, conf: Path, port: int, cpus: str | None) -> Proc:
    env = {
        "GOMAXPROCS": "1",
        "XDG_DATA_HOME": str(run.work / "caddy-data"),
        "XDG_CONFIG_HOME": str(run.work / "caddy-config"),
    }
    argv = ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]
    proc = run.procs.start(name, argv, cpus=cpus, env=env)
    wait_http(f"http://127.0.0.1:{port}/", proc)
    return proc


@dataclass
class Gate:
    """A running owui-proxy."""

    proc: Proc
    url: str
    admin_url: str
    internal_url: str | None = None


def start_gate(
    run: Run,
    name: str,
    *,
    upstream: str,
    auth_url: str,
    cpus: str | None,
    workers: int = 1,
    cache_s: float = 60,
    internal_tokens: Path | None = None,
    extra: Mapping[str, str] | None = None,
    ready_path: str = "/",
    tree: Path = ROOT,
) -> Gate:
    """Start ``python -m proxy`` in forward-auth mode; wait until it relays a request.

    ``tree``: the checkout whose ``proxy/`` runs (``--before`` names another one).
    """
    port, admin = free_port(), free_port()
    env = {
        "OWUI_PROXY_UPSTREAM": upstream,
        "OWUI_PROXY_LISTEN": f"127.0.0.1:{port}",
        "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "OWUI_PROXY_AUTH": "forward",
        "OWUI_PROXY_FORWARD_AUTH_URL": auth_url,
        "OWUI_PROXY_FORWARD_AUTH_CACHE_S": str(cache_s),
        "OWUI_PROXY_WORKERS": str(workers),
        "OWUI_PROXY_MAX_BODY_BYTES": str(4 * GIB),
    }
    internal_url = None
    if internal_tokens is not None:
        internal = free_port()
        env["OWUI_PROXY_INTERNAL_LISTEN"] = f"127.0.0.1:{internal}"
        env["OWUI_PROXY_INTERNAL_TOKENS_FILE"] = str(internal_tokens)
        internal_url = f"http://127.0.0.1:{internal}"
    env.update(extra or {})
    argv = run.args.proxy_cmd.split() if run.args.proxy_cmd else [PYTHON, "-m", "proxy"]
    proc = run.procs.start(name, argv, cpus=cpus, env=env, cwd=tree)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + ready_path, proc, headers={"Cookie": COOKIE}, timeout=30)
    return Gate(proc, url, f"http://127.0.0.1:{admin}", internal_url)


def start_floor(run: Run, port: int, upstream_port: int, cpus: str | None) -> Proc:
    """The floor (``bench/floor.py``): the least a Python proxy on aiohttp costs."""
    log = run.work / "floor-access.log"
    argv = [PYTHON, "-m", "bench.floor", str(port), str(upstream_port), str(log)]
    proc = run.procs.start("floor", argv, cpus=cpus, cwd=ROOT)
    wait_http(_url(port) + "/", proc)
    return proc


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def get_json(url: str, headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(url, headers=dict(headers))  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def check_identity(url: str) -> None:
    """The upstream must see the proxy's email, never the client's spoofed copies."""
    spoof = {"Cookie": COOKIE, "X-User-Email": "evil@example.com", "X_User_Email": "evil2@x.io"}
    seen = get_json(url + "/", spoof).get("user")
    if seen != BENCH_EMAIL:
        raise RuntimeError(f"{url}: upstream saw X-User-Email {seen!r}, not {BENCH_EMAIL!r}")


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


# --------------------------------------------------------------------------- case 1 and 7


def static_cases(run: Run) -> None:
    """Cases 1 and 7 (and the profile): all against the nginx static upstream, and the
    same fake auth service (nginx, a process of its own so its CPU is measured apart)."""
    cpus = run.cpus
    up_port, auth_port, direct_port, nginx_port, caddy_port = (free_port() for _ in range(5))
    nginx_ar_port, caddy_fa_port = free_port(), free_port()
    start_nginx(
        run, "upstream", configs.nginx_static(run.work, "upstream", up_port), up_port, cpus.load
    )
    upstream = f"http://127.0.0.1:{up_port}"
    auth = start_nginx(
        run, "auth", configs.nginx_static(run.work, "auth", auth_port), auth_port, cpus.load
    )
    auth_url = f"http://127.0.0.1:{auth_port}/oauth2/auth"
    auth_log = run.work / "auth-auth.log"
    direct = start_nginx(
        run,
        "direct",
        configs.nginx_static(run.work, "direct", direct_port),
        direct_port,
        cpus.server,
    )
    nginx = start_nginx(
        run,
        "nginx-proxy",
        configs.nginx_proxy(run.work, "nginx-proxy", nginx_port, up_port),
        nginx_port,
        cpus.server,
    )
    nginx_ar_conf = configs.nginx_proxy(
        run.work, "nginx-auth-request", nginx_ar_port, up_port, auth_port
    )
    nginx_ar = run.attempt(
        "nginx auth_request",
        lambda: start_nginx(run, "nginx-auth-request", nginx_ar_conf, nginx_ar_port, cpus.server),
    )
    caddy_conf = configs.caddyfile(run.work, "caddy", caddy_port, up_port)
    caddy = run.attempt(
        "caddy", lambda: start_caddy(run, "caddy", caddy_conf, caddy_port, cpus.server)
    )
    caddy_fa_conf = configs.caddyfile_forward_auth(
        run.work, "caddy-forward-auth", caddy_fa_port, up_port, auth_port
    )
    caddy_fa = run.attempt(
        "caddy forward_auth",
        lambda: start_caddy(run, "caddy-forward-auth", caddy_fa_conf, caddy_fa_port, cpus.server),
    )
    floor_port = free_port()
    floor = run.attempt("floor", lambda: start_floor(run, floor_port, up_port, cpus.server))
    gate1 = run.attempt(
        "owui-proxy (1 worker)",
        lambda: start_gate(
            run, "owui-proxy-1w", upstream=upstream, auth_url=auth_url, cpus=cpus.server
        ),
    )
    before = None
    if run.args.before is not None:
        before = run.attempt(
            "owui-proxy before (1 worker)",
            lambda: start_gate(
                run,
                "owui-proxy-before",
                upstream=upstream,
                auth_url=auth_url,
                cpus=cpus.server,
                tree=run.args.before,
            ),
        )
    gate2 = run.attempt(
        "owui-proxy (2 workers)",
        lambda: start_gate(
            run, "owui-proxy-2w", upstream=upstream, auth_url=auth_url, cpus=cpus.both, workers=2
        ),
    )
    # (label, URL, where it runs, whether it is a proxy to check, its process)
    targets: list[tuple[str, str, str, bool, Proc]] = [
        ("direct (nginx return 200)", _url(direct_port), "server CPU", False, direct),
        ("nginx proxy_pass", _url(nginx_port), "server CPU", True, nginx),
    ]
    if nginx_ar:
        targets.append(("nginx auth_request", _url(nginx_ar_port), "server CPU", True, nginx_ar))
    if caddy:
        targets.append(("Caddy reverse_proxy", _url(caddy_port), "server CPU", True, caddy))
    if caddy_fa:
        targets.append(("Caddy forward_auth", _url(caddy_fa_port), "server CPU", True, caddy_fa))
    if floor:
        targets.append((FLOOR, _url(floor_port), "server CPU", True, floor))
    if before:
        targets.append((BEFORE, before.url, "server CPU", True, before.proc))
    if gate1:
        targets.append(("owui-proxy, 1 worker", gate1.url, "server CPU", True, gate1.proc))
    if gate2:
        targets.append(
            ("owui-proxy, 2 workers", gate2.url, "both CPUs (shared with wrk)", True, gate2.proc)
        )
    for target in list(targets):
        label, url, _, proxied, _ = target
        if not proxied:
            continue
        if run.attempt(f"identity check: {label}", lambda u=url: check_identity(u) or True) is None:
            targets.remove(target)
    rows = []
    for conns in run.plan.conns if "1" in run.args.cases else ():
        for label, url, pinned, _, proc in targets:
            run.log(f"case 1: {label}, {conns} connections")
            # The auth service's CPU is measured for every row: the whole chain's cost per
            # request is the edge's plus what it made the auth service do.
            result = measure(
                run,
                url + "/",
                conns,
                {"Cookie": COOKIE},
                server=proc,
                also={"auth": auth},
                counter=lambda: count_lines(auth_log),
            )
            rows.append(
                {"target": label, "cpus": pinned, "auth_calls": result["counted"], **result}
            )
    if rows:
        run.results["case1"] = {"rows": rows}
    for label in ("nginx-proxy", "caddy", "nginx-auth-request", "caddy-forward-auth", "floor"):
        with contextlib.suppress(OSError):
            (run.work / f"{label}-access.log").unlink()  # can grow to GBs
    # Emptied, not removed: nginx appends to it (O_APPEND), and case 7 counts its lines.
    with contextlib.suppress(OSError):
        os.truncate(auth_log, 0)

    if gate1 is None:
        return
    # Case 7: the same proxy with the decision cache off, and auth-service calls counted.
    if "7" in run.args.cases:
        gate_nc = start_gate(
            run,
            "owui-proxy-nocache",
            upstream=upstream,
            auth_url=auth_url,
            cpus=cpus.server,
            cache_s=0,
        )
        rows7 = []
        conns = run.plan.conns[0]
        for label, gate in (("cache off", gate_nc), ("cache on (60 s)", gate1)):
            run.log(f"case 7: forward-auth {label}")
            result = measure(
                run,
                gate.url + "/",
                conns,
                {"Cookie": COOKIE},
                server=gate.proc,
                counter=lambda: count_lines(auth_log),
            )
            rows7.append({"target": label, "auth_calls": result["counted"], **result})
        run.results["case7"] = {"rows": rows7}
        run.procs.stop(gate_nc.proc)

    if not run.args.no_profile:
        run.log("profile: py-spy on owui-proxy (1 worker) under wrk -c32")
        run.results["profile"] = profile.record(run, gate1.proc.pid, gate1.url + "/", COOKIE)


# --------------------------------------------------------------------------- cases 3-5


def streaming_cases(run: Run) -> None:
    cpus = run.cpus
    auth = free_port()
    start_nginx(run, "auth", configs.nginx_static(run.work, "auth", auth), auth, cpus.load)
    auth_url = f"http://127.0.0.1:{auth}/oauth2/auth"
    up_port = free_port()
    up = run.procs.start(
        "py-upstream", [PYTHON, "-m", "bench.upstream", str(up_port)], cpus=cpus.load, cwd=ROOT
    )
    direct = f"http://127.0.0.1:{up_port}"
    wait_http(direct + "/health", up)
    gate = start_gate(
        run,
        "owui-proxy-stream",
        upstream=direct,
        auth_url=auth_url,
        cpus=cpus.server,
        ready_path="/health",
    )
    headers = {"Cookie": COOKIE}
    plan = run.plan

    def added_latency(
        what: str, measure: Callable[[str], list[int]], count: int, cpu_key: str
    ) -> dict[str, Any]:
        """``measure`` direct then through the proxy; the proxy's latency and CPU on top."""
        out: dict[str, Any] = {}
        for label, url in (("direct", direct), ("owui-proxy", gate.url)):
            run.log(f"{what} {label}")
            before = cpu_seconds(gate.proc.tree())
            out[label] = clients.summary_us(measure(url))
            if label == "owui-proxy":
                used = cpu_seconds(gate.proc.tree()) - before
                out[cpu_key] = 1e6 * used / count
        out["added_p50_us"] = out["owui-proxy"]["p50_us"] - out["direct"]["p50_us"]
        out["added_p99_us"] = out["owui-proxy"]["p99_us"] - out["direct"]["p99_us"]
        return out

    def sse(url: str) -> list[int]:
        # A short stream first, so connection set-up does not count.
        clients.run(clients.sse_deltas(url, headers, 10, plan.sse_interval_ms))
        return clients.run(clients.sse_deltas(url, headers, plan.sse_events, plan.sse_interval_ms))

    if "3" in run.args.cases:
        run.results["case3"] = added_latency(
            "case 3: SSE", sse, plan.sse_events, "proxy_cpu_us_per_event"
        )
    if "4" in run.args.cases:
        # Per round trip: one message relayed each way (plus the warm-up's share).
        run.results["case4"] = added_latency(
            "case 4: WebSocket echo",
            lambda url: clients.run(clients.ws_rtts(url, headers, plan.ws_messages)),
            plan.ws_messages,
            "proxy_cpu_us_per_rtt",
        )

    run.procs.stop(gate.proc)
    if "5" in run.args.cases:
        out = {"bytes": plan.upload_bytes}
        run.log(f"case 5: upload {plan.upload_bytes >> 20} MiB direct")
        out["direct"] = clients.upload(direct, headers, plan.upload_bytes)
        # A fresh proxy, so its high-water mark is the upload's and nothing else's.
        gate = start_gate(
            run,
            "owui-proxy-upload",
            upstream=direct,
            auth_url=auth_url,
            cpus=cpus.server,
            ready_path="/health",
        )
        pids = gate.proc.tree()
        out["rss_before_kb"] = max(proc_status_kb(p, "VmRSS") or 0 for p in pids)
        run.log(f"case 5: upload {plan.upload_bytes >> 20} MiB through owui-proxy")
        before = cpu_seconds(gate.proc.tree())
        out["owui-proxy"] = clients.upload(gate.url, headers, plan.upload_bytes)
        out["proxy_cpu_s_per_gib"] = (cpu_seconds(gate.proc.tree()) - before) / (
            plan.upload_bytes / GIB
        )
        out["peak_rss_kb"] = max(proc_status_kb(p, "VmHWM") or 0 for p in gate.proc.tree())
        out["pids"] = pids
        run.results["case5"] = out
        run.procs.stop(gate.proc)


# --------------------------------------------------------------------------- cases 2 and 6


def openwebui_cases(run: Run) -> None:
    from bench import owui

    cpus = run.cpus
    auth = free_port()
    start_nginx(run, "auth2", configs.nginx_static(run.work, "auth2", auth), auth, cpus.load)
    auth_url = f"http://127.0.0.1:{auth}/oauth2/auth"
    run.log("starting OpenWebUI (server CPU)")
    webui = owui.start(run.procs, run.work, cpus.server)
    token = owui.admin_token(webui.url, BENCH_EMAIL)
    owui.make_chats(webui.url, token, BENCH_EMAIL, 20)
    tokens_file = run.work / "service-tokens"
    tokens_file.write_text(secrets.token_urlsafe(48) + "\n")
    tokens_file.chmod(0o600)
    gate = start_gate(
        run,
        "owui-proxy-owui",
        upstream=webui.url,
        auth_url=auth_url,
        cpus=cpus.server,
        internal_tokens=tokens_file,
        ready_path="/health",
    )
    gate_load = start_gate(
        run,
        "owui-proxy-owui-load",
        upstream=webui.url,
        auth_url=auth_url,
        cpus=cpus.load,
        ready_path="/health",
    )
    gate_before = None
    if run.args.before is not None and "2" in run.args.cases:
        gate_before = start_gate(
            run,
            "owui-proxy-owui-before",
            upstream=webui.url,
            auth_url=auth_url,
            cpus=cpus.server,
            ready_path="/health",
            tree=run.args.before,
        )

    if "2" in run.args.cases:
        path = "/api/v1/chats/list"
        bearer = {"Authorization": f"Bearer {token}"}
        targets = [
            ("direct", webui.url, {**bearer, "X-User-Email": BENCH_EMAIL}, None),
            ("owui-proxy on OpenWebUI's CPU", gate.url, {**bearer, "Cookie": COOKIE}, gate),
            ("owui-proxy on the load CPU", gate_load.url, {**bearer, "Cookie": COOKIE}, gate_load),
        ]
        if gate_before is not None:
            label = "owui-proxy before on OpenWebUI's CPU"
            targets.append((label, gate_before.url, {**bearer, "Cookie": COOKIE}, gate_before))
        for _label, url, headers, _gate in targets:
            get_json(url + path, headers)  # fails loudly on 401 (e.g. user mismatch)
        # OpenWebUI keeps starting things up for a while after /health answers.
        wrk(run, webui.url + path, run.plan.owui_conns, 3 * run.plan.warmup, targets[0][2])
        rows = []
        for rnd in range(run.plan.owui_rounds):
            # Each round starts one target further on: OpenWebUI's cost per request drifts
            # over a run (it grows), and a fixed order would charge the drift to the rows
            # measured last in every round.
            shift = rnd % len(targets)
            for label, url, headers, via in targets[shift:] + targets[:shift]:
                run.log(f"case 2: {label}, round {rnd + 1}")
                watched = {"owui": webui.proc} | ({"proxy": via.proc} if via else {})
                result = measure(run, url + path, run.plan.owui_conns, headers, also=watched)
                rows.append({"target": label, "round": rnd + 1, **result})
        run.results["case2"] = {"rows": rows, "path": path}
    run.procs.stop(gate_load.proc)
    if gate_before is not None:
        run.procs.stop(gate_before.proc)

    if "6" in run.args.cases:
        from bench import provision

        run.results["case6"] = provision.compare(
            run, webui.url, gate.internal_url, tokens_file, {"owui": webui.proc, "proxy": gate.proc}
        )


# --------------------------------------------------------------------------- main


def wait_quiet(run: Run, step: str, threshold: float = 0.15) -> dict[str, Any]:
    """Numbers taken while other programs load the CPUs are worthless: wait (bounded) until
    the machine is idle before each step, and record how busy it was."""
    started = time.monotonic()
    busy = system_busy()
    while busy > threshold and time.monotonic() - started < run.args.wait_quiet:
        run.log(f"machine busy ({busy:.0%} of all CPUs); waiting before {step}")
        time.sleep(4)
        busy = system_busy()
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "step": step,
        "busy_before": round(busy, 3),
        "waited_s": round(time.monotonic() - started, 1),
        "loadavg": " ".join(load),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 minute smoke run")
    parser.add_argument("--cases", default="1,2,3,4,5,6,7", help="comma list of cases to run")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--proxy-cmd", help="command that starts the proxy (default: this Python -m proxy)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="S",
        help="before each step, wait up to S s for other programs to leave the CPUs idle "
        "(default 300, quick 20)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="re-measure a wrk row disturbed by other programs at most this often "
        "(default 2, quick 0)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="another checkout (e.g. a git worktree of main): cases 1 and 2 get a row with "
        "its proxy, measured side by side with this one's",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    args = parser.parse_args(argv)
    args.cases = set(args.cases.split(","))
    plan = Plan.quick() if args.quick else Plan()
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    if args.wait_quiet is None:
        args.wait_quiet = 20 if args.quick else 300
    cpus = Cpus.detect()
    if cpus.load is not None:
        os.sched_setaffinity(0, {int(cpus.load)})  # clients measured in this process
    work = Path(tempfile.mkdtemp(prefix="owui-bench-"))
    run = Run(args, plan, cpus, work, Procs(work))
    # A hard stop: nothing this run started outlives it, even if a case hangs.
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(2400 if not args.quick else 600)
    signal.signal(signal.SIGTERM, _timeout)
    started = time.time()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run.results["stamp"] = stamp
    run.results["machine"] = machine()
    if args.before is not None:
        run.results["machine"]["owui-gate before"] = _git_rev(args.before)
    run.results["plan"] = plan.__dict__ | {"quick": args.quick, "cpus": cpus.__dict__}
    failures = run.failures
    steps: list[tuple[set[str], Callable[[Run], None]]] = [
        ({"1", "7"}, static_cases),
        ({"3", "4", "5"}, streaming_cases),
        ({"2", "6"}, openwebui_cases),
    ]
    run.results["quiet"] = []
    try:
        for wanted, step in steps:
            if not wanted & args.cases:
                continue
            run.results["quiet"].append(wait_quiet(run, step.__name__))
            try:
                step(run)
            except Exception as exc:  # one broken case must not lose the others' numbers
                failures[step.__name__] = f"{type(exc).__name__}: {exc}"
                run.log(f"{step.__name__} failed: {exc}")
            finally:
                run.procs.stop_all()
    except Stopped as exc:
        failures["run"] = str(exc)
    finally:
        signal.alarm(0)
        run.procs.stop_all()
    run.results["failures"] = failures
    run.results["elapsed_s"] = round(time.time() - started, 1)
    run.results["command"] = "python -m bench.run " + " ".join(argv or sys.argv[1:])
    from bench import report

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}.json").write_text(json.dumps(run.results, indent=2, default=str))
    (args.out / f"{stamp}.md").write_text(report.markdown(run.results))
    run.log(f"wrote {args.out / stamp}.md and .json in {run.results['elapsed_s']} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        run.log(f"work folder kept: {work}")
    return 1 if failures else 0


class Stopped(BaseException):
    """The hard time limit or SIGTERM: abandon the remaining steps, keep what was measured."""


def _timeout(signum: int, frame: object) -> None:
    raise Stopped(f"benchmark stopped by signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
