"""Course file errors, round 3b: the line reported is the line TOML counts, the message the
mistake made."""

from __future__ import annotations

import pytest

from provisioner.course import parse_course
from provisioner.errors import CourseFileError
from tests.provisioner.test_inputs import GOOD


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_inside_a_string_does_not_shift_the_line_reported(
    separator: str,
) -> None:
    """TOML ends lines at LF (CRLF) only; str.splitlines() also cuts at these."""
    text = GOOD.replace('title = "Welcome"', f'title = "Wel{separator}come"').replace(
        'id = "second"', 'id = "Second"'
    )
    with pytest.raises(CourseFileError) as info:
        parse_course(text, "c.toml")
    line = text.split("\n").index('id = "Second"') + 1
    assert info.value.problems == [
        f"c.toml:{line}: modules[2].id: must be lower-case letters, digits and '-' (e.g. 'intro-2')"
    ]


def test_crlf_line_ends_number_lines_as_lf_does() -> None:
    text = GOOD.replace('id = "second"', 'id = "Second"')
    with pytest.raises(CourseFileError) as lf:
        parse_course(text, "c.toml")
    with pytest.raises(CourseFileError) as crlf:
        parse_course(text.replace("\n", "\r\n"), "c.toml")
    assert crlf.value.problems == lf.value.problems


def test_a_file_whose_only_module_is_invalid_is_not_told_it_has_no_module() -> None:
    text = GOOD.split('\n[[modules]]\nid = "second"')[0].replace('id = "intro"', 'id = "Intro"')
    with pytest.raises(CourseFileError) as info:
        parse_course(text, "c.toml")
    assert info.value.problems == [
        "c.toml:7: modules[1].id: must be lower-case letters, digits and '-' (e.g. 'intro-2')"
    ]
