"""Provisioning at school scale, against a real OpenWebUI 0.12.4: ``python -m bench.provisioning``.

One OpenWebUI process and one owui-proxy (its internal listener) on the server CPU; the
clients on the load CPU (see bench/run.py). In one run, side by side, each on users of its
own (new accounts, except the rerun):

- **floor**: a script making only the calls nothing can do without: sign-in, then per
  module create + archive (no look, no convergence, no exactly-once);
- **new users**: the provisioner (``Provisioner`` + ``run_bulk``, as ``owui-provision bulk``);
- **rerun**: the provisioner again over the users it just provisioned;
- **5 at once**: five provisioners (each its own client and ``run_bulk``) over one list of
  new users at the same time; afterwards every user is checked to hold exactly one archived
  thread per module and nothing else;
- **status**: ``owui-provision status`` (``Status`` + ``run_status``) over the users the
  provisioner made, with its lookup account; every row is checked to say present and
  archived.

Calls are counted in the client (an httpx request hook: every request sent, retries
included). Floor and provisioner alternate in rounds, so a growing database favours neither.
``--users`` is per row (default 3000); on a small machine pass fewer and read the printed
extrapolation.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import structlog

from bench import owui
from bench.configs import BENCH_EMAIL
from bench.procs import Procs, free_port, wait_http
from bench.provision import course_toml
from bench.run import Cpus
from provisioner.bulk import run_bulk
from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course, parse_course
from provisioner.directory import Directory
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.status import Status, StatusRow, in_roster_order, run_status
from provisioner.threads import MARKER_KEY, build_chat
from provisioner.users import UserRow

ROOT = Path(__file__).resolve().parent.parent
ROWS = ("floor", "new users", "rerun", "5 at once", "status")
LOOKUP_EMAIL = "lookup@bench.example.edu"  # status reads the user directory as it
RESULTS = Path(__file__).resolve().parent / "results"
PROXY_AUTH = "Proxy-Authorization"


def _shape(request: httpx.Request) -> str:
    """``METHOD /path`` with chat ids replaced, to count calls by kind."""
    parts = request.url.path.split("/")
    if len(parts) > 4 and parts[3] == "chats" and parts[4] not in ("new", "all", "list"):
        parts[4] = "{id}"
    return f"{request.method} {'/'.join(parts)}"


class Calls:
    """Counts every request an httpx client sends (the hook runs once per try)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    async def hook(self, request: httpx.Request) -> None:
        self.by_kind[_shape(request)] += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def rows(label: str, count: int) -> list[UserRow]:
    return [UserRow(n + 1, f"{label}-{n}@bench.example.edu", f"Student {n}") for n in range(count)]


async def floor(
    url: str, token: str, course: Course, users: Sequence[UserRow], concurrency: int
) -> dict[str, Any]:
    """Sign-in, then create + archive per module: the calls nothing can do without."""
    calls = Calls()
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(client: httpx.AsyncClient, row: UserRow) -> None:
        nonlocal failures
        async with gate:
            act_as = {"X-User-Email": row.email}
            try:
                signin = await client.post(
                    "/api/v1/auths/signin",
                    headers={**act_as, "X-User-Name": "Student"},
                    json={"email": "", "password": ""},
                )
                signin.raise_for_status()
                auth = {**act_as, "Authorization": f"Bearer {signin.json()['token']}"}
                for module in course.modules:
                    new = await client.post(
                        "/api/v1/chats/new",
                        headers=auth,
                        json={"chat": build_chat(course, module), "folder_id": None},
                    )
                    new.raise_for_status()
                    archived = await client.post(
                        f"/api/v1/chats/{new.json()['id']}/archive", headers=auth
                    )
                    archived.raise_for_status()
            except httpx.HTTPError:
                failures += 1

    async with httpx.AsyncClient(
        base_url=url,
        headers={PROXY_AUTH: f"Bearer {token}"},
        timeout=60,
        event_hooks={"request": [calls.hook]},
        trust_env=False,
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, row) for row in users))
        seconds = time.perf_counter() - started
    return _row(len(users), seconds, calls, failures)


async def provision(
    settings: Settings, token: str, course: Course, users: Sequence[UserRow], concurrency: int
) -> tuple[dict[str, Any], list[str]]:
    """One provisioner over ``users``; its row and the statuses it reported."""
    calls = Calls()
    statuses: list[str] = []
    async with make_http_client(settings) as http:
        http.event_hooks["request"].append(calls.hook)
        provisioner = Provisioner(OpenWebUI(Transport(settings, token, http)), settings)
        started = time.perf_counter()
        failures = await run_bulk(
            provisioner,
            [course],
            list(users),
            concurrency=concurrency,
            emit=lambda line: statuses.append(str(line.get("status", "error"))),
        )
        seconds = time.perf_counter() - started
    row = _row(len(users), seconds, calls, len(failures))
    row["failure_reasons"] = sorted({failure.reason[:300] for failure in failures})[:5]
    return row, statuses


async def status_row(
    settings: Settings, token: str, course: Course, users: Sequence[UserRow], concurrency: int
) -> dict[str, Any]:
    """``owui-provision status`` over provisioned users: its row, and rows that are wrong."""
    calls = Calls()
    found: dict[int, list[StatusRow]] = {}
    async with make_http_client(settings) as http:
        http.event_hooks["request"].append(calls.hook)
        api = OpenWebUI(Transport(settings, token, http))
        status = Status(Provisioner(api, settings), Directory(api, settings.lookup_email))
        started = time.perf_counter()
        await run_status(
            status, [course], list(users), concurrency=concurrency, found=found, nothing=[]
        )
        seconds = time.perf_counter() - started
    lines = in_roster_order(found)
    row = _row(len(users), seconds, calls, sum(line.state == "failed" for line in lines))
    wrong = [
        f"{line.email} {line.module}: {line.state} {line.where} {line.detail[:200]}"
        for line in lines
        if (line.state, line.where) != ("present", "archived")
    ]
    expected = len(users) * len(course.modules)
    if len(lines) != expected:  # a person or module with no row at all is wrong too
        wrong.insert(0, f"{len(lines)} rows for {expected} (people x modules)")
    row["wrong_end_states"] = wrong[:10]
    return row


async def together(
    settings: Settings, token: str, course: Course, users: Sequence[UserRow], concurrency: int
) -> dict[str, Any]:
    """Five provisioners over the same users at once: one row for all five."""
    started = time.perf_counter()
    runs = await asyncio.gather(
        *(provision(settings, token, course, users, concurrency) for _ in range(5))
    )
    seconds = time.perf_counter() - started
    calls = Calls()
    for row, _ in runs:
        calls.by_kind.update(row["calls_by_kind"])
    row = _row(len(users), seconds, calls, sum(row["failures"] for row, _ in runs))
    row["failure_reasons"] = sorted({r for run, _ in runs for r in run["failure_reasons"]})[:5]
    return row


def _row(users: int, seconds: float, calls: Calls, failures: int) -> dict[str, Any]:
    return {
        "users": users,
        "seconds": seconds,
        "users_per_s": users / seconds,
        "calls": calls.total,
        "calls_per_user": calls.total / users,
        "calls_by_kind": dict(calls.by_kind),
        "failures": failures,
    }


async def end_state(url: str, token: str, course: Course, users: Sequence[UserRow]) -> list[str]:
    """Every user holds exactly one archived thread per module and no other chat."""
    wrong: list[str] = []
    expected = sorted(module.id for module in course.modules)
    gate = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, row: UserRow) -> None:
        async with gate:
            act_as = {"X-User-Email": row.email}
            for _ in range(5):  # OpenWebUI answers 503 now and then under load (SQLite)
                signin = await client.post(
                    "/api/v1/auths/signin", headers=act_as, json={"email": "", "password": ""}
                )
                if signin.status_code == 200:
                    break
                await asyncio.sleep(0.5)
            if signin.status_code != 200:
                wrong.append(f"{row.email}: sign-in {signin.status_code} {signin.text[:200]}")
                return
            auth = {**act_as, "Authorization": f"Bearer {signin.json()['token']}"}
            answer = await client.get("/api/v1/chats/all", headers=auth)
            if answer.status_code != 200:
                wrong.append(f"{row.email}: chats/all {answer.status_code} {answer.text[:200]}")
                return
            chats = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
            found = sorted(
                (chat["chat"].get(MARKER_KEY, {}).get("module"), chat["archived"]) for chat in chats
            )
            if found != [(module, True) for module in expected]:
                wrong.append(f"{row.email}: {found}")

    async with httpx.AsyncClient(
        base_url=url, headers={PROXY_AUTH: f"Bearer {token}"}, timeout=60, trust_env=False
    ) as client:
        await asyncio.gather(*(one(client, row) for row in users))
    return wrong


def start_proxy(procs: Procs, upstream: str, tokens_file: Path, cpus: str | None) -> str:
    """owui-proxy with its internal listener; the public side is unused here."""
    internal = free_port()
    env = {
        "OWUI_PROXY_UPSTREAM": upstream,
        "OWUI_PROXY_LISTEN": f"127.0.0.1:{free_port()}",
        "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "OWUI_PROXY_AUTH": "forward",
        "OWUI_PROXY_FORWARD_AUTH_URL": f"http://127.0.0.1:{free_port()}/auth",
        "OWUI_PROXY_INTERNAL_LISTEN": f"127.0.0.1:{internal}",
        "OWUI_PROXY_INTERNAL_TOKENS_FILE": str(tokens_file),
        "OWUI_PROXY_LOG_LEVEL": "warning",
    }
    proc = procs.start("owui-proxy", [sys.executable, "-m", "proxy"], cpus=cpus, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{internal}"
    token = tokens_file.read_text().strip()
    wait_http(url + "/api/config", proc, headers={PROXY_AUTH: f"Bearer {token}"}, timeout=30)
    return url


async def measure(
    args: argparse.Namespace, url: str, token_file: Path, token: str
) -> dict[str, Any]:
    settings = Settings(url=url, token_file=token_file)  # type: ignore[call-arg]
    course = parse_course(course_toml(args.modules), "bench course")
    n, conc = args.users, args.concurrency
    half = n // 2
    results: dict[str, Any] = {}
    if args.status_only:
        log("new users (the people status is asked about)")
        results["new users"] = (await provision(settings, token, course, rows("new", n), conc))[0]
        log("status over the provisioned users")
        looking = Settings(url=url, token_file=token_file, lookup_email=LOOKUP_EMAIL)  # type: ignore[call-arg]
        results["status"] = await status_row(looking, token, course, rows("new", n), conc)
        return results
    log("floor and new users, alternating halves")
    floor_rows = [
        await floor(url, token, course, rows("floor-a", half), conc),
    ]
    new_rows = [(await provision(settings, token, course, rows("new-a", half), conc))[0]]
    floor_rows.append(await floor(url, token, course, rows("floor-b", n - half), conc))
    new_rows.append((await provision(settings, token, course, rows("new-b", n - half), conc))[0])
    results["floor"] = _merge(floor_rows)
    results["new users"] = _merge(new_rows)
    results["new users"]["failure_reasons"] = [r for p in new_rows for r in p["failure_reasons"]]
    log("rerun over the provisioned users")
    rerun, statuses = await provision(
        settings, token, course, rows("new-a", half) + rows("new-b", n - half), conc
    )
    rerun["statuses"] = dict(Counter(statuses))
    results["rerun"] = rerun
    log("status over the provisioned users")
    looking = Settings(url=url, token_file=token_file, lookup_email=LOOKUP_EMAIL)  # type: ignore[call-arg]
    results["status"] = await status_row(
        looking, token, course, rows("new-a", half) + rows("new-b", n - half), conc
    )
    log("5 provisioners at once over one list of new users")
    shared = rows("five", args.together_users or n)
    results["5 at once"] = await together(settings, token, course, shared, conc)
    log("checking the end state of every user")
    results["5 at once"]["wrong_end_states"] = (await end_state(url, token, course, shared))[:10]
    results["new users"]["wrong_end_states"] = (
        await end_state(url, token, course, rows("new-a", half) + rows("new-b", n - half))
    )[:10]
    return results


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    calls = Calls()
    for part in parts:
        calls.by_kind.update(part["calls_by_kind"])
    return _row(
        sum(p["users"] for p in parts),
        sum(p["seconds"] for p in parts),
        calls,
        sum(p["failures"] for p in parts),
    )


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    modules = args.modules
    floor_rate = results["floor"]["users_per_s"] if "floor" in results else None
    measured = [label for label in ROWS if label in results]
    lines = [
        f"# Provisioning bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.users} users x {modules} modules per row"
        + (f" ({args.together_users} in '5 at once')" if args.together_users else "")
        + f", {args.concurrency} users at once "
        "(each of the 5 provisioners too), through owui-proxy's internal listener to one "
        "OpenWebUI 0.12.4 process.",
        "",
        "| row | users | seconds | users/s | vs floor | calls/user | failures | wrong end states |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in measured:
        row = results[label]
        versus = (
            "-"
            if floor_rate is None or label == "status"
            else f"{row['users_per_s'] / floor_rate:.0%}"
        )
        lines.append(
            f"| {label} | {row['users']} | {row['seconds']:.1f} | {row['users_per_s']:.2f} | "
            f"{versus} | {row['calls_per_user']:.2f} | "
            f"{row['failures']} | {len(row.get('wrong_end_states', [])) or '-'} |"
        )
    lines += ["", "Calls by kind:", ""]
    for label in measured:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(results[label]["calls_by_kind"].items()))
        lines.append(f"- {label}: {kinds}")
    per_user = results["new users"]["seconds"] / results["new users"]["users"]
    lines += [
        "",
        f"Budget: new user at most {3 + 2 * modules} calls (3 + 2 per module), rerun at most 3.",
        f"3,000 new users x {modules} modules at this rate: {3000 * per_user:.0f} s "
        f"({3000 * per_user / 60:.1f} min).",
        f"Rerun statuses: {results.get('rerun', {}).get('statuses', '-')}",
        f"status of 3,000 people x {modules} modules at this rate: "
        f"{3000 * results['status']['seconds'] / results['status']['users']:.0f} s.",
    ]
    for label in [m for m in measured if m != "floor"]:
        for reason in results[label].get("failure_reasons", []):
            lines.append(f"- {label} failure: {reason}")
        for wrong in results[label].get("wrong_end_states", []):
            lines.append(f"- {label} wrong end state: {wrong}")
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provisioning", description=__doc__)
    parser.add_argument("--users", type=int, default=3000, help="users per row (default 3000)")
    parser.add_argument(
        "--together-users",
        type=int,
        default=0,
        help="users in the '5 at once' row (default: --users); that row does five times the work",
    )
    parser.add_argument(
        "--status-only",
        action="store_true",
        help="provision --users new people, then time status over them; no floor, rerun or "
        "'5 at once' row (the status row at school scale in under an hour)",
    )
    parser.add_argument("--modules", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="users at once (default 8)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    args = parser.parse_args(argv)
    # The provisioner logs one line per created chat; the bench only wants the numbers.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cpus = Cpus.detect()
    with tempfile.TemporaryDirectory(prefix="owui-bench-prov-") as tmp:
        work = Path(tmp)
        procs = Procs(work)
        try:
            log("starting OpenWebUI 0.12.4")
            webui = owui.start(procs, work, cpus.server)
            owui.admin_token(webui.url, BENCH_EMAIL)
            tokens_file = work / "service-tokens"
            tokens_file.write_text(secrets.token_urlsafe(48) + "\n")
            tokens_file.chmod(0o600)
            url = start_proxy(procs, webui.url, tokens_file, cpus.server)
            if cpus.load:
                os.sched_setaffinity(0, {int(cpus.load)})
            token = tokens_file.read_text().strip()
            results = asyncio.run(measure(args, url, tokens_file, token))
        finally:
            procs.stop_all()
    text = report(args, results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    (args.out / f"provisioning-{stamp}.md").write_text(text)
    (args.out / f"provisioning-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
