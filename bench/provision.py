"""Case 6: provisioning N users x M modules through the internal listener versus direct.

Uses the provisioner's own Python API (``Provisioner`` + ``run_bulk``, as
``owui-provision bulk`` does) with its base URL pointed either at the proxy's internal
listener or straight at OpenWebUI. Direct, the service token still travels in
``Proxy-Authorization`` and OpenWebUI ignores it, so both paths make exactly the same
API calls. Each path provisions its own users (so both create accounts and chats); the
paths alternate in rounds so that a growing database does not favour either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bench.procs import Proc, cpu_seconds
from provisioner.bulk import run_bulk
from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import parse_course
from provisioner.provision import Provisioner
from provisioner.settings import Settings, read_service_token
from provisioner.users import UserRow

if TYPE_CHECKING:
    from bench.run import Run


def course_toml(modules: int) -> str:
    parts = ['[course]\nid = "bench"\ntitle = "Bench course"\nmodel = "bench-model"\n']
    for i in range(1, modules + 1):
        parts.append(
            f'\n[[modules]]\nid = "m{i}"\ntitle = "Module {i}: Bench"\n'
            f'first_message = """Welcome to module {i}. **Bold** and a list:\n\n- one\n- two\n"""\n'
        )
    return "".join(parts)


async def _bulk(url: str, token_file: Path, rows: list[UserRow], modules: int, conc: int) -> dict:
    settings = Settings(url=url, token_file=token_file, concurrency=conc)  # type: ignore[call-arg]
    course = parse_course(course_toml(modules), "bench course")
    results: list[dict[str, object]] = []
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, read_service_token(token_file), http))
        start = time.perf_counter()
        failures = await run_bulk(
            Provisioner(api, settings), [course], rows, concurrency=conc, emit=results.append
        )
        seconds = time.perf_counter() - start
    created = sum(1 for r in results if r.get("status") == "created" and r.get("archived"))
    return {
        "seconds": seconds,
        "failures": len(failures),
        "failure_reasons": [f.reason for f in failures[:5]],
        "chats_created": created,
    }


def compare(
    run: Run,
    direct_url: str,
    internal_url: str | None,
    token_file: Path,
    watched: Mapping[str, Proc],
) -> dict[str, Any]:
    """Both paths, alternating; also the CPU time of each ``watched`` process per user."""
    if internal_url is None:
        return {"skipped": "the proxy has no internal listener"}
    # The provisioner logs one line per created chat; the bench only wants the numbers.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    plan = run.plan
    rounds = 2 if plan.prov_users >= 20 else 1
    per_round = plan.prov_users // rounds
    totals: dict[str, dict[str, Any]] = {
        label: {
            "users": 0,
            "modules": plan.prov_modules,
            "seconds": 0.0,
            "failures": 0,
            "chats_created": 0,
            "failure_reasons": [],
        }
        for label in ("direct", "proxy")
    }
    for rnd in range(rounds):
        for label, url in (("direct", direct_url), ("proxy", internal_url)):
            rows = [
                UserRow(i + 1, f"{label}-{rnd}-{i}@bench.example.edu", f"Student {label} {i}")
                for i in range(per_round)
            ]
            run.log(f"case 6: {label}, round {rnd + 1}: {per_round} users")
            pids = {name: proc.tree() for name, proc in watched.items()}
            before = {name: cpu_seconds(p) for name, p in pids.items()}
            out = asyncio.run(
                _bulk(url, token_file, rows, plan.prov_modules, plan.prov_concurrency)
            )
            total = totals[label]
            for name, p in pids.items():
                key = f"cpu_s_{name}"
                total[key] = total.get(key, 0.0) + cpu_seconds(p) - before[name]
            total["users"] += per_round
            total["seconds"] += out["seconds"]
            total["failures"] += out["failures"]
            total["chats_created"] += out["chats_created"]
            total["failure_reasons"] += out["failure_reasons"]
    for total in totals.values():
        total["users_per_s"] = total["users"] / total["seconds"]
        total["chats_per_s"] = total["users"] * total["modules"] / total["seconds"]
        for name in watched:
            total[f"cpu_ms_per_user_{name}"] = 1000 * total[f"cpu_s_{name}"] / total["users"]
    return {
        **totals,
        "ratio": totals["proxy"]["users_per_s"] / totals["direct"]["users_per_s"],
        "description": (
            f"{plan.prov_users} users x {plan.prov_modules} modules per path, "
            f"{plan.prov_concurrency} users at once, in {rounds} alternating round(s), with "
            "the provisioner's Python API (`Provisioner` + `run_bulk`, as `owui-provision "
            "bulk`); each user: sign-in (creates the account), one look (`GET /chats/all`), "
            "create + archive per module, one look after the settle pause; the config "
            "once a run. "
            "OpenWebUI and owui-proxy on the server CPU, the provisioner on the load CPU."
        ),
    }
