"""Several course files at once, and which of them a user gets.

A course file may name the identity groups it is for (``groups = [...]`` in ``[course]``);
a course without groups is for everyone. A user gets every course that is for everyone
plus every course naming at least one of the user's groups; a user without groups (a
signup event carries none) gets only the courses for everyone. Group names match exactly,
as the identity provider spells them: no case folding, so nothing two providers spell
differently can be confused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.course import Course, load_course
from provisioner.errors import CourseFileError


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """One course file as checked: its course, or the problems that keep it from loading."""

    path: Path
    course: Course | None
    problems: tuple[str, ...]


def check_courses(paths: Sequence[Path]) -> list[CheckedFile]:
    """Check every course file, each on its own and against the others.

    Course ids must differ between files: the id is part of every thread's identity, so two
    files with one id would fight over the same threads.
    """
    checked: list[CheckedFile] = []
    first: dict[str, Path] = {}
    for path in paths:
        try:
            course = load_course(path)
        except CourseFileError as exc:
            checked.append(CheckedFile(path, None, tuple(exc.problems)))
            continue
        if course.course.id in first:
            other = first[course.course.id]
            problem = (
                f"{path}: given twice"
                if other.resolve() == path.resolve()
                else f"{path}: course.id: '{course.course.id}' is also the id of {other}; "
                "each course file needs its own id"
            )
            checked.append(CheckedFile(path, None, (problem,)))
            continue
        first[course.course.id] = path
        checked.append(CheckedFile(path, course, ()))
    return checked


def load_courses(paths: Sequence[Path]) -> tuple[Course, ...]:
    """Load every course file; raise one :class:`CourseFileError` with every file's problems."""
    checked = check_courses(paths)
    problems = [problem for item in checked for problem in item.problems]
    if problems:
        raise CourseFileError(problems)
    return tuple(item.course for item in checked if item.course is not None)


def courses_for(courses: Sequence[Course], groups: Iterable[str]) -> tuple[Course, ...]:
    """The courses a user with ``groups`` gets, in the order they were given."""
    held = set(groups)
    return tuple(
        course
        for course in courses
        if not course.course.groups or held.intersection(course.course.groups)
    )


def no_course_reason(groups: Sequence[str]) -> str:
    """Why :func:`courses_for` chose nothing for ``groups`` (the receiver and ``bulk`` say it)."""
    if not groups:
        return "no course is for everyone, and this identity has no groups"
    return f"no course is for everyone or for any of the groups {', '.join(groups)}"
