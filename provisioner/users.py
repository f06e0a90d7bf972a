"""The roster for ``owui-provision bulk``: CSV (any delimiter) or JSON Lines, one user a line.

Every problem of the file is reported in one pass, each with its line number, before
anything is provisioned (or, with ``skip_invalid``, the bad rows are set aside and named).
Emails go through the proxy's own identity rule (:func:`proxy.identity.validate_email`),
so an address the proxy would refuse is caught here, where it can be named by line.

Columns are found by name, case-insensitively: the email column, the name column(s)
(several are joined with a space, e.g. first and last name) and either the course column or
the group column. A course cell names one or more course ids (separated by spaces, commas,
semicolons or ``|``); the same user may also appear on several lines, one course each.
Without a course column every user gets the one course file given. A group cell names the
person's groups or classes (separated by commas, semicolons or ``|``: a group name may hold
spaces), and the groups choose the courses exactly as they do for the webhook receiver
(:func:`provisioner.catalog.courses_for`). Other columns are ignored, and named.

Rosters exported on Windows are often not UTF-8: the error then names the encoding the
bytes look like and the fix (or the file is read with the encoding given).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import BadInput, shown
from proxy.identity import OWS, InvalidIdentity, parse_groups, validate_email, validate_name

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
SNIFFED_DELIMITERS = ",;\t|"
# ASCII blanks only: a Unicode space inside a cell leaves an unknown course id, named.
_COURSE_SEPARATORS = re.compile(r"[ \t,;|]+")
_GROUP_SEPARATORS = re.compile(r"[,;|]")  # not blanks: "Year 9" is one group
# Column names are matched with ASCII's case mapping only: str.lower() would also map
# non-ASCII letters onto ASCII ones (KELVIN SIGN U+212A onto "k").
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user of the roster; ``courses`` are course ids, empty for "the one course given".

    ``groups`` is ``None`` unless the roster has a group column; then the groups choose the
    courses (``courses`` stays empty), as they do for the webhook receiver.
    """

    line: int
    email: str
    name: str | None
    courses: tuple[str, ...] = ()
    groups: tuple[str, ...] | None = None


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
    groups: str | None = None  # set: this column's groups choose the courses


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
    return column.strip(OWS).lstrip("\ufeff").translate(_ASCII_LOWER)


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

    def unreadable(exc: csv.Error) -> BadInput:
        # The csv module's own errors (a field over its 131072-character limit) are no
        # BadInput: said here, with the line, instead of escaping as a traceback.
        return BadInput(f"{source}:{max(reader.line_num, 1)}: not readable as CSV: {exc}")

    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise unreadable(exc) from exc
    if header is None:
        raise BadInput(f"{source}: empty file; expected a header line such as 'email,name'")
    keys = [_key(column) for column in header]

    def rows() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:
            raise unreadable(exc) from exc

    def records() -> Iterator[tuple[int, Record]]:
        for record in rows():
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
    """``(line, record)`` for each non-blank line.

    Lines end at LF (CRLF too) only: ``splitlines()`` would also cut at U+2028, which JSON
    allows inside a string, and at other controls, misnumbering every line after it.
    """
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip(OWS):
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
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


def _groups(value: Any, column: str) -> tuple[str, ...]:
    """A group cell (or JSON list) to the person's groups, validated as the proxy does."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        # A cell is a list: the spaces and tabs around each name are its syntax, as in a
        # groups header; the names of a JSON list are taken as they are.
        items = [item.strip(OWS) for item in _GROUP_SEPARATORS.split(value)]
    elif value is None:
        items = []
    else:
        raise _RowProblem(f"{column!r} must be text or a list of group names")
    try:
        return parse_groups(items)
    except InvalidIdentity as exc:
        raise _RowProblem(f"{column!r}: {exc.reason}") from exc


def _course_ids(value: Any, column: str, known: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        ids = [item.strip(OWS) for item in value if item.strip(OWS)]
    elif isinstance(value, str):
        ids = [item for item in _COURSE_SEPARATORS.split(value) if item]
    else:
        raise _RowProblem(f"{column!r} must be text or a list of course ids")
    if not ids:
        raise _RowProblem(f"no course in {column!r}")
    # Escaped: the cell may hold anything, line feeds included, and the message is printed.
    unknown = [shown(course_id, newlines=False) for course_id in ids if course_id not in known]
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
        if columns.groups is not None:
            wanted.append((columns.groups, " (from --group-column)"))
        missing = [
            f"{source}:1: no {column!r} column{hint}"
            for column, hint in wanted
            if _key(column) not in keys
        ]
        if missing:
            raise BadInput("\n".join(missing))
        if columns.groups is None and _key(columns.course) not in keys and len(course_ids) != 1:
            raise BadInput(
                f"{source}:1: no {columns.course!r} column, and {len(course_ids)} course files "
                "were given: name each user's courses in a column (--course-column NAME), "
                "let a column of groups or classes choose them (--group-column NAME), "
                "or give one course file for everyone"
            )
    if not name_columns and (json_lines or "name" in keys):
        name_columns = ("name",)
    # With a group column the groups choose the courses: a course column plays no part.
    chooser = columns.course if columns.groups is None else columns.groups
    used = {_key(columns.email), _key(chooser), *(_key(c) for c in name_columns)}
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
    name = " ".join(part.strip(OWS) for part in parts if part and part.strip(OWS)) or None
    email, name = checked_identity(raw_email, name)
    if columns.groups is not None:
        return UserRow(
            line, email, name, groups=_groups(record.get(_key(columns.groups)), columns.groups)
        )
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
    if row.groups is not None and first.groups is not None:  # one line per group or class
        groups = first.groups + tuple(g for g in row.groups if g not in first.groups)
        users[row.email] = UserRow(first.line, first.email, first.name or row.name, groups=groups)
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


def check_encoding(name: str) -> str:
    """A text encoding Python knows, as given to ``--encoding``; ``ValueError`` otherwise."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ValueError(
            f"{name!r} is not a known encoding (e.g. utf-8, cp1252, latin-1, utf-16)"
        ) from None


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> BadInput:
    """Name the encoding the bytes most likely are, where the first non-UTF-8 byte is, and
    the fix: Excel on Windows saves "CSV" in Windows-1252, "Unicode text" in UTF-16."""
    line = data.count(b"\n", 0, exc.start) + 1
    where = f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02X})"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        guess, option = "UTF-16 (Excel's 'Unicode Text')", "utf-16"
    elif any(0x80 <= byte <= 0x9F for byte in data):
        # Latin-1 has only control characters there; Windows-1252 has letters and quotes.
        guess, option = "Windows-1252 (Excel's 'CSV' on Windows)", "cp1252"
    else:
        guess, option = "Latin-1 (ISO-8859-1) or Windows-1252", "cp1252"
    return BadInput(
        f"{where}; it looks like {guess}: save it as UTF-8 (Excel: 'CSV UTF-8') or read it "
        f"as it is with --encoding {option}"
    )


def read_roster_text(path: Path, encoding: str | None = None) -> str:
    """The roster's text: UTF-8 (a byte order mark is dropped) unless ``encoding`` is given."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from exc
    chosen = encoding or "utf-8"
    try:
        text = data.decode("utf-8-sig" if codecs.lookup(chosen).name == "utf-8" else chosen)
    except UnicodeDecodeError as exc:
        if encoding is None:
            raise _not_utf8(path, data, exc) from exc
        line = data.count(b"\n", 0, exc.start) + 1
        raise BadInput(f"{path}:{line}: not {encoding} text ({exc.reason})") from exc
    return text.removeprefix("\ufeff")  # utf-16 and others keep the mark as a character


def load_roster(
    path: Path,
    *,
    course_ids: Sequence[str],
    columns: Columns = Columns(),
    delimiter: str | None = None,
    skip_invalid: bool = False,
    encoding: str | None = None,
) -> Roster:
    """Read a roster file: JSON Lines for ``.jsonl``/``.ndjson`` or a first ``{``, else CSV."""
    text = read_roster_text(path, encoding)
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
