"""The bulk roster: CSV with any delimiter or JSON Lines, column mapping, courses, line numbers;
and the terminal view of a bulk run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from provisioner.bulk import courses_of, run_bulk_cli
from provisioner.catalog import courses_for
from provisioner.course import Course
from provisioner.errors import BadInput
from provisioner.provision import Provisioner
from provisioner.users import Columns, Roster, UserRow, load_roster, parse_roster
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import course_named, course_toml
from tests.provisioner.fake_owui import FakeOpenWebUI

ONE = ("demo",)
TWO = ("demo", "staff")


def parse(text: str, course_ids: tuple[str, ...] = ONE, **options: object) -> Roster:
    return parse_roster(text, "u.csv", course_ids=course_ids, **options)  # type: ignore[arg-type]


def rows(roster: Roster) -> list[tuple[int, str, str | None, tuple[str, ...]]]:
    return [(r.line, r.email, r.name, r.courses) for r in roster.rows]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "email,name\nada@example.edu,Ada\nnot-an-email,Bob\n",
            ["u.csv:3: email is not a plausible address: 'not-an-email'"],
            id="bad email",
        ),
        pytest.param(
            "email,name\nada@example.edu,Ada\nADA@example.edu,Ada\n",
            ["u.csv:3: ada@example.edu is already on line 2"],
            id="duplicate, case-insensitively",
        ),
        pytest.param(
            "mail,name\nada@example.edu,Ada\n",
            ["u.csv:1: no 'email' column (say which holds the emails: --email-column NAME)"],
            id="no email column",
        ),
        pytest.param(
            "email,name\nada@example.edu,Ada,extra\n",
            ["u.csv:2: expected 2 columns, found 3 (is ',' the delimiter? see --delimiter)"],
            id="ragged row",
        ),
        pytest.param(
            "email,name\nkate@school.edu,Kate\n\u212aate@school.edu,K\n",
            ["u.csv:3: email holds a non-ASCII character (U+212A)"],
            id="non-ASCII email",
        ),
        pytest.param(
            "email,name\n1,a\n\nbad@,b\nok@example.edu,c\nok@example.edu,d\n",
            [
                "u.csv:2: email is not a plausible address: '1'",
                "u.csv:4: email is not a plausible address: 'bad@'",
                "u.csv:6: ok@example.edu is already on line 5",
            ],
            id="every problem in one pass, blank lines counted",
        ),
        pytest.param("email,name\n", ["u.csv: no users after the header"], id="header only"),
        pytest.param("", ["u.csv: empty file"], id="empty"),
    ],
)
def test_csv_problems_name_the_line(text: str, expected: list[str]) -> None:
    with pytest.raises(BadInput) as info:
        parse(text)
    problems = str(info.value).splitlines()
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_csv_rows_bom_case_and_quoting() -> None:
    roster = parse('\ufeffEmail, Name\n\nAda@Example.EDU,"Lovelace, Ada"\nbob@example.edu,\n')
    assert rows(roster) == [
        (3, "ada@example.edu", "Lovelace, Ada", ()),
        (4, "bob@example.edu", None, ()),
    ]


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        pytest.param("email;name\nada@example.edu;Ada Lovelace\n", None, id="sniffed ;"),
        pytest.param("email\tname\nada@example.edu\tAda Lovelace\n", None, id="sniffed tab"),
        pytest.param("email|name\nada@example.edu|Ada Lovelace\n", None, id="sniffed |"),
        pytest.param("email:name\nada@example.edu:Ada Lovelace\n", ":", id="given :"),
    ],
)
def test_any_delimiter(text: str, delimiter: str | None) -> None:
    assert rows(parse(text, delimiter=delimiter)) == [(2, "ada@example.edu", "Ada Lovelace", ())]


def test_single_column_roster() -> None:
    assert rows(parse("email\nada@example.edu\n")) == [(2, "ada@example.edu", None, ())]


def test_column_mapping_and_a_name_from_first_and_last() -> None:
    text = (
        "Student ID;E-Mail Address;First Name;Last Name;Class\n"
        "17;ada@example.edu;Ada;Lovelace;x\n"
        "18;bob@example.edu;Bob;;x\n"
        "19;eve@example.edu;;;x\n"
    )
    columns = Columns(email="e-mail address", name=("First Name", "Last Name"), course="Class")
    roster = parse(text, ("x",), columns=columns)
    assert rows(roster) == [
        (2, "ada@example.edu", "Ada Lovelace", ("x",)),
        (3, "bob@example.edu", "Bob", ("x",)),
        (4, "eve@example.edu", None, ("x",)),
    ]
    assert roster.ignored_columns == ["student id"]


def test_a_missing_mapped_column_is_named() -> None:
    with pytest.raises(BadInput) as info:
        parse("mail,first\na@b.cd,A\n", columns=Columns(email="mail", name=("first", "last")))
    assert str(info.value) == "u.csv:1: no 'last' column (from --name-column)"


def test_course_column_several_courses_per_user() -> None:
    text = (
        "email,name,course\n"
        "ada@example.edu,Ada,demo staff\n"
        "bob@example.edu,Bob,demo\n"
        "bob@example.edu,,staff\n"
        'cy@example.edu,Cy,"staff, demo"\n'
    )
    assert rows(parse(text, TWO)) == [
        (2, "ada@example.edu", "Ada", ("demo", "staff")),
        (3, "bob@example.edu", "Bob", ("demo", "staff")),
        (5, "cy@example.edu", "Cy", ("staff", "demo")),
    ]


@pytest.mark.parametrize(
    ("text", "course_ids", "expected"),
    [
        pytest.param(
            "email\na@b.cd\n",
            TWO,
            "u.csv:1: no 'course' column, and 2 course files were given",
            id="several courses need a course column",
        ),
        pytest.param(
            "email,course\na@b.cd,demo\nb@b.cd,nope\n",
            TWO,
            "u.csv:3: unknown course nope in 'course' (the course files given are: demo, staff)",
            id="unknown course",
        ),
        pytest.param(
            "email,course\na@b.cd,\n", TWO, "u.csv:2: no course in 'course'", id="empty course"
        ),
        pytest.param(
            "email,course\na@b.cd,demo\na@b.cd,demo staff\n",
            TWO,
            "u.csv:3: a@b.cd already has demo on line 2",
            id="one course twice for a user",
        ),
    ],
)
def test_course_problems(text: str, course_ids: tuple[str, ...], expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse(text, course_ids)
    assert str(info.value).startswith(expected), str(info.value)


def test_json_lines() -> None:
    text = (
        '{"email": "ada@example.edu", "name": "Ada", "course": ["demo", "staff"]}\n'
        "\n"
        '{"email": "bob@example.edu", "name": null, "course": "staff"}\n'
    )
    assert rows(parse(text, TWO, json_lines=True)) == [
        (1, "ada@example.edu", "Ada", ("demo", "staff")),
        (3, "bob@example.edu", None, ("staff",)),
    ]


def test_json_lines_problems_in_one_pass() -> None:
    text = (
        '{"email": "ada@example.edu", "course": "demo"}\n'
        "not json\n"
        '["a list"]\n'
        '{"email": 7, "course": "demo"}\n'
        '{"email": "bob@example.edu"}\n'
        '{"email": "cy@example.edu", "course": 3}\n'
    )
    with pytest.raises(BadInput) as info:
        parse(text, TWO, json_lines=True)
    assert str(info.value).splitlines() == [
        "u.csv:2: not a JSON object (JSON Lines: one object a line)",
        "u.csv:3: not a JSON object (JSON Lines: one object a line)",
        "u.csv:4: 'email' must be text",
        "u.csv:5: no 'course', and several course files were given",
        "u.csv:6: 'course' must be text or a list of course ids",
    ]


def test_skip_invalid_keeps_the_good_rows_and_names_the_bad() -> None:
    roster = parse(
        "email,name\nada@example.edu,Ada\nnope,N\nbob@example.edu,Bob\n", skip_invalid=True
    )
    assert [r.email for r in roster.rows] == ["ada@example.edu", "bob@example.edu"]
    assert [(b.line, b.email) for b in roster.invalid] == [(3, "nope")]
    assert roster.invalid[0].reason.startswith("email is not a plausible address")


def test_skip_invalid_with_nothing_valid_is_an_error() -> None:
    with pytest.raises(BadInput, match=r"u\.csv: no valid users"):
        parse("email\nnope\n", skip_invalid=True)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("users.jsonl", '{"email": "ada@example.edu"}\n', id="by suffix"),
        pytest.param("users.txt", '  {"email": "ada@example.edu"}\n', id="by a first {"),
    ],
)
def test_load_roster_recognises_json_lines(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    roster = load_roster(path, course_ids=ONE)
    assert [r.email for r in roster.rows] == ["ada@example.edu"]


async def test_bulk_on_a_terminal_shows_a_bar_and_the_summary(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """The terminal path (a progress bar instead of JSON lines), in-process."""
    roster = parse("email\nada@example.edu\nbob@example.edu\n")
    out, err = io.StringIO(), io.StringIO()
    code = await run_bulk_cli(
        provisioner, [course], roster, concurrency=2, out=out, err=err, tty=True
    )
    assert code == 0
    assert "provisioning" in out.getvalue()
    assert "2/2" in out.getvalue()
    assert "{" not in out.getvalue()  # no JSON lines on a terminal
    assert err.getvalue() == "bulk: 2 of 2 users provisioned, 0 failed\n"
    assert len(fake.chats) == 4


# --- a column of groups or classes chooses the courses ---------------------------------------


def groups_of(roster: Roster) -> list[tuple[int, str, tuple[str, ...] | None]]:
    return [(r.line, r.email, r.groups) for r in roster.rows]


def test_group_cells_hold_several_groups_and_a_person_may_come_back() -> None:
    text = (
        "email;class\nada@example.edu;Year 9, 9B|science\nbob@example.edu;\nada@example.edu;drama\n"
    )
    roster = parse(text, TWO, columns=Columns(groups="class"))
    assert groups_of(roster) == [
        (2, "ada@example.edu", ("Year 9", "9B", "science", "drama")),
        (3, "bob@example.edu", ()),
    ]
    assert roster.ignored_columns == []


def test_groups_in_json_lines_and_refused_values() -> None:
    text = '{"email": "ada@example.edu", "groups": ["year-9", "staff"]}\n'
    roster = parse(text, TWO, columns=Columns(groups="groups"), json_lines=True)
    assert groups_of(roster) == [(1, "ada@example.edu", ("year-9", "staff"))]
    with pytest.raises(BadInput) as info:
        parse(
            '{"email": "a@b.cd", "groups": 3}\n',
            TWO,
            columns=Columns(groups="groups"),
            json_lines=True,
        )
    assert str(info.value) == "u.csv:1: 'groups' must be text or a list of group names"
    with pytest.raises(BadInput, match=r"u\.csv:1: no 'class' column \(from --group-column\)"):
        parse("email\na@b.cd\n", TWO, columns=Columns(groups="class"))


def test_groups_choose_courses_exactly_as_the_receiver_does() -> None:
    """The same function as the webhook receiver: courses for everyone, plus every course
    naming one of the person's groups; none of them, nothing."""
    everyone, year9, staff = (
        course_named("welcome"),
        course_named("y9", ["year-9"]),
        course_named("staff", ["staff"]),
    )
    courses = [everyone, year9, staff]
    for groups in [(), ("year-9",), ("staff", "year-9"), ("other",)]:
        row = UserRow(2, "a@b.cd", None, groups=groups)
        assert courses_of(row, courses) == list(courses_for(courses, groups))
    only_groups = [year9, staff]
    assert courses_of(UserRow(2, "a@b.cd", None, groups=("other",)), only_groups) == []


async def test_bulk_with_a_group_column_does_a_whole_term_start(
    env: dict[str, str], fake: FakeOpenWebUI, tmp_path: Path
) -> None:
    files = []
    for course_id, groups in (("welcome", None), ("y9", ["Year 9"]), ("staff", ["staff"])):
        path = tmp_path / f"{course_id}.toml"
        path.write_text(course_toml(course_id, groups), encoding="utf-8")
        files.append(str(path))
    roster = tmp_path / "export.csv"
    roster.write_text(
        "Mail;Klasse\nada@example.edu;Year 9\nbob@example.edu;staff|Year 9\n", encoding="utf-8"
    )
    only = tmp_path / "only-groups.csv"
    only.write_text("Mail;Klasse\ncy@example.edu;drama\n", encoding="utf-8")

    result = await run(
        env, "bulk", *files, str(roster), "--email-column", "mail", "--group-column", "klasse"
    )
    assert result.rc == 0, result.err
    got = {(line["email"], line["course"]) for line in result.lines()}
    assert got == {
        ("ada@example.edu", "welcome"),
        ("ada@example.edu", "y9"),
        ("bob@example.edu", "welcome"),
        ("bob@example.edu", "y9"),
        ("bob@example.edu", "staff"),
    }

    report = tmp_path / "report.csv"
    nothing = await run(
        env,
        "bulk",
        *files[1:],
        str(only),
        "--email-column",
        "mail",
        "--group-column",
        "klasse",
        "--report",
        str(report),
    )
    assert nothing.rc == 0, nothing.err
    assert "cy@example.edu" not in fake.users  # nothing to provision: not even signed in
    assert "1 with nothing to provision (their groups choose no course)" in nothing.err
    assert "nothing to provision" in report.read_text(encoding="utf-8")


# --- rosters that are not UTF-8 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            "email,name\nada@example.edu,Zoë “Ada”\n".encode("cp1252"),
            "r.csv:2: not UTF-8 (byte 0xEB); it looks like Windows-1252 (Excel's 'CSV' on "
            "Windows): save it as UTF-8 (Excel: 'CSV UTF-8') or read it as it is with "
            "--encoding cp1252",
            id="windows-1252",
        ),
        pytest.param(
            "email,name\n\nada@example.edu,Zoë\n".encode("latin-1"),
            "r.csv:3: not UTF-8 (byte 0xEB); it looks like Latin-1 (ISO-8859-1) or "
            "Windows-1252: save it as UTF-8 (Excel: 'CSV UTF-8') or read it as it is with "
            "--encoding cp1252",
            id="latin-1",
        ),
        pytest.param(
            "email,name\nada@example.edu,Zoë\n".encode("utf-16"),
            "r.csv:1: not UTF-8 (byte 0xFF); it looks like UTF-16 (Excel's 'Unicode Text'): "
            "save it as UTF-8 (Excel: 'CSV UTF-8') or read it as it is with --encoding utf-16",
            id="utf-16",
        ),
    ],
)
def test_a_roster_that_is_not_utf8_names_its_likely_encoding(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(data)
    with pytest.raises(BadInput) as info:
        load_roster(path, course_ids=ONE)
    assert str(info.value) == str(path.parent / expected)


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_a_roster_is_read_in_the_encoding_given(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes("email,name\nada@example.edu,Zoë “Ada” Ångström\n".encode(encoding))
    roster = load_roster(path, course_ids=ONE, encoding=encoding)
    assert rows(roster) == [(2, "ada@example.edu", "Zoë “Ada” Ångström", ())]


async def test_an_unknown_encoding_is_a_usage_error(
    env: dict[str, str], course_file: Path, tmp_path: Path
) -> None:
    result = await run(env, "bulk", str(course_file), "r.csv", "--encoding", "klingon")
    assert result.rc == 2
    assert "'klingon' is not a known encoding (e.g. utf-8, cp1252, latin-1, utf-16)" in result.err


# --- the report is complete whenever the run stops ------------------------------------------


@pytest.mark.parametrize("cause", ["onboarding", "settings"])
async def test_the_report_names_every_user_when_the_run_stops_before_the_first(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path, cause: str
) -> None:
    roster = tmp_path / "r.csv"
    roster.write_text("email\nada@example.edu\nbob@example.edu\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    if cause == "onboarding":
        fake.users.clear()
        reason, code = "OpenWebUI has no users yet", 1
    else:
        env["OWUI_PROVISION_MAX_ATEMPTS"] = "3"
        reason = (
            "OWUI_PROVISION_MAX_ATEMPTS: unknown setting; did you mean OWUI_PROVISION_MAX_ATTEMPTS?"
        )
        code = 2

    result = await run(env, "bulk", str(course_file), str(roster), "--report", str(report))

    assert result.rc == code, result.err
    lines = list(csv.reader(report.open(encoding="utf-8")))
    assert lines[0] == ["line", "email", "courses", "result", "detail"]
    assert [(line[1], line[3]) for line in lines[1:]] == [
        ("ada@example.edu", "not run"),
        ("bob@example.edu", "not run"),
    ]
    assert all(line[4].startswith("the run stopped: ") and reason in line[4] for line in lines[1:])
