"""CSV cells an admin opens in a spreadsheet: shown as text, never run as a formula."""

from __future__ import annotations

# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection"); blanks before
# it are skipped by some spreadsheets, so they are looked past.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: a leading ``'`` when it would
    otherwise start a formula (roster emails such as ``=1+2@x.edu`` are valid addresses,
    and OpenWebUI's explanations end up in ``detail``). Every CSV an admin opens goes
    through here."""
    if text.startswith(_FORMULA_STARTS) or text.lstrip(" ").startswith(_FORMULA_STARTS):
        return "'" + text
    return text
