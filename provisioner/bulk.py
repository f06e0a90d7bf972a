"""``owui-provision bulk``: many users, a few at a time, each one independent.

A user's failure never stops the others; the run ends with a summary naming every user
that failed. Rerunning the same roster after a crash, Ctrl-C or SIGTERM is the way to
finish: users already done come back ``existing``, with no duplicates (convergence, see
provision.py). Ctrl-C and SIGTERM both stop the run cleanly and print the same summary,
with the users not finished yet.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from provisioner.course import Course
from provisioner.errors import BadInput, ProvisionError
from provisioner.provision import ModuleResult, Provisioner
from provisioner.users import InvalidRow, Roster, UserRow


@dataclass(frozen=True, slots=True)
class Failure:
    row: UserRow
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one user's run ended: its module results, or why it failed."""

    row: UserRow
    results: tuple[ModuleResult, ...] = ()
    error: str | None = None


def courses_of(row: UserRow, courses: Sequence[Course]) -> list[Course]:
    """The courses ``row`` names, in the order given to the run; all of them if it names none."""
    if not row.courses:
        return list(courses)
    return [course for course in courses if course.course.id in row.courses]


async def run_bulk(
    provisioner: Provisioner,
    courses: Sequence[Course],
    rows: list[UserRow],
    *,
    concurrency: int,
    emit: Callable[[dict[str, object]], None],
    advance: Callable[[], None] = lambda: None,
    on_user: Callable[[Outcome], None] = lambda _: None,
) -> list[Failure]:
    """Provision every row, ``concurrency`` users at once; return the failures.

    ``concurrency`` bounds the users making calls: a user waiting out the settle pause
    (see provision.py) gives its place to the next one meanwhile.
    """
    gate = asyncio.Semaphore(concurrency)
    failures: list[Failure] = []

    def report(result: ModuleResult) -> None:
        emit(result.as_json())

    async def one(row: UserRow) -> None:
        async with gate:
            chosen = courses_of(row, courses)
            try:
                results = await provisioner.provision_user(
                    chosen, row.email, row.name, on_result=report, slot=gate
                )
            except ProvisionError as exc:
                failures.append(Failure(row, str(exc)))
                on_user(Outcome(row, error=str(exc)))
                emit(
                    {
                        "email": row.email,
                        "courses": [course.course.id for course in chosen],
                        "error": str(exc),
                    }
                )
            else:
                on_user(Outcome(row, tuple(results)))
            finally:
                advance()

    await asyncio.gather(*(one(row) for row in rows))
    return sorted(failures, key=lambda failure: failure.row.line)


REPORT_COLUMNS = ("line", "email", "courses", "result", "detail")


def _report_writer(path: Path) -> TextIO:
    try:
        return path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise BadInput(f"--report {path}: cannot write ({exc.strerror})") from exc


def check_report(path: Path) -> None:
    """Fail before anything runs if the report cannot be written (it is written at the end)."""
    with _report_writer(path) as handle:
        csv.writer(handle).writerow(REPORT_COLUMNS)


def write_report(
    path: Path,
    roster: Roster,
    outcomes: dict[int, Outcome],
    courses: Sequence[Course],
) -> None:
    """One CSV row per roster user, in roster order: provisioned, failed, invalid, not run."""
    entries: list[tuple[int, list[str]]] = []
    for row in roster.rows:
        ids = " ".join(course.course.id for course in courses_of(row, courses))
        outcome = outcomes.get(row.line)
        if outcome is None:
            result, detail = "not run", "interrupted before this user finished; run again"
        elif outcome.error is not None:
            result, detail = "failed", outcome.error
        else:
            created = sum(r.status == "created" for r in outcome.results)
            result = "provisioned"
            detail = f"{created} created, {len(outcome.results) - created} existing"
        entries.append((row.line, [str(row.line), row.email, ids, result, detail]))
    entries += [
        (bad.line, [str(bad.line), bad.email, "", "invalid", bad.reason]) for bad in roster.invalid
    ]
    with _report_writer(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(cells for _, cells in sorted(entries, key=lambda entry: entry[0]))


async def run_bulk_cli(
    provisioner: Provisioner,
    courses: Sequence[Course],
    roster: Roster,
    *,
    concurrency: int,
    out: TextIO,
    err: TextIO,
    tty: bool,
    report: Path | None = None,
) -> int:
    """Progress bar on a terminal, JSON lines otherwise; summary on ``err``; exit code.

    SIGINT and SIGTERM cancel the run; the summary then also counts the users not
    finished, and the exit code is 128 + the signal's number.
    """
    rows = roster.rows
    outcomes: dict[int, Outcome] = {}

    def record(outcome: Outcome) -> None:
        outcomes[outcome.row.line] = outcome

    stopped_by: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    progress: Progress | None = None
    if tty:
        progress = Progress(
            TextColumn("provisioning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=out),
        )
        task = progress.add_task("users", total=len(rows))
        bar = progress

        def emit(line: dict[str, object]) -> None:
            pass  # the bar shows progress; failures are in the summary

        def advance() -> None:
            bar.advance(task)

    else:

        def emit(line: dict[str, object]) -> None:
            out.write(json.dumps(line) + "\n")
            out.flush()

        def advance() -> None:
            pass

    run = asyncio.ensure_future(
        run_bulk(
            provisioner,
            courses,
            rows,
            concurrency=concurrency,
            emit=emit,
            advance=advance,
            on_user=record,
        )
    )

    def stop(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        run.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        if progress is not None:
            with progress:
                await run
        else:
            await run
    except asyncio.CancelledError:
        if not stopped_by:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    if report is not None:
        write_report(report, roster, outcomes, courses)
    failures = sorted(
        (o for o in outcomes.values() if o.error is not None), key=lambda o: o.row.line
    )
    done = sum(o.error is None for o in outcomes.values())
    summary = f"{done} of {len(rows)} users provisioned, {len(failures)} failed"
    if stopped_by:
        summary = (
            f"interrupted by {stopped_by[0].name}: {summary}, "
            f"{len(rows) - len(outcomes)} not finished"
        )
    if roster.invalid:
        summary += f", {len(roster.invalid)} invalid row(s) skipped"
    err.write(f"bulk: {summary}\n")
    for failure in failures:
        err.write(f"  failed: {failure.row.email} (line {failure.row.line}): {failure.error}\n")
    if report is not None:
        err.write(f"  per-user results: {report}\n")
    if stopped_by:
        err.write("  run the same command again to finish: finished users are not redone\n")
        return 128 + stopped_by[0].value
    if failures:
        err.write("  fix the cause and run the same command again: finished users are not redone\n")
    return 1 if failures else 0


def describe_skipped(source: str, invalid: list[InvalidRow]) -> str:
    """The stderr note naming the rows ``--skip-invalid`` set aside."""
    lines = [f"bulk: skipping {len(invalid)} invalid row(s) of {source}:"]
    lines += [f"  {source}:{bad.line}: {bad.reason}" for bad in invalid]
    return "\n".join(lines) + "\n"
