"""``owui-provision status``: one row per person and module, as the person's OpenWebUI shows
it; a summary per course and module; reads only, and makes no account."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from provisioner.course import Course
from provisioner.folders import Folder, FolderPlan
from provisioner.status import StatusRow, module_row, summary
from provisioner.threads import MARKER_KEY, Thread, build_chat
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import COURSE_TOML, LOOKUP_EMAIL
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_dry_run import signed_in, staged, state, writes

COURSE_FOLDER = FolderPlan(Folder("f1", "Demo course", None, 1), ())


def thread(**changes: object) -> Thread:
    base: dict[str, object] = {
        "id": "t1",
        "created_at": 1,
        "archived": True,
        "pristine": True,
        "first_content": "Hello **student**!",
    }
    return Thread(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        pytest.param([], ("missing", "", None, None, 0), id="missing"),
        pytest.param([thread()], ("present", "archived", False, False, 1), id="archived"),
        pytest.param(
            [thread(archived=False, folder_id="f1")],
            ("present", "course folder", False, False, 1),
            id="in the course folder",
        ),
        pytest.param(
            [thread(archived=False, folder_id="f9")],
            ("present", "other folder", False, False, 1),
            id="moved to another folder",
        ),
        pytest.param(
            [thread(archived=False)], ("present", "chats", False, False, 1), id="un-archived"
        ),
        pytest.param(
            [thread(pristine=False)], ("present", "archived", True, False, 1), id="replied"
        ),
        pytest.param(
            [thread(first_content="old text")],
            ("present", "archived", False, True, 1),
            id="first message changed since",
        ),
        pytest.param(
            [
                thread(id="t2", created_at=2),
                thread(pristine=False, id="t3", created_at=3),
                thread(),
            ],
            ("present", "archived", False, False, 3),
            id="the winner speaks; all counted",
        ),
    ],
)
def test_module_row(course: Course, found: list[Thread], expected: tuple[object, ...]) -> None:
    row = module_row("a@x.edu", course, course.modules[0], found, COURSE_FOLDER)
    assert (row.state, row.where, row.replied, row.first_message_changed, row.threads) == expected


def test_summary_counts_and_percentages() -> None:
    rows = [
        StatusRow("a@x", "demo", "intro", "present", "archived", True, False, 1, "c1"),
        StatusRow("b@x", "demo", "intro", "present", "archived", False, True, 1, "c2"),
        StatusRow("c@x", "demo", "intro", "missing"),
        StatusRow("d@x", "demo", "intro", "no account"),
        StatusRow("e@x", "demo", "intro", "pending", detail="role pending"),
    ]
    text = summary(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "course/module",
        "people",
        "present",
        "replied",
        "changed",
        "missing",
        "no",
        "account",
    ]
    assert lines[1].split() == [
        "demo/intro",
        "5",
        "2",
        "(40%)",
        "1",
        "(20%)",
        "1",
        "(20%)",
        "1",
        "(20%)",
        "1",
        "(20%)",
    ]
    assert "pending: e@x: role pending" in text


async def test_status_matches_each_persons_threads_and_reads_only(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    staged(fake, course)
    people = ["done", "half", "wrote", "old", "new", "pending"]
    output = tmp_path / "status.csv"
    before, calls = state(fake), len(fake.calls)

    result = await run(
        env,
        "status",
        str(course_file),
        *(f"{p}@example.edu" for p in people),
        "--format",
        "csv",
        "--output",
        str(output),
    )

    assert result.rc == 0, result.err
    assert state(fake) == before
    assert writes(fake, calls) == []
    assert "new@example.edu" not in set(signed_in(fake, calls))
    rows = list(csv.DictReader(io.StringIO(output.read_text(encoding="utf-8"))))
    seen = {
        (r["email"].split("@")[0], r["module"]): (
            r["state"],
            r["where"],
            r["replied"],
            r["first_message_changed"],
        )
        for r in rows
    }
    assert seen == {
        ("done", "intro"): ("present", "archived", "no", "no"),
        ("done", "next"): ("present", "archived", "no", "no"),
        ("half", "intro"): ("present", "archived", "no", "no"),
        ("half", "next"): ("missing", "", "", ""),
        ("wrote", "intro"): ("present", "archived", "yes", "no"),
        ("wrote", "next"): ("present", "archived", "no", "no"),
        ("old", "intro"): ("present", "archived", "no", "yes"),
        ("old", "next"): ("present", "archived", "no", "no"),
        ("new", "intro"): ("no account", "", "", ""),
        ("new", "next"): ("no account", "", "", ""),
        ("pending", "intro"): ("pending", "", "", ""),
        ("pending", "next"): ("pending", "", "", ""),
    }
    # Rows come in the order the people were named.
    assert [r["email"].split("@")[0] for r in rows][::2] == people
    assert "status: 6 of 6 people looked at" in result.err
    assert "demo/intro" in result.err
    chat_ids = {r["chat_id"] for r in rows if r["chat_id"]}
    assert chat_ids <= {c.id for c in fake.chats.values()}


async def test_status_of_a_folder_course_as_json_lines_from_a_roster(
    env: dict[str, str], fake: FakeOpenWebUI, tmp_path: Path
) -> None:
    folder_file = tmp_path / "demo.toml"
    folder_file.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1),
        encoding="utf-8",
    )
    fake.add_user(LOOKUP_EMAIL)
    provisioned = await run(env, "user", str(folder_file), "ada@example.edu")
    assert provisioned.rc == 0, provisioned.err
    intro = next(
        c for c in fake.chats_of("ada@example.edu") if c.chat[MARKER_KEY]["module"] == "intro"
    )
    intro.folder_id = None  # the person dragged it out of the course folder
    roster = tmp_path / "r.csv"
    roster.write_text("email\nada@example.edu\n", encoding="utf-8")

    result = await run(env, "status", str(folder_file), "--roster", str(roster))

    assert result.rc == 0, result.err
    assert [(line["module"], line["where"]) for line in result.lines()] == [
        ("intro", "chats"),
        ("next", "course folder"),
    ]


async def test_status_needs_course_files_and_people(env: dict[str, str], course_file: Path) -> None:
    both = await run(env, "status", str(course_file), "a@example.edu", "--roster", "x.csv")
    assert both.rc == 2
    assert "give the people as emails after the course files, or as --roster FILE" in both.err
    none = await run(env, "status", "a@example.edu")
    assert none.rc == 2
    assert "name at least one course file" in none.err


async def test_a_status_budget_of_sign_in_and_one_look_a_person(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    for n in range(3):
        user = fake.add_user(f"p{n}@example.edu")
        fake.add_chat(user, build_chat(course, course.modules[0]), archived=True, created_at=1)
    calls = len(fake.calls)
    result = await run(env, "status", str(course_file), *(f"p{n}@example.edu" for n in range(3)))
    assert result.rc == 0, result.err
    per_person = [
        f"{c.method} {c.path}" for c in fake.calls[calls:] if c.act_as == "p1@example.edu"
    ]
    assert per_person == ["POST /api/v1/auths/signin", "GET /api/v1/chats/all"]
