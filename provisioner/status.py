"""``owui-provision status``: who has which module thread, and what they did with it.

One row per person and module: whether the thread is there, where (under Archived Chats,
in the course folder, in another folder, among the person's chats), whether the person has
written in it, and whether its first message still matches the course file. Read exactly
as a real run's first look reads (:meth:`Provisioner.look`), for people who have an
account (:mod:`provisioner.directory`); nothing is written, and nobody's account is made.

The rows go out as JSON Lines or CSV; a summary per course and module, with counts and
percentages, goes to the terminal.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

from provisioner.bulk import courses_of
from provisioner.course import Course, Module
from provisioner.directory import Directory
from provisioner.errors import ProvisionError
from provisioner.folders import FolderPlan
from provisioner.provision import Look, Provisioner
from provisioner.spreadsheet import spreadsheet_cell
from provisioner.threads import Thread, plan
from provisioner.users import UserRow

State = Literal["present", "missing", "no account", "admin", "pending", "failed"]
Where = Literal["archived", "course folder", "other folder", "chats", ""]

COLUMNS = (
    "email",
    "course",
    "module",
    "state",
    "where",
    "replied",
    "first_message_changed",
    "threads",
    "chat_id",
    "detail",
)


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One person and module, as the person's OpenWebUI shows it.

    ``replied`` and ``first_message_changed`` are ``None`` when there is no thread;
    ``threads`` counts the course threads found (more than one only in the moment between
    a race and the run that settles it, or when the person wrote in a duplicate).
    """

    email: str
    course: str
    module: str
    state: State
    where: Where = ""
    replied: bool | None = None
    first_message_changed: bool | None = None
    threads: int = 0
    chat_id: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def cells(self) -> list[str]:
        values = asdict(self)
        return [_cell(values[column]) for column in COLUMNS]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return spreadsheet_cell(str(value))


def where_is(thread: Thread, folder: FolderPlan | None) -> Where:
    if thread.archived:
        return "archived"
    if thread.folder_id is None:
        return "chats"
    if folder is not None and thread.folder_id == folder.winner.id:
        return "course folder"
    return "other folder"


def module_row(
    email: str, course: Course, module: Module, found: Sequence[Thread], folder: FolderPlan | None
) -> StatusRow:
    """The row for one module from the threads a look found (pure)."""
    found_plan = plan(found, module.first_message)
    if found_plan is None:
        return StatusRow(email, course.course.id, module.id, "missing")
    thread = found_plan.winner
    return StatusRow(
        email,
        course.course.id,
        module.id,
        "present",
        where=where_is(thread, folder),
        replied=not thread.ours_with(module.first_message),
        first_message_changed=thread.first_content != module.first_message,
        threads=len(found),
        chat_id=thread.id,
    )


def rows_from_look(email: str, courses: Sequence[Course], look: Look) -> list[StatusRow]:
    return [
        module_row(
            email,
            course,
            module,
            look.threads[(course.course.id, module.id)],
            look.course_folder(course),
        )
        for course in courses
        for module in course.modules
    ]


def _for_everyone(
    email: str, courses: Sequence[Course], state: State, detail: str
) -> list[StatusRow]:
    return [
        StatusRow(email, c.course.id, m.id, state, detail=detail)
        for c in courses
        for m in c.modules
    ]


class Status:
    """Status rows through a :class:`Provisioner`'s reads and a :class:`Directory`."""

    def __init__(self, provisioner: Provisioner, directory: Directory) -> None:
        self._provisioner = provisioner
        self._directory = directory

    async def prepare(self, emails: Sequence[str]) -> None:
        await self._provisioner.preflight()
        await self._directory.prefetch(emails)

    async def person(self, courses: Sequence[Course], email: str) -> list[StatusRow]:
        """Every module of ``courses`` for ``email``; a person with no account, an admin or a
        pending account gets a row a module saying so (and is not signed in as)."""
        account = await self._directory.account(email)
        if account is None:
            return _for_everyone(email, courses, "no account", "has not signed in yet")
        if account.role == "admin":
            detail = "an admin: the internal listener never acts as admins, so no threads"
            return _for_everyone(email, courses, "admin", detail)
        if account.role == "pending":
            detail = "role pending: OpenWebUI refuses their chats until they are a user"
            return _for_everyone(email, courses, "pending", detail)
        session = await self._provisioner.api.signin(email, None)
        pairs = [(course, module) for course in courses for module in course.modules]
        return rows_from_look(email, courses, await self._provisioner.look(session, pairs))


async def run_status(
    status: Status,
    courses: Sequence[Course],
    rows: Sequence[UserRow],
    *,
    concurrency: int,
    found: dict[int, list[StatusRow]],
    nothing: list[UserRow],
    advance: Callable[[], None] = lambda: None,
) -> None:
    """Every person's rows into ``found`` (by roster line, so a stopped run keeps what it
    read), ``concurrency`` people at once; people whose groups choose no course into
    ``nothing``."""
    gate = asyncio.Semaphore(concurrency)
    await status.prepare([row.email for row in rows])

    async def one(row: UserRow) -> None:
        async with gate:
            chosen = courses_of(row, courses)
            if not chosen:  # their groups choose no course: no rows, and no calls
                nothing.append(row)
                return
            try:
                person = await status.person(chosen, row.email)
            except ProvisionError as exc:
                person = _for_everyone(row.email, chosen, "failed", str(exc))
            found[row.line] = person
            advance()

    await asyncio.gather(*(one(row) for row in rows))


def in_roster_order(found: dict[int, list[StatusRow]]) -> list[StatusRow]:
    return [status_row for line in sorted(found) for status_row in found[line]]


def write_rows(out: TextIO, rows: Sequence[StatusRow], form: Literal["csv", "jsonl"]) -> None:
    if form == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in rows)
    else:
        for row in rows:
            out.write(json.dumps(row.as_json()) + "\n")


def _share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.0f}%)" if total else "0"


def summary(rows: Sequence[StatusRow]) -> str:
    """A table per course and module: people, and how many are in each state, with the
    share of the module's people; present threads split into replied and changed."""
    by_module: dict[tuple[str, str], list[StatusRow]] = {}
    for row in rows:
        if row.course:
            by_module.setdefault((row.course, row.module), []).append(row)
    header = ("course/module", "people", "present", "replied", "changed", "missing", "no account")
    table = [header]
    for (course_id, module_id), group in by_module.items():
        total = len(group)
        present = [r for r in group if r.state == "present"]
        table.append(
            (
                f"{course_id}/{module_id}",
                str(total),
                _share(len(present), total),
                _share(sum(bool(r.replied) for r in present), total),
                _share(sum(bool(r.first_message_changed) for r in present), total),
                _share(sum(r.state == "missing" for r in group), total),
                _share(sum(r.state == "no account" for r in group), total),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    others = [r for r in rows if r.state in ("admin", "pending", "failed")]
    if others:
        people = {(r.email, r.state, r.detail) for r in others}
        lines += [f"  {state}: {email}: {detail}" for email, state, detail in sorted(people)]
    return "\n".join(lines)
