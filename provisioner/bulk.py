"""``owui-provision bulk``: many users, a few at a time, each one independent.

A user's failure never stops the others; the run ends with a summary naming every user
that failed. Rerunning the same CSV after a crash or Ctrl-C is the way to finish: users
already done come back ``existing``, with no duplicates (convergence, see provision.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from provisioner.course import Course
from provisioner.errors import ProvisionError
from provisioner.provision import ModuleResult, Provisioner
from provisioner.users import UserRow


@dataclass(frozen=True, slots=True)
class Failure:
    row: UserRow
    reason: str


async def run_bulk(
    provisioner: Provisioner,
    course: Course,
    rows: list[UserRow],
    *,
    concurrency: int,
    emit: Callable[[dict[str, object]], None],
    advance: Callable[[], None] = lambda: None,
) -> list[Failure]:
    """Provision every row, ``concurrency`` users at once; return the failures."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[Failure] = []

    def report(result: ModuleResult) -> None:
        emit(result.as_json())

    async def one(row: UserRow) -> None:
        async with gate:
            try:
                await provisioner.provision_user([course], row.email, row.name, on_result=report)
            except ProvisionError as exc:
                failures.append(Failure(row, str(exc)))
                emit({"email": row.email, "course": course.course.id, "error": str(exc)})
            finally:
                advance()

    await asyncio.gather(*(one(row) for row in rows))
    return sorted(failures, key=lambda failure: failure.row.line)


async def run_bulk_cli(
    provisioner: Provisioner,
    course: Course,
    rows: list[UserRow],
    *,
    concurrency: int,
    out: TextIO,
    err: TextIO,
    tty: bool,
) -> int:
    """Progress bar on a terminal, JSON lines otherwise; summary on ``err``; exit code."""
    if tty:
        console = Console(file=out)
        progress = Progress(
            TextColumn("provisioning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("users", total=len(rows))
            failures = await run_bulk(
                provisioner,
                course,
                rows,
                concurrency=concurrency,
                emit=lambda _: None,
                advance=lambda: progress.advance(task),
            )
    else:

        def emit(line: dict[str, object]) -> None:
            out.write(json.dumps(line) + "\n")
            out.flush()

        failures = await run_bulk(provisioner, course, rows, concurrency=concurrency, emit=emit)
    done = len(rows) - len(failures)
    err.write(f"bulk: {done} of {len(rows)} users provisioned, {len(failures)} failed\n")
    for failure in failures:
        err.write(f"  failed: {failure.row.email} (line {failure.row.line}): {failure.reason}\n")
    if failures:
        err.write("  fix the cause and run the same command again: finished users are not redone\n")
    return 1 if failures else 0
