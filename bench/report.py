"""The markdown report of one run: targets first, then one table per case."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# The case 1 row of the floor proxy (bench/floor.py), as bench/run.py labels it.
FLOOR = "floor (bench/floor.py)"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _rps(value: float) -> str:
    return f"{value:,.0f}"


def _cpu(row: dict[str, Any]) -> str:
    """CPU time the server's process tree spent per request, and its utilisation."""
    if "cpu_us_per_req" not in row:
        return "-"
    return f"{row['cpu_us_per_req']:.0f} ({row['cpu_util']:.0%} CPU)"


def _chain(row: dict[str, Any]) -> str:
    """CPU per request of the edge plus the auth service it asked (the whole chain)."""
    if "cpu_us_per_req" not in row or "cpu_us_per_req_auth" not in row:
        return "-"
    return f"{row['cpu_us_per_req'] + row['cpu_us_per_req_auth']:.0f}"


def _auth_calls(row: dict[str, Any]) -> str:
    """Auth-service calls per request during the row."""
    if "auth_calls" not in row:
        return "-"
    return f"{row['auth_calls'] / max(row['requests'], 1):.2f}"


def _foreign(row: dict[str, Any]) -> str:
    """CPU used by programs outside the run while the row was measured (and attempts)."""
    if "foreign_cpu" not in row:
        return "-"
    again = f" ({row['attempts']} tries)" if row.get("attempts", 1) > 1 else ""
    return f"{row['foreign_cpu']:.2f} CPU{again}"


def _ok(met: bool) -> str:
    return "**met**" if met else "**missed**"


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(case, target, result, verdict) for every target the run has numbers for."""
    out: list[tuple[str, str, str, str]] = []
    case1 = r.get("case1")
    if case1:
        by = {(row["target"], row["conns"]): row for row in case1["rows"]}
        for conns in sorted({row["conns"] for row in case1["rows"]}):
            gate = by.get(("owui-proxy, 1 worker", conns))
            caddy = by.get(("Caddy reverse_proxy", conns))
            if gate and caddy:
                ratio = gate["rps"] / caddy["rps"]
                out.append(
                    (
                        f"1 ({conns} conns)",
                        "req/s >= Caddy",
                        f"{_rps(gate['rps'])} vs {_rps(caddy['rps'])} ({ratio:.2f}x)",
                        _ok(ratio >= 1),
                    )
                )
                out.append(
                    (
                        f"1 ({conns} conns)",
                        "p99 <= Caddy",
                        f"{_ms(gate['p99_us'])} ms vs {_ms(caddy['p99_us'])} ms",
                        _ok(gate["p99_us"] <= caddy["p99_us"]),
                    )
                )
                if "cpu_us_per_req" in gate and "cpu_us_per_req" in caddy:
                    cpu, limit = gate["cpu_us_per_req"], caddy["cpu_us_per_req"]
                    out.append(
                        (
                            f"1 ({conns} conns)",
                            "CPU/req <= Caddy",
                            f"{cpu:.0f} vs {limit:.0f} µs ({cpu / limit:.2f}x)",
                            _ok(cpu <= limit),
                        )
                    )
            floor = by.get((FLOOR, conns))
            if gate and floor and "cpu_us_per_req" in gate and "cpu_us_per_req" in floor:
                ratio = gate["cpu_us_per_req"] / floor["cpu_us_per_req"]
                out.append(
                    (
                        f"1 ({conns} conns)",
                        "CPU/req <= 1.3x the floor's (stretch)",
                        f"{gate['cpu_us_per_req']:.0f} vs {floor['cpu_us_per_req']:.0f} µs "
                        f"({ratio:.2f}x)",
                        _ok(ratio <= 1.3),
                    )
                )
    case2 = r.get("case2")
    if case2:
        means = case2_means(case2["rows"])
        direct = means.get("direct")
        gate = means.get("owui-proxy on OpenWebUI's CPU")
        if direct and gate:
            ratio = gate / direct
            out.append(
                (
                    "2",
                    ">= 97% of direct req/s (measured)",
                    f"{_rps(gate)} vs {_rps(direct)} ({ratio:.1%})",
                    _ok(ratio >= 0.97),
                )
            )
        capacity = case2_capacity(case2["rows"])
        if capacity:
            out.append(
                (
                    "2",
                    ">= 97% of direct (CPU capacity)",
                    f"{capacity['ratio']:.1%}: OpenWebUI {capacity['owui_us']:,.0f} µs/req, "
                    f"proxy {capacity['proxy_us']:,.0f} µs/req",
                    _ok(capacity["ratio"] >= 0.97),
                )
            )
    for case, limit in (("case3", 1000), ("case4", 500)):
        data = r.get(case)
        if data:
            added = data["added_p50_us"]
            out.append(
                (
                    case[-1],
                    f"<= {limit / 1000:g} ms added (p50)",
                    f"{added / 1000:+.3f} ms (p99 {data['added_p99_us'] / 1000:+.3f} ms)",
                    _ok(added <= limit),
                )
            )
    case5 = r.get("case5")
    if case5 and "peak_rss_kb" in case5:
        mib = case5["peak_rss_kb"] / 1024
        out.append(("5", "peak RSS <= 64 MiB", f"{mib:.1f} MiB", _ok(mib <= 64)))
    case6 = r.get("case6")
    if case6 and "ratio" in case6:
        out.append(
            (
                "6",
                ">= 90% of direct users/s",
                f"{case6['proxy']['users_per_s']:.2f} vs "
                f"{case6['direct']['users_per_s']:.2f} ({case6['ratio']:.1%})",
                _ok(case6["ratio"] >= 0.9),
            )
        )
    return out


def case2_capacity(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Throughput ratio implied by CPU time when OpenWebUI and the proxy share one CPU:
    OpenWebUI's CPU per request direct, over OpenWebUI's plus the proxy's through the
    proxy. Far steadier than req/s, which OpenWebUI's own jitter dominates."""

    def mean(target: str, key: str) -> float | None:
        values = [row[key] for row in rows if row["target"] == target and key in row]
        return sum(values) / len(values) if values else None

    via = "owui-proxy on OpenWebUI's CPU"
    direct = mean("direct", "cpu_us_per_req_owui")
    owui_via = mean(via, "cpu_us_per_req_owui")
    proxy = mean(via, "cpu_us_per_req_proxy")
    if not (direct and owui_via and proxy):
        return None
    return {
        "ratio": direct / (owui_via + proxy),
        "owui_us": direct,
        "owui_via_us": owui_via,
        "proxy_us": proxy,
    }


def case2_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row in rows:
        sums.setdefault(row["target"], []).append(row["rps"])
    return {k: sum(v) / len(v) for k, v in sums.items()}


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    plan = r["plan"]
    out = [f"# owui-gate benchmark ({'quick' if plan['quick'] else 'full'} run)\n"]
    out.append(f"Command: `{r['command'].strip()}` (from the repository root, in `.venv`); ")
    out.append(f"took {r['elapsed_s']:.0f} s.\n\n")
    out.append(_table(["machine", ""], m.items()))
    cpus = plan["cpus"]
    if cpus["server"] is not None:
        out.append(
            f"\nPinning: the system under test (each proxy, or the upstream itself for "
            f"*direct*, and OpenWebUI) runs on CPU {cpus['server']}; wrk (1 thread), the "
            f"measuring clients, the static upstream and the fake auth service on CPU "
            f"{cpus['load']}. Rows marked *both CPUs* share CPU {cpus['load']} with the load.\n"
        )
    else:
        out.append("\nPinning: none (a single CPU).\n")
    out.append(
        f"\nwrk: 1 thread, {plan['warmup']} s warm-up then {plan['duration']} s measured per "
        "row; latencies are wrk's (ms). Every proxy writes an access log line per request "
        "to a file, strips the client's identity headers and sets `X-User-Email`. "
        "*server CPU µs/req* is the CPU time the server's processes used per request (from "
        "/proc), the steadiest number here. *other load* is CPU time used by programs "
        "outside this run during the row (in CPUs); a row disturbed by more than 0.15 CPU "
        "is measured again and the least disturbed try kept.\n"
    )
    quiet = r.get("quiet") or []
    if quiet:
        out.append(
            "\nOther load on the machine before each step (all CPUs busy, after waiting): "
            + "; ".join(
                f"{q['step']} {q['busy_before']:.0%} "
                f"(load {q['loadavg']}, waited {q['waited_s']:.0f} s)"
                for q in quiet
            )
            + ".\n"
        )
    out.append("\n## Targets\n\n")
    out.append(_table(["case", "target", "result", "verdict"], targets(r)))

    if r.get("case1"):
        out.append("\n## Case 1: small JSON from a static upstream (nginx `return 200`)\n\n")
        out.append(
            "owui-proxy authenticates every request with forward-auth, decision cache "
            "**on** (60 s), so the auth call is amortised; nginx `auth_request` and Caddy "
            "`forward_auth` ask the same fake auth service (nginx, on the load CPU) on every "
            "request, as they do; nginx `proxy_pass` and Caddy `reverse_proxy` set a fixed "
            "identity (no auth step). *auth calls/req* is counted in the auth service's log; "
            "*chain CPU µs/req* is the edge's CPU per request plus the auth service's. Case 7 "
            "shows owui-proxy with the cache off. The *floor* (`bench/floor.py`, not the "
            "product) is the least a Python proxy on aiohttp costs: aiohttp's low-level "
            "server, pooled upstream connections read by httptools, the email header set, "
            "an access line, nothing else. *owui-proxy before* (with `--before DIR`) is "
            "another checkout's proxy, measured in the same run.\n\n"
        )
        rows = r["case1"]["rows"]
        caddy = {row["conns"]: row["rps"] for row in rows if row["target"] == "Caddy reverse_proxy"}
        out.append(
            _table(
                [
                    "target",
                    "CPUs",
                    "conns",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    "vs Caddy reverse_proxy",
                    "server CPU µs/req",
                    "auth calls/req",
                    "chain CPU µs/req",
                    "other load",
                ],
                (
                    (
                        row["target"],
                        row["cpus"],
                        row["conns"],
                        _rps(row["rps"]),
                        _ms(row["p50_us"]),
                        _ms(row["p99_us"]),
                        row["errors"],
                        f"{row['rps'] / caddy[row['conns']]:.2f}x" if row["conns"] in caddy else "",
                        _cpu(row),
                        _auth_calls(row),
                        _chain(row),
                        _foreign(row),
                    )
                    for row in rows
                ),
            )
        )
    if r.get("case2"):
        rows = r["case2"]["rows"]
        means = case2_means(rows)
        direct = means.get("direct", 0) or 1
        out.append(f"\n## Case 2: real OpenWebUI, `GET {r['case2']['path']}` with a token\n\n")
        out.append(
            f"OpenWebUI (one uvicorn process) on the server CPU; {plan['owui_conns']} "
            "connections; rounds alternate the targets, each round starting one target further "
            "on. *On OpenWebUI's CPU* is the same CPU budget: the proxy's work comes out of "
            "OpenWebUI's CPU.\n\n"
        )
        out.append(
            _table(
                [
                    "target",
                    "round",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    "OpenWebUI CPU µs/req",
                    "proxy CPU µs/req",
                    "other load",
                ],
                (
                    (
                        row["target"],
                        row["round"],
                        _rps(row["rps"]),
                        _ms(row["p50_us"]),
                        _ms(row["p99_us"]),
                        row["errors"],
                        f"{row.get('cpu_us_per_req_owui', 0):,.0f}",
                        f"{row['cpu_us_per_req_proxy']:,.0f}"
                        if "cpu_us_per_req_proxy" in row
                        else "-",
                        _foreign(row),
                    )
                    for row in rows
                ),
            )
        )
        out.append("\n")
        out.append(
            _table(
                ["target", "mean req/s", "of direct"],
                ((k, _rps(v), f"{v / direct:.1%}") for k, v in means.items()),
            )
        )
    for case, title in (
        ("case3", "Case 3: SSE, upstream timestamp to client arrival, per event"),
        ("case4", "Case 4: WebSocket echo round trip (64-byte text, one at a time)"),
    ):
        data = r.get(case)
        if not data:
            continue
        out.append(f"\n## {title}\n\n")
        out.append(
            _table(
                ["path", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms"],
                (
                    (
                        label,
                        data[label]["n"],
                        _ms(data[label]["p50_us"]),
                        _ms(data[label]["p90_us"]),
                        _ms(data[label]["p99_us"]),
                        _ms(data[label]["mean_us"]),
                    )
                    for label in ("direct", "owui-proxy")
                ),
            )
        )
        cpu = data.get("proxy_cpu_us_per_event") or data.get("proxy_cpu_us_per_rtt")
        unit = "event" if "proxy_cpu_us_per_event" in data else "round trip"
        out.append(
            f"\nAdded by the proxy: p50 {data['added_p50_us'] / 1000:+.3f} ms, "
            f"p99 {data['added_p99_us'] / 1000:+.3f} ms"
            + (f"; proxy CPU {cpu:.0f} µs per {unit}" if cpu is not None else "")
            + ".\n"
        )
    data = r.get("case5")
    if data:
        out.append(f"\n## Case 5: upload of {data['bytes'] / (1 << 30):g} GiB\n\n")
        out.append(
            _table(
                ["path", "status", "seconds", "MiB/s"],
                (
                    (
                        label,
                        data[label]["status"],
                        f"{data[label]['seconds']:.2f}",
                        f"{data[label]['mib_per_s']:,.0f}",
                    )
                    for label in ("direct", "owui-proxy")
                    if label in data
                ),
            )
        )
        out.append(
            f"\nowui-proxy RSS after start {data['rss_before_kb'] / 1024:.1f} MiB, peak "
            f"(VmHWM) {data['peak_rss_kb'] / 1024:.1f} MiB: the upload itself grew it by "
            f"{(data['peak_rss_kb'] - data['rss_before_kb']) / 1024:.1f} MiB"
            + (
                f"; proxy CPU {data['proxy_cpu_s_per_gib']:.2f} s per GiB"
                if "proxy_cpu_s_per_gib" in data
                else ""
            )
            + ".\n"
        )
    data = r.get("case6")
    if data:
        out.append("\n## Case 6: provisioning\n\n")
        if "skipped" in data:
            out.append(f"Not measured: {data['skipped']}\n")
        else:
            out.append(data.get("description", "") + "\n\n")
            out.append(
                _table(
                    [
                        "path",
                        "users",
                        "modules",
                        "seconds",
                        "users/s",
                        "chats/s",
                        "failures",
                        "OpenWebUI CPU ms/user",
                        "proxy CPU ms/user",
                    ],
                    (
                        (
                            label,
                            data[label]["users"],
                            data[label]["modules"],
                            f"{data[label]['seconds']:.1f}",
                            f"{data[label]['users_per_s']:.2f}",
                            f"{data[label]['chats_per_s']:.2f}",
                            data[label]["failures"],
                            f"{data[label].get('cpu_ms_per_user_owui', 0):.1f}",
                            f"{data[label].get('cpu_ms_per_user_proxy', 0):.1f}",
                        )
                        for label in ("direct", "proxy")
                    ),
                )
            )
    if r.get("case7"):
        rows = r["case7"]["rows"]
        out.append("\n## Case 7: forward-auth decision cache off and on\n\n")
        out.append(
            "owui-proxy, 1 worker, against the static upstream; the fake auth service is "
            "nginx answering 200 with oauth2-proxy's identity headers (one access-log line "
            "per call, which is how calls are counted). A real auth service is slower, so "
            "the cache matters more than this shows.\n\n"
        )
        out.append(
            _table(
                [
                    "forward-auth",
                    "conns",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "requests",
                    "auth calls",
                    "proxy CPU µs/req",
                    "other load",
                ],
                (
                    (
                        row["target"],
                        row["conns"],
                        _rps(row["rps"]),
                        _ms(row["p50_us"]),
                        _ms(row["p99_us"]),
                        f"{row['requests']:,}",
                        f"{row['auth_calls']:,}",
                        _cpu(row),
                        _foreign(row),
                    )
                    for row in rows
                ),
            )
        )
        on = next((row for row in rows if row["target"].startswith("cache on")), None)
        off = next((row for row in rows if row["target"] == "cache off"), None)
        if on and off:
            out.append(
                f"\nWith the cache on, {on['requests'] - on['auth_calls']:,} of "
                f"{on['requests']:,} requests ({1 - on['auth_calls'] / on['requests']:.2%}) "
                f"made no auth call; throughput {on['rps'] / off['rps']:.2f}x of cache off.\n"
            )
    prof = r.get("profile")
    if prof:
        out.append("\n## Profile: owui-proxy (1 worker) under wrk -c32, py-spy\n\n")
        if "skipped" in prof:
            out.append(f"Not taken: {prof['skipped']}\n")
        else:
            out.append(
                f"{prof['samples']:,} samples of non-idle time. Own = time in the function "
                "itself; total = with what it calls.\n\n"
            )
            out.append(_table(["own %", "function"], ((p, n) for n, p in prof["own"])))
            out.append("\n")
            out.append(_table(["total %", "function"], ((p, n) for n, p in prof["inclusive"])))
    if r.get("failures"):
        out.append("\n## Failures\n\n")
        out.append(
            _table(
                ["step", "error"],
                ((k, " / ".join(v.splitlines())[:400]) for k, v in r["failures"].items()),
            )
        )
    return "".join(out)
