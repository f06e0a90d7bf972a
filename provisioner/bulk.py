"""``owui-provision bulk``: many users, a few at a time, each one independent.

A user's failure never stops the others; the run ends with a summary naming every user
that failed. Rerunning the same roster after a crash, Ctrl-C or SIGTERM is the way to
finish: users already done come back ``existing``, with no duplicates (convergence, see
provision.py). Ctrl-C and SIGTERM both stop the run cleanly and print the same summary,
with the users not finished yet; a run stopped before its first user (a refusal, a signal)
still writes a complete report, every user ``not run`` with the reason.

With ``--dry-run`` (:mod:`provisioner.preview`) the same roster, summary and report say
what a run would do, and nothing is changed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from provisioner.catalog import courses_for, no_course_reason
from provisioner.course import Course
from provisioner.errors import BadInput, ProvisionError
from provisioner.preview import ALREADY, LEFT_ALONE, NO_ACCOUNT, PlannedModule, Preview
from provisioner.provision import ModuleResult, Provisioner
from provisioner.slots import Slots
from provisioner.spreadsheet import spreadsheet_cell
from provisioner.stopping import until_stopped
from provisioner.users import InvalidRow, Roster, UserRow


@dataclass(frozen=True, slots=True)
class Failure:
    row: UserRow
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one user's run ended: its module results (or, in a dry run, what would be done),
    why it failed, or why the user's groups chose no course."""

    row: UserRow
    results: tuple[ModuleResult, ...] = ()
    planned: tuple[PlannedModule, ...] = ()
    error: str | None = None
    nothing: str | None = None


def courses_of(row: UserRow, courses: Sequence[Course]) -> list[Course]:
    """The courses for ``row``, in the order given to the run: those its groups choose (as
    for the webhook receiver), those it names, or all of them if it names none."""
    if row.groups is not None:
        return list(courses_for(courses, row.groups))
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
    preview: Preview | None = None,
) -> list[Failure]:
    """Provision every row (or, with ``preview``, say what would be done), ``concurrency``
    users at once; return the failures.

    ``concurrency`` bounds the users making calls: a user waiting out the settle pause
    (see provision.py) gives its place to the next one meanwhile, and gets one back before
    any user not yet started (:class:`provisioner.slots.Slots`). A user whose groups
    choose no course is not called for at all (so no account is made).
    """
    gate = Slots(concurrency)
    failures: list[Failure] = []

    def report(result: ModuleResult) -> None:
        emit(result.as_json())

    async def one(row: UserRow) -> None:
        async with gate.lease() as lease:
            chosen = courses_of(row, courses)
            try:
                if not chosen:
                    reason = no_course_reason(row.groups or ())
                    emit({"email": row.email, "courses": [], "nothing_to_provision": reason})
                    on_user(Outcome(row, nothing=reason))
                elif preview is not None:
                    planned = await preview.preview_user(chosen, row.email)
                    for line in planned:
                        emit(line.as_json())
                    on_user(Outcome(row, planned=tuple(planned)))
                else:
                    results = await provisioner.provision_user(
                        chosen, row.email, row.name, on_result=report, slot=lease
                    )
                    on_user(Outcome(row, tuple(results)))
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


NOT_FINISHED = "interrupted before this user finished; run again"


def _counted(planned: Sequence[PlannedModule]) -> str:
    """``2 create, 1 already there``: a dry run's actions for one user, counted."""
    counts = Counter(line.action for line in planned)
    return ", ".join(f"{count} {action}" for action, count in counts.items())


def _report_cells(outcome: Outcome | None, not_run: str) -> tuple[str, str]:
    """The report's ``result`` and ``detail`` for one user."""
    if outcome is None:
        return "not run", not_run
    if outcome.error is not None:
        return "failed", outcome.error
    if outcome.nothing is not None:
        return "nothing to provision", outcome.nothing
    if outcome.planned:
        detail = _counted(outcome.planned)
        if any(line.detail == NO_ACCOUNT for line in outcome.planned):
            detail += " (no account yet)"
        settled = all(line.action in (ALREADY, LEFT_ALONE) for line in outcome.planned)
        return ("provisioned already" if settled else "would provision"), detail
    created = sum(r.status == "created" for r in outcome.results)
    return "provisioned", f"{created} created, {len(outcome.results) - created} existing"


def write_report(
    path: Path,
    roster: Roster,
    outcomes: dict[int, Outcome],
    courses: Sequence[Course],
    *,
    not_run: str = NOT_FINISHED,
) -> None:
    """One CSV row per roster user, in roster order: provisioned (or, in a dry run, would
    provision / provisioned already), nothing to provision, failed, invalid, not run
    (``not_run`` says why)."""
    entries: list[tuple[int, list[str]]] = []
    for row in roster.rows:
        ids = " ".join(course.course.id for course in courses_of(row, courses))
        result, detail = _report_cells(outcomes.get(row.line), not_run)
        entries.append((row.line, [str(row.line), row.email, ids, result, detail]))
    entries += [
        (bad.line, [str(bad.line), bad.email, "", "invalid", bad.reason]) for bad in roster.invalid
    ]
    with _report_writer(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(
            [spreadsheet_cell(cell) for cell in cells]
            for _, cells in sorted(entries, key=lambda entry: entry[0])
        )


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
    preview: Preview | None = None,
) -> int:
    """Progress bar on a terminal, JSON lines otherwise; summary on ``err``; exit code.

    The run begins with the refusals that hold for everyone (:meth:`Provisioner.preflight`:
    onboarding, header mode, the release), which stop it before the first user. SIGINT and
    SIGTERM cancel the run; the summary then also counts the users not finished, and the
    exit code is 128 + the signal's number. The report is written however the run ends.
    """
    rows = roster.rows
    outcomes: dict[int, Outcome] = {}

    def record(outcome: Outcome) -> None:
        outcomes[outcome.row.line] = outcome

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

    async def everyone() -> list[Failure]:
        await provisioner.preflight()
        if preview is not None:
            await preview.prepare([row.email for row in rows])
        return await run_bulk(
            provisioner,
            courses,
            rows,
            concurrency=concurrency,
            emit=emit,
            advance=advance,
            on_user=record,
            preview=preview,
        )

    if progress is not None:
        with progress:
            stopped = await until_stopped(everyone())
    else:
        stopped = await until_stopped(everyone())
    await provisioner.settle()  # a sign-in Ctrl-C left running ends before the client closes
    stopped_by = [stopped] if stopped is not None else []

    if report is not None:
        write_report(report, roster, outcomes, courses)
    failures = sorted(
        (o for o in outcomes.values() if o.error is not None), key=lambda o: o.row.line
    )
    err.write(f"bulk: {_summary(roster, outcomes, stopped_by, dry_run=preview is not None)}\n")
    for failure in failures:
        err.write(f"  failed: {failure.row.email} (line {failure.row.line}): {failure.error}\n")
    if report is not None:
        err.write(f"  per-user results: {report}\n")
    if preview is not None:
        err.write("  dry run: nothing was changed in OpenWebUI\n")
    if stopped_by:
        err.write("  run the same command again to finish: finished users are not redone\n")
        return 128 + stopped_by[0].value
    if failures:
        err.write("  fix the cause and run the same command again: finished users are not redone\n")
    return 1 if failures else 0


def _summary(
    roster: Roster,
    outcomes: dict[int, Outcome],
    stopped_by: Sequence[signal.Signals],
    *,
    dry_run: bool,
) -> str:
    rows = roster.rows
    failed = sum(o.error is not None for o in outcomes.values())
    nothing = sum(o.nothing is not None for o in outcomes.values())
    done = len(outcomes) - failed - nothing
    if dry_run:
        actions = Counter(line.action for o in outcomes.values() for line in o.planned)
        no_account = sum(
            any(line.detail == NO_ACCOUNT for line in o.planned) for o in outcomes.values()
        )
        summary = (
            f"dry run: {done} of {len(rows)} users looked at ({no_account} with no account "
            f"yet), {failed} would fail"
        )
        if actions:
            summary += "; threads: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    else:
        summary = f"{done} of {len(rows)} users provisioned, {failed} failed"
    if nothing:
        summary += f", {nothing} with nothing to provision (their groups choose no course)"
    if stopped_by:
        summary = (
            f"interrupted by {stopped_by[0].name}: {summary}, "
            f"{len(rows) - len(outcomes)} not finished"
        )
    if roster.invalid:
        summary += f", {len(roster.invalid)} invalid row(s) skipped"
    return summary


def describe_skipped(source: str, invalid: list[InvalidRow]) -> str:
    """The stderr note naming the rows ``--skip-invalid`` set aside."""
    lines = [f"bulk: skipping {len(invalid)} invalid row(s) of {source}:"]
    lines += [f"  {source}:{bad.line}: {bad.reason}" for bad in invalid]
    return "\n".join(lines) + "\n"
