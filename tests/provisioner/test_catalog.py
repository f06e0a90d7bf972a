"""Several course files: loading them together, and which courses a user's groups choose."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.catalog import courses_for, load_courses
from provisioner.course import parse_course
from provisioner.errors import CourseFileError
from tests.provisioner.conftest import course_named as course
from tests.provisioner.conftest import course_toml

COURSES = (
    course("everyone"),
    course("year-9", ["year-9"]),
    course("staff", ["staff", "admins"]),
    course("mixed", ["year-9", "staff"]),
)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        pytest.param([], ["everyone"], id="no groups: only the courses for everyone"),
        pytest.param(["year-9"], ["everyone", "year-9", "mixed"], id="one group"),
        pytest.param(["admins"], ["everyone", "staff"], id="any listed group counts"),
        pytest.param(
            ["staff", "year-9"], ["everyone", "year-9", "staff", "mixed"], id="several groups"
        ),
        pytest.param(["Year-9"], ["everyone"], id="groups match exactly, case included"),
        pytest.param(["year-10"], ["everyone"], id="an unknown group adds nothing"),
    ],
)
def test_courses_for_groups(groups: list[str], expected: list[str]) -> None:
    assert [c.course.id for c in courses_for(COURSES, groups)] == expected


def test_no_course_for_everyone_leaves_a_groupless_user_with_nothing() -> None:
    assert courses_for(COURSES[1:], []) == ()


def test_course_groups_are_validated() -> None:
    with pytest.raises(
        CourseFileError, match=r"c\.toml:6: course\.groups\[2\]: a group name contains a comma"
    ):
        parse_course(course_toml("c", ["fine", "a,b"]), "c.toml")
    # Compared exactly with the identity's groups: nothing trimmed, nothing folded.
    with pytest.raises(CourseFileError, match=r"starts or ends with a space or tab"):
        parse_course(course_toml("c", [" spaced "]), "c.toml")
    assert course("c", ["staff\u00a0"]).course.groups == ("staff\u00a0",)


def test_load_courses_reports_every_file_and_refuses_a_shared_id(tmp_path: Path) -> None:
    files = {
        "a.toml": course_toml("one"),
        "b.toml": course_toml("one", ["x"]),
        "c.toml": course_toml("Bad"),
        "d.toml": course_toml("two"),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(CourseFileError) as info:
        load_courses([tmp_path / name for name in files])
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{tmp_path / 'b.toml'}: course.id: 'one' is also the id of ")
    assert problems[1].startswith(f"{tmp_path / 'c.toml'}:3: course.id: must be lower-case")
    ok = load_courses([tmp_path / "a.toml", tmp_path / "d.toml"])
    assert [c.course.id for c in ok] == ["one", "two"]


def test_a_file_given_twice_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(course_toml("one"), encoding="utf-8")
    with pytest.raises(CourseFileError) as info:
        load_courses([path, tmp_path / "." / "a.toml"])
    assert info.value.problems == [f"{tmp_path / '.' / 'a.toml'}: given twice"]
