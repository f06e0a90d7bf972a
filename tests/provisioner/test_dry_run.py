"""``--dry-run``: per person and module what a run would do; no write of any kind, and no
account made (OpenWebUI makes one at a first sign-in)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course, parse_course
from provisioner.directory import Directory
from provisioner.preview import NO_ACCOUNT, Preview
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.cli_helpers import run
from tests.provisioner.conftest import COURSE_TOML, LOOKUP_EMAIL
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock

# What a dry run may send: reads, and sign-ins of accounts that exist (which create nothing).
READS = {"GET", "HEAD"}


def state(fake: FakeOpenWebUI) -> Any:
    """Everything a write could change: users, chats (whole), folders."""
    return (
        sorted((u.email, u.role) for u in fake.users.values()),
        sorted(json.dumps(c.response(), sort_keys=True) for c in fake.chats.values()),
        sorted((f.id, f.name, f.parent_id) for f in fake.folders.values()),
    )


def writes(fake: FakeOpenWebUI, after: int = 0) -> list[str]:
    return [
        f"{c.method} {c.path}"
        for c in fake.calls[after:]
        if c.method not in READS and c.path != "/api/v1/auths/signin"
    ]


def signed_in(fake: FakeOpenWebUI, after: int = 0) -> list[str | None]:
    return [c.act_as for c in fake.calls[after:] if c.path == "/api/v1/auths/signin"]


def staged(fake: FakeOpenWebUI, course: Course) -> None:
    """A school mid-term: someone provisioned, someone half, someone who wrote, someone whose
    first message is out of date, someone with a thread of a retired module, a pending
    account, an admin; and people with no account at all."""
    fake.add_user(LOOKUP_EMAIL)
    done = fake.add_user("done@example.edu")
    half = fake.add_user("half@example.edu")
    wrote = fake.add_user("wrote@example.edu")
    old = fake.add_user("old@example.edu")
    fake.add_user("pending@example.edu", role="pending")
    intro, nxt = course.modules
    for module in (intro, nxt):
        fake.add_chat(done, build_chat(course, module), archived=True, created_at=1)
        fake.add_chat(wrote, build_chat(course, module), archived=True, created_at=1)
    fake.add_chat(half, build_chat(course, intro), archived=True, created_at=1)
    retired = build_chat(course, intro)
    retired[MARKER_KEY] = {"course": "demo", "module": "retired"}
    fake.add_chat(half, retired, archived=True, created_at=1)
    first = next(c for c in fake.chats_of(wrote.email) if c.chat[MARKER_KEY]["module"] == "intro")
    reply = {"id": "r", "parentId": "x", "role": "user", "content": "hi", "childrenIds": []}
    first.chat["history"]["messages"]["r"] = reply
    stale = parse_course(COURSE_TOML.replace("Hello **student**!", "Hello, old text"), "c.toml")
    for module in stale.modules:
        fake.add_chat(old, build_chat(stale, module), archived=True, created_at=1)


async def test_a_person_without_an_account_is_not_signed_in_as(
    settings: Settings, fake: FakeOpenWebUI, course: Course, clock: FastClock
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        preview = Preview(
            Provisioner(api, settings, sleep=clock.sleep), Directory(api, LOOKUP_EMAIL)
        )
        before = state(fake)
        planned = await preview.preview_user([course], "new@example.edu")

    assert [(p.module, p.action, p.detail) for p in planned] == [
        ("intro", "create", NO_ACCOUNT),
        ("next", "create", NO_ACCOUNT),
    ]
    assert state(fake) == before
    assert signed_in(fake) == [LOOKUP_EMAIL]
    assert "new@example.edu" not in fake.users


async def test_bulk_dry_run_says_what_a_run_would_do_and_changes_nothing(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    staged(fake, course)
    roster = tmp_path / "roster.csv"
    people = ["done", "half", "wrote", "old", "new", "pending", "admin"]
    roster.write_text("email\n" + "".join(f"{p}@example.edu\n" for p in people), encoding="utf-8")
    report = tmp_path / "report.csv"
    before, calls = state(fake), len(fake.calls)

    result = await run(
        env,
        "bulk",
        str(course_file),
        str(roster),
        "--dry-run",
        "--update-unreplied",
        "--report",
        str(report),
    )

    assert state(fake) == before
    assert writes(fake, calls) == []
    # Only accounts that exist are signed in as (and the lookup account, once).
    assert sorted(set(signed_in(fake, calls))) == sorted(
        [
            LOOKUP_EMAIL,
            "done@example.edu",
            "half@example.edu",
            "wrote@example.edu",
            "old@example.edu",
        ]
    )
    actions = {
        (line["email"].split("@")[0], line["module"]): line["action"]
        for line in result.lines()
        if "action" in line
    }
    assert actions == {
        ("done", "intro"): "already there",
        ("done", "next"): "already there",
        ("half", "intro"): "already there",
        ("half", "next"): "create",
        ("half", "retired"): "left alone",
        ("wrote", "intro"): "already there",  # written in: never updated
        ("wrote", "next"): "already there",
        ("old", "intro"): "update",
        ("old", "next"): "already there",  # its text did not change
        ("new", "intro"): "create",
        ("new", "next"): "create",
    }
    assert all(line.get("dry_run") for line in result.lines() if "action" in line)
    errors = {line["email"]: line["error"] for line in result.lines() if "error" in line}
    assert "DEFAULT_USER_ROLE=user" in errors["pending@example.edu"]
    assert "never acts as admin accounts" in errors["admin@example.edu"]
    assert result.rc == 1  # as the real run would, for the pending and the admin account
    assert "dry run: 5 of 7 users looked at (1 with no account yet), 2 would fail" in result.err
    assert "nothing was changed in OpenWebUI" in result.err
    rows = {row["email"]: row for row in csv.DictReader(report.open(encoding="utf-8"))}
    assert rows["done@example.edu"]["result"] == "provisioned already"
    assert rows["half@example.edu"]["result"] == "would provision"
    assert rows["half@example.edu"]["detail"] == "1 already there, 1 create, 1 left alone"
    assert rows["new@example.edu"]["detail"] == "2 create (no account yet)"
    assert rows["pending@example.edu"]["result"] == "failed"


async def test_a_dry_run_agrees_with_the_run_that_follows(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    staged(fake, course)
    roster = tmp_path / "roster.csv"
    people = ["done", "half", "old", "new"]
    roster.write_text("email\n" + "".join(f"{p}@example.edu\n" for p in people), encoding="utf-8")

    dry = await run(env, "bulk", str(course_file), str(roster), "--dry-run")
    real = await run(env, "bulk", str(course_file), str(roster))

    assert dry.rc == real.rc == 0, dry.err + real.err
    expected = {"create": "created", "already there": "existing"}
    said = {
        (line["email"], line["module"]): expected[line["action"]]
        for line in dry.lines()
        if line.get("action") in expected
    }
    done = {(line["email"], line["module"]): line["status"] for line in real.lines()}
    assert said == done


async def test_a_change_of_placement_is_previewed_as_a_move(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, tmp_path: Path
) -> None:
    staged(fake, course)
    folder_file = tmp_path / "demo.toml"
    folder_file.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1),
        encoding="utf-8",
    )
    before = state(fake)
    result = await run(env, "user", str(folder_file), "done@example.edu", "--dry-run")

    assert result.rc == 0, result.err
    assert [(line["action"], line.get("detail")) for line in result.lines()] == [
        ("move into the course folder", "the run first makes the course folder"),
        ("move into the course folder", "the run first makes the course folder"),
    ]
    assert state(fake) == before


async def test_a_dry_run_needs_the_lookup_account(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    del env["OWUI_PROVISION_LOOKUP_EMAIL"]
    result = await run(env, "user", str(course_file), "ada@example.edu", "--dry-run")
    assert result.rc == 2
    assert "OWUI_PROVISION_LOOKUP_EMAIL: required for status, --dry-run and remove" in result.err
    assert "ada@example.edu" not in fake.users


async def test_the_directory_is_read_whole_for_many_people_and_misses_asked_again(
    settings: Settings, fake: FakeOpenWebUI
) -> None:
    """Over a page of people: the whole directory in pages of 30 (by email), then one search
    for each person not in it, so "no account" is sure; an address with LIKE wildcards is
    matched exactly."""
    fake.add_user(LOOKUP_EMAIL)
    emails = [f"s{n:03}@example.edu" for n in range(70)]
    for email in emails[:60]:
        fake.add_user(email)
    fake.add_user("a_b@example.edu")
    async with make_http_client(settings) as http:
        directory = Directory(OpenWebUI(Transport(settings, SERVICE_TOKEN, http)), LOOKUP_EMAIL)
        await directory.prefetch([*emails, "axb@example.edu"])
        found = {email: await directory.account(email) for email in emails}
        wildcard = await directory.account("axb@example.edu")

    assert [email for email, account in found.items() if account is None] == emails[60:]
    assert wildcard is None  # "a_b@..." matched the ILIKE, not the address
    searches = [c.query for c in fake.calls if c.path == "/api/v1/users/search"]
    whole = [q for q in searches if "query" not in q]
    assert len(whole) == 3  # 63 accounts, 30 a page
    assert sorted(q["query"] for q in searches if "query" in q) == sorted(
        [*emails[60:], "axb@example.edu"]
    )
