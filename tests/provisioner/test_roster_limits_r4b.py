"""A roster the csv module cannot read is a clear error naming the line, never a traceback.

Python's csv reader raises ``_csv.Error`` (no :class:`BadInput`) on a field longer than its
limit (131072 characters): a roster with one such cell, in the header or in any row, made
``bulk``, ``status`` and ``remove`` stop with a traceback instead of exit 2 and a line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import BadInput
from provisioner.users import parse_roster
from tests.provisioner.cli_helpers import run

HUGE = "x" * 200_000


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"email,course\nok@x.edu,demo\na@x.edu,{HUGE}\n", 3),
        (f"email,{HUGE}\nok@x.edu,demo\n", 1),
        (f'email,course\nok@x.edu,"{HUGE}\n', 2),
    ],
)
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_an_unreadable_csv_is_bad_input_naming_the_line(
    text: str, line: int, skip_invalid: bool
) -> None:
    with pytest.raises(BadInput, match=rf"^r\.csv:{line}: .*field larger than field limit"):
        parse_roster(text, "r.csv", course_ids=["demo"], skip_invalid=skip_invalid)


async def test_the_cli_says_so_and_exits_2(
    env: dict[str, str], course_file: Path, tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(f"email,course\nok@x.edu,demo\na@x.edu,{HUGE}\n", encoding="utf-8")

    result = await run(env, "bulk", str(course_file), str(roster))

    assert result.rc == 2, result.err
    assert "Traceback" not in result.err
    assert f"{roster}:3:" in result.err
