"""Course files, identities and settings: every error names where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.catalog import load_courses
from provisioner.course import load_course, parse_course
from provisioner.errors import BadInput, ConfigError, CourseFileError
from provisioner.settings import load_settings, read_service_token
from provisioner.users import checked_identity
from tests.provisioner.conftest import EXAMPLE

GOOD = """\
[course]
id = "welcome"
title = "Welcome"
model = "m"

[[modules]]
id = "intro"
title = "One"
first_message = \"\"\"
Hello!
id = "not a key, just text"
\"\"\"

[[modules]]
id = "second"
title = "Two"
first_message = "Hi"
"""


def test_the_example_course_is_valid() -> None:
    course = load_course(EXAMPLE)
    assert course.course.id == "welcome"
    assert [m.id for m in course.modules] == ["intro", "prompting", "checking"]


def test_every_example_course_loads_together() -> None:
    courses = load_courses(sorted(EXAMPLE.parent.glob("*.toml")))
    assert {c.course.id: c.course.groups for c in courses} == {
        "welcome": (),
        "year-9-science": ("year-9",),
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'id = "welcome"',
            'id = "Welcome!"',
            "c.toml:2: course.id: must be lower-case",
            id="bad course id",
        ),
        pytest.param(
            'model = "m"\n',
            "",
            "c.toml:1: course.model: required, not set",
            id="missing key points at its table",
        ),
        pytest.param(
            'id = "second"',
            'id = "intro"',
            "c.toml:15: modules[2].id: module id 'intro' is already used by modules[1]",
            id="duplicate module ids",
        ),
        pytest.param(
            'id = "second"',
            'id = "Second"',
            "c.toml:15: modules[2].id: must be lower-case",
            id="second module, not the first",
        ),
        pytest.param(
            'title = "Two"', 'titel = "Two"', "c.toml:16: modules[2].titel: unknown key", id="typo"
        ),
        pytest.param(
            'first_message = "Hi"',
            'first_message = "   "',
            "c.toml:17: modules[2].first_message: must not be blank",
            id="blank message",
        ),
        pytest.param(
            'title = "One"',
            "title = 1",
            "c.toml:8: modules[1].title: must be text in quotes",
            id="wrong type",
        ),
        pytest.param("[course]", "[cours]", "c.toml:1: cours: unknown key", id="unknown table"),
        pytest.param(
            "[course]",
            "[[course]]",
            "c.toml:1: course: written as [[course]]: the course is one [course] table",
            id="[[course]] instead of [course]",
        ),
        pytest.param(
            'model = "m"',
            'model = "m"\ngroups = "staff"',
            'c.toml:5: course.groups: must be a list (e.g. groups = ["year-9", "staff"])',
            id="groups not a list",
        ),
        pytest.param('title = "Two"', 'title = "Two', "c.toml: not valid TOML", id="broken TOML"),
    ],
)
def test_course_errors_name_file_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(CourseFileError) as info:
        parse_course(GOOD.replace(old, new, 1), "c.toml")
    assert any(problem.startswith(expected) for problem in info.value.problems), info.value.problems


def test_no_modules_is_an_error() -> None:
    text = GOOD.split("[[modules]]")[0]
    with pytest.raises(CourseFileError, match="at least one"):
        parse_course(text, "c.toml")


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace('id = "welcome"', 'id = "W"').replace('id = "second"', 'id = "S"')
    with pytest.raises(CourseFileError) as info:
        parse_course(text, "c.toml")
    assert len(info.value.problems) == 2


def test_duplicate_ids_are_reported_with_the_other_problems_in_line_order() -> None:
    """A repeated id is not held back until every other module is valid."""
    text = GOOD.replace('id = "second"', 'id = "intro"').replace('title = "Two"', 'titel = "Two"')
    text = text.replace('id = "welcome"', 'id = "W"')
    with pytest.raises(CourseFileError) as info:
        parse_course(text, "c.toml")
    assert info.value.problems == [
        "c.toml:2: course.id: must be lower-case letters, digits and '-' (e.g. 'intro-2')",
        "c.toml:14: modules[2].title: required, not set",
        "c.toml:15: modules[2].id: module id 'intro' is already used by modules[1]",
        "c.toml:16: modules[2].titel: unknown key (a typo?)",
    ]


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        pytest.param(
            "[[course.modules]]",
            "c.toml:6: course.modules: modules belong after [course], not in it: "
            "each module is its own [[modules]] table",
            id="modules inside [course]",
        ),
        pytest.param(
            "[modules]",
            "c.toml:6: modules: written as [modules]: each module is its own [[modules]] table",
            id="[modules] instead of [[modules]]",
        ),
        pytest.param(
            "[[module]]",
            "c.toml:6: module: unknown table (a typo of [[modules]]?): "
            "each module is its own [[modules]] table",
            id="[[module]]",
        ),
        pytest.param(
            "[[Modules]]",
            "c.toml:6: Modules: unknown table (a typo of [[modules]]?): "
            "each module is its own [[modules]] table",
            id="[[Modules]]",
        ),
        pytest.param(
            "[[lessons]]",
            "c.toml:6: lessons: unknown table (a typo of [[modules]]?): "
            "each module is its own [[modules]] table",
            id="another name holding a module",
        ),
    ],
)
def test_modules_written_elsewhere_are_one_plain_sentence(mistake: str, expected: str) -> None:
    """No "at least one module" on top: the modules exist, only in the wrong place."""
    before, first_module, _ = GOOD.split("[[modules]]")
    text = before + mistake + first_module
    with pytest.raises(CourseFileError) as info:
        parse_course(text, "c.toml")
    assert info.value.problems == [expected + " (double brackets), one per thread"]


def test_a_course_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows editors save UTF-8 with a BOM; TOML alone calls it an invalid statement."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_course(path).course.id == "welcome"


def test_a_missing_course_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CourseFileError, match=r"nope\.toml: cannot read"):
        load_course(tmp_path / "nope.toml")


def test_settings_problems_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "TOKEN_FILE"):
        monkeypatch.delenv(f"OWUI_PROVISION_{name}", raising=False)
    monkeypatch.setenv("OWUI_PROVISION_EMAIL_HEADER", "bad header")
    monkeypatch.setenv("OWUI_PROVISION_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("OWUI_PROVISION_MAX_ATEMPTS", "3")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    for expected in (
        "OWUI_PROVISION_MAX_ATEMPTS: unknown setting; did you mean OWUI_PROVISION_MAX_ATTEMPTS?",
        "OWUI_PROVISION_URL: required",
        "OWUI_PROVISION_TOKEN_FILE: required",
        "OWUI_PROVISION_EMAIL_HEADER: 'bad header' is not a valid HTTP header name",
        "OWUI_PROVISION_MAX_ATTEMPTS:",
    ):
        assert expected in message


def test_settings_accept_a_unix_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OWUI_PROVISION_URL", "unix:/run/owui/internal.sock")
    monkeypatch.setenv("OWUI_PROVISION_TOKEN_FILE", str(tmp_path / "t"))
    assert load_settings().url == "unix:/run/owui/internal.sock"


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        pytest.param("# c\n\n" + "t" * 40 + "\n", 0o600, "t" * 40, id="first token line"),
        pytest.param("t" * 40, 0o644, "world-readable", id="world-readable"),
        pytest.param("short\n", 0o600, "shorter than 32", id="too short"),
        pytest.param("# only a comment\n", 0o600, "holds no token", id="empty"),
    ],
)
def test_service_token_file(tmp_path: Path, content: str, mode: int, expected: str) -> None:
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    if expected == "t" * 40:
        assert read_service_token(path) == expected
    else:
        with pytest.raises(ConfigError, match=expected) as info:
            read_service_token(path)
        assert "t" * 40 not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Kate@School.EDU", "kate@school.edu", id="ASCII is lower-cased"),
        pytest.param("\u212aate@school.edu", "U+212A", id="KELVIN SIGN would fold to k"),
        pytest.param("kat\u0130e@school.edu", "U+0130", id="dotted capital I"),
        pytest.param("ada@\u017fchool.edu", "U+017F", id="long s would fold to s"),
        pytest.param("ada@school.edu\u00a0", "U+00A0", id="no-break space would be stripped"),
        pytest.param("\uff41da@school.edu", "U+FF41", id="fullwidth letter"),
        pytest.param("ad\u0430@school.edu", "U+0430", id="Cyrillic look-alike"),
    ],
)
def test_non_ascii_emails_are_refused_before_case_folding(raw: str, expected: str) -> None:
    if "@" in expected:
        assert checked_identity(raw, None) == (expected, None)
        return
    with pytest.raises(BadInput) as info:
        checked_identity(raw, None)
    message = str(info.value)
    assert f"non-ASCII character ({expected})" in message
    assert ascii(raw) in message  # escaped, so the operator sees the odd character


def test_names_may_be_non_ascii() -> None:
    assert checked_identity("zoe@school.edu", "Zoë Ångström") == ("zoe@school.edu", "Zoë Ångström")
