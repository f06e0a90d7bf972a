"""The roster for ``owui-provision bulk``: CSV (any delimiter) or JSON Lines, one user a line.

Every problem of the file is reported in one pass, each with its line number, before
anything is provisioned (or, with ``skip_invalid``, the bad rows are set aside and named).
Emails go through the proxy's own identity rule (:func:`proxy.identity.validate_email`),
so an address the proxy would refuse is caught here, where it can be named by line.

Columns are found by name, case-insensitively: the email column, the name column(s)
(several are joined with a space, e.g. first and last name) and the course column. A
course cell names one or more course ids (separated by spaces, commas, semicolons or
``|``); the same user may also appear on several lines, one course each. Without a course
column every user gets the one course file given. Other columns are ignored, and named.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import BadInput
from proxy.identity import InvalidIdentity, validate_email, validate_name

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
SNIFFED_DELIMITERS = ",;\t|"
_COURSE_SEPARATORS = re.compile(r"[\s,;|]+")


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user of the roster; ``courses`` are course ids, empty for "the one course given"."""

    line: int
    email: str
    name: str | None
    courses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row set aside by ``skip_invalid``: its line, the email as written, what is wrong."""

    line: int
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns (or JSON keys) hold what; names match case-insensitively."""

    email: str = "email"
    name: tuple[str, ...] = ()  # empty: the "name" column if there is one
    course: str = "course"


@dataclass(slots=True)
class Roster:
    rows: list[UserRow]
    invalid: list[InvalidRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def checked_identity(email: str, name: str | None) -> tuple[str, str | None]:
    """Validate one act-as identity; raise :class:`BadInput` saying what is wrong.

    Every provisioner input (webhook payloads, the command line, rosters) comes through
    here. A non-ASCII address is refused *before* it is lower-cased: some non-ASCII
    letters lower-case to ASCII ones (KELVIN SIGN U+212A becomes ``k``), so
    ``\\u212aate@x.edu`` would otherwise be provisioned as ``kate@x.edu``, another person.
    """
    if not email.isascii():
        odd = next(char for char in email if not char.isascii())
        raise BadInput(
            f"email holds a non-ASCII character (U+{ord(odd):04X}), refused so that no "
            f"look-alike can fold into another address: {email!a}"
        )
    try:
        return validate_email(email), validate_name(name)
    except InvalidIdentity as exc:
        raise BadInput(f"{exc.reason}: {email!r}") from exc


def _key(column: str) -> str:
    return column.strip().lstrip("\ufeff").lower()


class _RowProblem(Exception):
    """One row is unusable; ``str()`` says why (the caller adds file and line)."""


Record = dict[str, Any] | str  # the row's values by column key, or what makes it unreadable


def _sniff(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=SNIFFED_DELIMITERS).delimiter
    except csv.Error:  # a single column: nothing to sniff
        return ","


def _records_csv(
    text: str, source: str, delimiter: str
) -> tuple[list[str], Iterator[tuple[int, Record]]]:
    """The header's column keys, then ``(line, record)`` for each non-blank data row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise BadInput(f"{source}: empty file; expected a header line such as 'email,name'")
    keys = [_key(column) for column in header]

    def records() -> Iterator[tuple[int, Record]]:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(keys):
                yield (
                    reader.line_num,
                    (
                        f"expected {len(keys)} columns, found {len(record)} "
                        f"(is {delimiter!r} the delimiter? see --delimiter)"
                    ),
                )
                continue
            yield reader.line_num, dict(zip(keys, record, strict=True))

    return keys, records()


def _records_json_lines(text: str) -> Iterator[tuple[int, Record]]:
    """``(line, record)`` for each non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            yield number, "not a JSON object (JSON Lines: one object a line)"
            continue
        yield number, {_key(str(key)): item for key, item in value.items()}


def _text(record: dict[str, Any], column: str) -> str | None:
    value = record.get(_key(column))
    if value is None or isinstance(value, str):
        return value
    raise _RowProblem(f"{column!r} must be text")


def _course_ids(value: Any, column: str, known: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        ids = [item.strip() for item in value if item.strip()]
    elif isinstance(value, str):
        ids = [item for item in _COURSE_SEPARATORS.split(value) if item]
    else:
        raise _RowProblem(f"{column!r} must be text or a list of course ids")
    if not ids:
        raise _RowProblem(f"no course in {column!r}")
    unknown = [course_id for course_id in ids if course_id not in known]
    if unknown:
        raise _RowProblem(
            f"unknown course {', '.join(unknown)} in {column!r} "
            f"(the course files given are: {', '.join(known)})"
        )
    return tuple(dict.fromkeys(ids))


def parse_roster(
    text: str,
    source: str,
    *,
    course_ids: Sequence[str],
    columns: Columns = Columns(),
    delimiter: str | None = None,
    json_lines: bool = False,
    skip_invalid: bool = False,
) -> Roster:
    """Parse and validate a roster; raise :class:`BadInput` listing every problem by line.

    ``course_ids`` are the courses of the run; a roster without a course column is only
    accepted with exactly one. With ``skip_invalid``, bad rows are returned in
    ``invalid`` instead (problems with the file as a whole still raise).
    """
    name_columns = columns.name
    keys: list[str] = []
    records: Iterator[tuple[int, Record]]
    if json_lines:
        records = _records_json_lines(text)
    else:
        keys, records = _records_csv(text, source, delimiter or _sniff(text))
        wanted = [(columns.email, " (say which holds the emails: --email-column NAME)")]
        wanted += [(column, " (from --name-column)") for column in name_columns]
        missing = [
            f"{source}:1: no {column!r} column{hint}"
            for column, hint in wanted
            if _key(column) not in keys
        ]
        if missing:
            raise BadInput("\n".join(missing))
        if _key(columns.course) not in keys and len(course_ids) != 1:
            raise BadInput(
                f"{source}:1: no {columns.course!r} column, and {len(course_ids)} course files "
                "were given: name each user's courses in a column (--course-column NAME), "
                "or give one course file for everyone"
            )
    if not name_columns and (json_lines or "name" in keys):
        name_columns = ("name",)
    used = {_key(columns.email), _key(columns.course), *(_key(c) for c in name_columns)}
    ignored = [column for column in keys if column and column not in used]

    problems: list[str] = []
    invalid: list[InvalidRow] = []
    users: dict[str, UserRow] = {}
    pairs: dict[tuple[str, str], int] = {}  # (email, course id) -> the line naming it first
    for line, record in records:
        if isinstance(record, str):
            reason = record
        else:
            try:
                _merge(users, pairs, _row(record, line, columns, name_columns, course_ids))
                continue
            except (_RowProblem, BadInput) as exc:
                reason = str(exc)
        problems.append(f"{source}:{line}: {reason}")
        email = record.get(_key(columns.email)) if isinstance(record, dict) else None
        invalid.append(InvalidRow(line, email if isinstance(email, str) else "", reason))
    if problems and not skip_invalid:
        raise BadInput("\n".join(problems))
    rows = sorted(users.values(), key=lambda row: row.line)
    if not rows:
        raise BadInput(
            f"{source}: no valid users" if invalid else f"{source}: no users after the header"
        )
    return Roster(rows, invalid, ignored)


def _row(
    record: dict[str, Any],
    line: int,
    columns: Columns,
    name_columns: Sequence[str],
    course_ids: Sequence[str],
) -> UserRow:
    raw_email = _text(record, columns.email)
    if raw_email is None:
        raise _RowProblem(f"no {columns.email!r}")
    parts = [_text(record, column) for column in name_columns]
    name = " ".join(part.strip() for part in parts if part and part.strip()) or None
    email, name = checked_identity(raw_email, name)
    courses: tuple[str, ...] = ()
    if _key(columns.course) in record:
        courses = _course_ids(record[_key(columns.course)], columns.course, course_ids)
    elif len(course_ids) != 1:
        raise _RowProblem(f"no {columns.course!r}, and several course files were given")
    return UserRow(line, email, name, courses)


def _merge(users: dict[str, UserRow], pairs: dict[tuple[str, str], int], row: UserRow) -> None:
    """Fold a row into ``users``: the same user may come back for other courses only."""
    first = users.get(row.email)
    if first is None:
        for course_id in row.courses:
            pairs[(row.email, course_id)] = row.line
        users[row.email] = row
        return
    if not row.courses or not first.courses:
        raise _RowProblem(f"{row.email} is already on line {first.line}")
    repeated = [course_id for course_id in row.courses if (row.email, course_id) in pairs]
    if repeated:
        where = pairs[(row.email, repeated[0])]
        raise _RowProblem(f"{row.email} already has {', '.join(repeated)} on line {where}")
    for course_id in row.courses:
        pairs[(row.email, course_id)] = row.line
    users[row.email] = UserRow(
        first.line, first.email, first.name or row.name, first.courses + row.courses
    )


def load_roster(
    path: Path,
    *,
    course_ids: Sequence[str],
    columns: Columns = Columns(),
    delimiter: str | None = None,
    skip_invalid: bool = False,
) -> Roster:
    """Read a roster file: JSON Lines for ``.jsonl``/``.ndjson`` or a first ``{``, else CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text") from exc
    json_lines = path.suffix.lower() in JSON_LINES_SUFFIXES or text.lstrip().startswith("{")
    return parse_roster(
        text,
        str(path),
        course_ids=course_ids,
        columns=columns,
        delimiter=delimiter,
        json_lines=json_lines,
        skip_invalid=skip_invalid,
    )
