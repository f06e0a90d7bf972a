"""Course files, round 3b: bad input is a clear error naming the right line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.course import load_course
from provisioner.errors import CourseFileError
from tests.provisioner.test_inputs import GOOD


@pytest.mark.parametrize(
    "nested",
    [
        pytest.param("x = " + "[" * 50_000 + "]" * 50_000, id="arrays"),
        pytest.param("x = " + "{a = " * 5_000 + "1" + "}" * 5_000, id="inline-tables"),
    ],
)
def test_nesting_deeper_than_the_parser_goes_is_a_clear_error(tmp_path: Path, nested: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(GOOD + nested + "\n", encoding="utf-8")
    with pytest.raises(CourseFileError) as info:
        load_course(path)
    assert info.value.problems == [f"{path}: not valid TOML: nested too deeply"]


def test_a_roster_line_nested_too_deeply_is_a_problem_of_that_line() -> None:
    from provisioner.errors import BadInput
    from provisioner.users import parse_roster

    text = '{"email": "ada@example.edu"}\n{"email": ' + "[" * 50_000 + "]" * 50_000 + "}\n"
    with pytest.raises(BadInput) as info:
        parse_roster(text, "r.jsonl", course_ids=["demo"], json_lines=True)
    assert "r.jsonl:2: not a JSON object" in str(info.value)
