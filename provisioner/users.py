"""The users CSV for ``owui-provision bulk``: an ``email,name`` header, one user a line.

Every problem is reported at once with its line number, before anything is provisioned.
Emails go through the proxy's own identity rule (:func:`proxy.identity.validate_email`),
so an address the proxy would refuse is caught here, where it can be named by line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import BadInput
from proxy.errors import BadIdentity
from proxy.identity import validate_email, validate_name


@dataclass(frozen=True, slots=True)
class UserRow:
    line: int
    email: str
    name: str | None


def checked_identity(email: str, name: str | None) -> tuple[str, str | None]:
    """Validate one act-as identity; raise :class:`BadInput` saying what is wrong.

    Every provisioner input (webhook payloads, the command line, rosters) comes through
    here. A non-ASCII address is refused *before* it is lower-cased: some non-ASCII
    letters lower-case to ASCII ones (KELVIN SIGN U+212A becomes ``k``), so
    ``\u212aate@x.edu`` would otherwise be provisioned as ``kate@x.edu``, another person.
    """
    if not email.isascii():
        odd = next(char for char in email if not char.isascii())
        raise BadInput(
            f"email holds a non-ASCII character (U+{ord(odd):04X}), refused so that no "
            f"look-alike can fold into another address: {email!a}"
        )
    try:
        return validate_email(email), validate_name(name)
    except BadIdentity as exc:
        raise BadInput(f"{exc.reason}: {email!r}") from exc


def parse_users_csv(text: str, source: str) -> list[UserRow]:
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise BadInput(f"{source}: empty file; expected an 'email,name' header line")
    columns = [column.strip().lower().lstrip("\ufeff") for column in header]
    if "email" not in columns:
        raise BadInput(f"{source}:1: the header has no 'email' column (expected 'email,name')")
    unknown = [column for column in columns if column not in ("email", "name")]
    if unknown:
        raise BadInput(
            f"{source}:1: unknown column(s) {', '.join(unknown)} (expected 'email,name')"
        )
    email_at, name_at = (
        columns.index("email"),
        (columns.index("name") if "name" in columns else None),
    )
    rows: list[UserRow] = []
    first_line: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(columns):
            problems.append(
                f"{source}:{line}: expected {len(columns)} columns, found {len(record)}"
            )
            continue
        raw_name = record[name_at] if name_at is not None else None
        try:
            email, name = checked_identity(record[email_at], raw_name)
        except BadInput as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        if email in first_line:
            problems.append(f"{source}:{line}: {email} is already on line {first_line[email]}")
            continue
        first_line[email] = line
        rows.append(UserRow(line, email, name))
    if problems:
        raise BadInput("\n".join(problems))
    if not rows:
        raise BadInput(f"{source}: no users after the header line")
    return rows


def load_users_csv(path: Path) -> list[UserRow]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text") from exc
    return parse_users_csv(text, str(path))
