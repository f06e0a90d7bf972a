"""``owui-provision`` as real processes against the fake (served by the test's own loop)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import build_parser
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY
from tests.provisioner.cli_helpers import Run, finish, run, start
from tests.provisioner.conftest import COURSE_TOML, course_toml
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI

EMAIL = "ada@example.edu"


def assert_one_archived_per_module(
    fake: FakeOpenWebUI, email: str, modules: tuple[str, ...] = ("intro", "next")
) -> None:
    for module in modules:
        found = [
            c for c in fake.chats_of(email) if c.chat.get(MARKER_KEY, {}).get("module") == module
        ]
        assert [c.archived for c in found] == [True], (
            email,
            module,
            [(c.id, c.archived) for c in found],
        )


def assert_no_secret(fake: FakeOpenWebUI, *runs: Run) -> None:
    """Neither the service token nor any user token OpenWebUI issued appears anywhere."""
    secrets = [SERVICE_TOKEN, *fake.tokens]
    assert secrets[1:], "the test should have made OpenWebUI issue tokens"
    for result in runs:
        for secret in secrets:
            assert secret not in result.out
            assert secret not in result.err


async def test_user_prints_one_json_line_per_module(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    first = await run(env, "user", str(course_file), "Ada@Example.EDU", "--name", "Ada")
    assert first.rc == 0, first.err
    lines = first.lines()
    assert [(x["module"], x["status"], x["archived"]) for x in lines] == [
        ("intro", "created", True),
        ("next", "created", True),
    ]
    assert set(lines[0]) == {"email", "course", "module", "chat_id", "status", "archived"}
    assert {x["email"] for x in lines} == {EMAIL}
    assert {x["course"] for x in lines} == {"demo"}

    again = await run(env, "user", str(course_file), EMAIL)
    assert again.rc == 0, again.err
    assert [x["status"] for x in again.lines()] == ["existing", "existing"]
    assert [x["chat_id"] for x in again.lines()] == [x["chat_id"] for x in lines]
    assert_one_archived_per_module(fake, EMAIL)
    assert_no_secret(fake, first, again)


async def test_user_with_several_course_files_gets_every_one(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    """The operator named the courses: each is provisioned, groups or not."""
    staff = tmp_path / "staff.toml"
    staff.write_text(course_toml("staff", ["staff"]), encoding="utf-8")
    result = await run(env, "user", str(course_file), str(staff), EMAIL)
    assert result.rc == 0, result.err
    assert [(x["course"], x["module"]) for x in result.lines()] == [
        ("demo", "intro"),
        ("demo", "next"),
        ("staff", "intro"),
        ("staff", "next"),
    ]
    assert len(fake.chats_of(EMAIL)) == 4


async def test_five_processes_at_once_leave_exactly_one_archived_thread_per_module(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    # The first creates are held until three processes have each found nothing and created:
    # the race happens however slowly the machine starts the processes.
    fake.gate("POST", "/api/v1/chats/new", arrivals=3)
    processes = [await start(env, "user", str(course_file), EMAIL) for _ in range(5)]
    results = await asyncio.gather(*(finish(p) for p in processes))

    for result in results:
        assert result.rc == 0, result.err
        assert [x["archived"] for x in result.lines()] == [True, True]
    assert fake.count("POST", "/api/v1/chats/new") > 2, "the race did not happen"
    assert fake.count("DELETE", r"/api/v1/chats/[^/]+") > 0
    assert_one_archived_per_module(fake, EMAIL)
    assert len(fake.chats_of(EMAIL)) == 2
    assert_no_secret(fake, *results)


async def test_a_process_killed_between_create_and_archive_is_finished_by_the_next_run(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    created = asyncio.Event()
    fake.on_create = lambda chat: created.set()
    fake.slow("POST", r"/api/v1/chats/[^/]+/archive", 30)  # the kill lands before any archive
    process = await start(env, "user", str(course_file), EMAIL)
    await asyncio.wait_for(created.wait(), 60)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert [c.archived for c in fake.chats_of(EMAIL)] == [False]

    fake.delays.clear()
    again = await run(env, "user", str(course_file), EMAIL)

    assert again.rc == 0, again.err
    assert [x["status"] for x in again.lines()] == ["existing", "created"]
    assert_one_archived_per_module(fake, EMAIL)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["user", "{course}", "not-an-email"], "email is not a plausible address", id="bad email"
        ),
        pytest.param(
            ["user", "{bad}", EMAIL], "bad.toml:3: course.id: must be lower-case", id="bad course"
        ),
        pytest.param(
            ["user", "{missing}", EMAIL], "missing.toml: cannot read", id="missing course"
        ),
        pytest.param(
            ["user", "{course}", "\u212aate@example.edu"],
            "email holds a non-ASCII character (U+212A)",
            id="non-ASCII email",
        ),
        pytest.param(
            ["user", "{course}", "{same}", EMAIL],
            "course.id: 'demo' is also the id of",
            id="two courses, one id",
        ),
        pytest.param(
            ["bulk", "{course}", "{badcsv}"], "users.csv:2: email is not a plausible", id="bad csv"
        ),
        pytest.param(
            ["bulk", "{course}", "{csv}", "--concurrency", "0"], "not a whole number", id="bad flag"
        ),
        pytest.param(
            ["bulk", "{course}", "{staff}", "{csv}"],
            "no 'course' column, and 2 course files were given",
            id="several courses, no course column",
        ),
        pytest.param(
            ["bulk", "{course}", "{csv}", "--report", "/nonexistent/dir/report.csv"],
            "--report /nonexistent/dir/report.csv: cannot write (No such file or directory)",
            id="report not writable",
        ),
        pytest.param(
            ["bulk", "{course}", "{csv}", "--delimiter", ";;"],
            "is not one character",
            id="bad delimiter",
        ),
        pytest.param(["frobnicate"], "invalid choice", id="unknown command"),
        pytest.param(
            ["webhook", "{course}", "--listen", "nowhere", "--secret-file", "x"],
            "is not HOST:PORT",
            id="bad listen",
        ),
        pytest.param(
            ["webhook", "{course}", "--listen", "unix:hook.sock", "--secret-file", "x"],
            "a unix socket must be an absolute path",
            id="relative unix socket",
        ),
    ],
)
async def test_bad_input_exits_2_with_a_clear_message(
    env: dict[str, str],
    fake: FakeOpenWebUI,
    course_file: Path,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    (tmp_path / "bad.toml").write_text(
        COURSE_TOML.replace('id = "demo"', 'id = "Demo"'), encoding="utf-8"
    )
    (tmp_path / "users.csv").write_text("email,name\nnope,N\n", encoding="utf-8")
    (tmp_path / "good.csv").write_text(f"email,name\n{EMAIL},Ada\n", encoding="utf-8")
    (tmp_path / "staff.toml").write_text(course_toml("staff"), encoding="utf-8")
    (tmp_path / "same.toml").write_text(course_toml("demo"), encoding="utf-8")
    paths = {
        "course": str(course_file),
        "bad": str(tmp_path / "bad.toml"),
        "missing": str(tmp_path / "missing.toml"),
        "badcsv": str(tmp_path / "users.csv"),
        "csv": str(tmp_path / "good.csv"),
        "staff": str(tmp_path / "staff.toml"),
        "same": str(tmp_path / "same.toml"),
    }
    result = await run(env, *(arg.format(**paths) for arg in args))
    assert result.rc == 2
    assert expected in result.err
    assert fake.chats == {}


async def test_missing_settings_exit_2(env: dict[str, str], course_file: Path) -> None:
    del env["OWUI_PROVISION_URL"]
    result = await run(env, "user", str(course_file), EMAIL)
    assert result.rc == 2
    assert "OWUI_PROVISION_URL: required, not set" in result.err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param("onboarding", "Sign in once as the intended administrator", id="onboarding"),
        pytest.param("pending", "DEFAULT_USER_ROLE=user", id="pending"),
        pytest.param("no-header", "WEBUI_AUTH_TRUSTED_EMAIL_HEADER", id="header mode off"),
        pytest.param("token", "OWUI_PROXY_INTERNAL_TOKENS_FILE", id="token refused"),
    ],
)
async def test_refusals_exit_1_and_create_nothing(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, setup: str, expected: str
) -> None:
    if setup == "onboarding":
        fake.users.clear()
    elif setup == "pending":
        fake.default_role = "pending"
    elif setup == "no-header":
        fake.trusted_header = False
    else:
        fake.service_tokens = ("another-token-" + "x" * 30,)
    result = await run(env, "user", str(course_file), EMAIL)
    assert result.rc == 1
    assert expected in result.err
    assert fake.chats == {}
    assert result.out == ""


async def test_an_openwebui_4xx_exits_1_with_its_detail(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    fake.fail("POST", "/api/v1/chats/new", 400, body={"detail": "Chat creation is disabled"})
    result = await run(env, "user", str(course_file), EMAIL)
    assert result.rc == 1
    assert (
        "OpenWebUI answered 400 to POST /api/v1/chats/new: Chat creation is disabled" in result.err
    )
    assert_no_secret(fake, result)


# --- bulk -----------------------------------------------------------------------------------------


async def test_bulk_reports_failures_and_a_rerun_finishes(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    users = tmp_path / "users.csv"
    users.write_text(
        "email,name\nada@example.edu,Ada\nstuck@example.edu,Stuck\ngrace@example.edu,Grace\n",
        encoding="utf-8",
    )
    stuck = fake.add_user("stuck@example.edu", role="pending")

    first = await run(env, "bulk", str(course_file), str(users), "--concurrency", "2")

    assert first.rc == 1
    assert "2 of 3 users provisioned, 1 failed" in first.err
    assert "failed: stuck@example.edu (line 3)" in first.err
    assert "DEFAULT_USER_ROLE=user" in first.err
    lines = first.lines()
    assert sum(1 for x in lines if x.get("archived")) == 4
    assert [x["email"] for x in lines if "error" in x] == ["stuck@example.edu"]

    stuck.role = "user"  # the operator fixes it
    second = await run(env, "bulk", str(course_file), str(users))

    assert second.rc == 0, second.err
    statuses = {(x["email"], x["status"]) for x in second.lines()}
    assert ("ada@example.edu", "existing") in statuses
    assert ("stuck@example.edu", "created") in statuses
    for email in ("ada@example.edu", "stuck@example.edu", "grace@example.edu"):
        assert_one_archived_per_module(fake, email)
    assert len(fake.chats) == 6
    assert_no_secret(fake, first, second)


async def test_bulk_killed_midway_then_rerun_has_no_duplicates(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    emails = [f"student{n}@example.edu" for n in range(6)]
    users = tmp_path / "users.csv"
    users.write_text("email,name\n" + "".join(f"{e},\n" for e in emails), encoding="utf-8")
    creates: list[Any] = []
    enough = asyncio.Event()

    def count(chat: Any) -> None:
        creates.append(chat)
        if len(creates) >= 4:
            enough.set()

    fake.on_create = count
    fake.slow("POST", r"/api/v1/chats/[^/]+/archive", 0.05)
    process = await start(env, "bulk", str(course_file), str(users), "--concurrency", "3")
    await asyncio.wait_for(enough.wait(), 60)
    process.send_signal(signal.SIGKILL)
    await process.wait()

    rerun = await run(env, "bulk", str(course_file), str(users), "--concurrency", "3")

    assert rerun.rc == 0, rerun.err
    for email in emails:
        assert_one_archived_per_module(fake, email)
    assert len(fake.chats) == 12


async def test_bulk_course_column_several_files_skip_invalid_and_report(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    staff = tmp_path / "staff.toml"
    staff.write_text(course_toml("staff", ["staff"]), encoding="utf-8")
    users = tmp_path / "users.csv"
    users.write_text(
        "Mail;Given;Family;Class;Phone\n"
        "ada@example.edu;Ada;Lovelace;demo staff;1\n"
        "not-an-email;X;Y;demo;2\n"
        "bob@example.edu;Bob;;staff;3\n"
        "cy@example.edu;Cy;;nope;4\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.csv"
    args = [
        *("bulk", str(course_file), str(staff), str(users)),
        *("--email-column", "mail", "--name-column", "given", "--name-column", "family"),
        *("--course-column", "class", "--skip-invalid", "--report", str(report)),
    ]

    result = await run(env, *args)

    assert result.rc == 0, result.err
    assert f"bulk: ignoring column(s) phone of {users}" in result.err
    assert f"{users}:3: email is not a plausible address" in result.err
    assert f"{users}:5: unknown course nope" in result.err
    assert "bulk: 2 of 2 users provisioned, 0 failed, 2 invalid row(s) skipped" in result.err
    assert sorted({(x["email"], x["course"]) for x in result.lines()}) == [
        ("ada@example.edu", "demo"),
        ("ada@example.edu", "staff"),
        ("bob@example.edu", "staff"),
    ]
    assert fake.users["ada@example.edu"].name == "Ada Lovelace"
    assert len(fake.chats) == 6
    with report.open(encoding="utf-8", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["line", "email", "courses", "result", "detail"]
    assert [row[:4] for row in table[1:]] == [
        ["2", "ada@example.edu", "demo staff", "provisioned"],
        ["3", "not-an-email", "", "invalid"],
        ["4", "bob@example.edu", "staff", "provisioned"],
        ["5", "cy@example.edu", "", "invalid"],
    ]
    assert table[1][4] == "4 created, 0 existing"


async def test_bulk_without_skip_invalid_runs_nothing_and_names_every_line(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    users = tmp_path / "users.jsonl"
    users.write_text(
        '{"email": "ada@example.edu"}\n{"email": "nope"}\n\n{"email": "ADA@example.edu"}\n',
        encoding="utf-8",
    )
    result = await run(env, "bulk", str(course_file), str(users))
    assert result.rc == 2
    assert f"{users}:2: email is not a plausible address" in result.err
    assert f"{users}:4: ada@example.edu is already on line 1" in result.err
    assert fake.calls == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_bulk_stopped_by_a_signal_prints_the_summary(
    env: dict[str, str],
    fake: FakeOpenWebUI,
    course_file: Path,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    """Ctrl-C and SIGTERM end the same way: summary, report, users not finished named."""
    emails = [f"student{n}@example.edu" for n in range(6)]
    users = tmp_path / "users.csv"
    users.write_text("email\n" + "".join(f"{e}\n" for e in emails), encoding="utf-8")
    report = tmp_path / "report.csv"
    created = asyncio.Event()
    fake.on_create = lambda chat: created.set()
    fake.slow("POST", "/api/v1/chats/new", 0.5)
    process = await start(
        env, "bulk", str(course_file), str(users), "--concurrency", "1", "--report", str(report)
    )
    await asyncio.wait_for(created.wait(), 60)
    process.send_signal(signum)
    result = await finish(process, timeout=60)

    assert result.rc == 128 + signum.value, result.err
    assert f"bulk: interrupted by {signum.name}: 0 of 6 users provisioned, 0 failed, " in result.err
    assert "6 not finished" in result.err
    assert "run the same command again to finish" in result.err
    assert "Traceback" not in result.err
    with report.open(encoding="utf-8", newline="") as handle:
        results = [row[3] for row in list(csv.reader(handle))[1:]]
    assert results == ["not run"] * 6

    fake.delays.clear()
    again = await run(env, "bulk", str(course_file), str(users))
    assert again.rc == 0, again.err
    for email in emails:
        assert_one_archived_per_module(fake, email)


# --- check ----------------------------------------------------------------------------------


async def test_check_course_files_offline_reports_every_problem(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    """No settings, no listener: only the files. Every problem of every file, at once."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        COURSE_TOML.replace('id = "demo"', 'id = "Demo"')
        .replace('id = "next"', 'id = "intro"')
        .replace('title = "Module 2: Next"', 'titel = "Module 2: Next"'),
        encoding="utf-8",
    )
    table = tmp_path / "table.toml"
    table.write_text(
        course_toml("table").replace("[[modules]]", "[modules]", 1).split("[[modules]]")[0],
        encoding="utf-8",
    )
    staff = tmp_path / "staff.toml"
    staff.write_text(course_toml("staff", ["staff", "year-9"]), encoding="utf-8")
    offline = {k: v for k, v in env.items() if not k.startswith("OWUI_PROVISION_")}

    result = await run(offline, "check", str(course_file), str(bad), str(table), str(staff))

    assert result.rc == 1, result.err
    assert result.out.splitlines() == [
        f"ok   {course_file}: course demo, 2 module(s), for everyone",
        f"FAIL {bad}:3: course.id: must be lower-case letters, digits and '-' (e.g. 'intro-2')",
        f"FAIL {bad}:12: modules[2].title: required, not set",
        f"FAIL {bad}:13: modules[2].id: module id 'intro' is already used by modules[1]",
        f"FAIL {bad}:14: modules[2].titel: unknown key (a typo?)",
        f"FAIL {table}:7: modules: written as [modules]: each module is its own [[modules]] "
        "table (double brackets), one per thread",
        f"ok   {staff}: course staff, 2 module(s), for groups staff, year-9",
        "5 problem(s)",
    ]
    assert fake.calls == []

    good = await run(offline, "check", str(course_file), str(staff))
    assert good.rc == 0, good.out + good.err
    assert good.out.endswith("all good\n")


SUBCOMMANDS = ["user", "bulk", "status", "remove", "webhook", "check"]


def test_every_subcommand_has_a_description_and_an_example() -> None:
    """Not a bare usage line: what the command does, and how it is called."""
    parser = build_parser()
    subcommands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    assert sorted(subcommands.choices) == sorted(SUBCOMMANDS)
    for name, sub in subcommands.choices.items():
        text = sub.format_help()
        assert len(sub.description or "") > 80, name
        examples = text.split("examples:\n", 1)[1]
        assert f"owui-provision {name}" in examples, name


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)])
async def test_version_on_every_command(env: dict[str, str], command: list[str]) -> None:
    from importlib import metadata

    result = await run(env, *command, "--version")
    assert result.rc == 0, result.err
    assert result.out == f"owui-provision {metadata.version('owui-gate')}\n"


async def test_check_all_good(env: dict[str, str]) -> None:
    result = await run(env, "check")
    assert result.rc == 0, result.out + result.err
    assert "ok   service token accepted" in result.out
    assert "ok   OpenWebUI is in trusted-header mode" in result.out
    assert "ok   an administrator exists" in result.out
    assert "all good" in result.out


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            "no-header",
            "fix: start OpenWebUI with WEBUI_AUTH_TRUSTED_EMAIL_HEADER",
            id="header mode",
        ),
        pytest.param(
            "onboarding",
            "fix: sign in once through the proxy as the intended administrator",
            id="no admin",
        ),
        pytest.param("token", "the service token was refused (407)", id="token"),
        pytest.param("unreachable", "not reachable", id="listener down"),
        pytest.param("token-file", "world-readable", id="token file"),
    ],
)
async def test_check_says_what_is_wrong_and_how_to_fix_it(
    env: dict[str, str], fake: FakeOpenWebUI, settings: Settings, setup: str, expected: str
) -> None:
    if setup == "no-header":
        fake.trusted_header = False
    elif setup == "onboarding":
        fake.users.clear()
    elif setup == "token":
        fake.service_tokens = ("another-token-" + "x" * 30,)
    elif setup == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            env["OWUI_PROVISION_URL"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env["OWUI_PROVISION_MAX_ATTEMPTS"] = "2"
    else:
        settings.token_file.chmod(0o644)
    result = await run(env, "check")
    assert result.rc == 1
    assert expected in result.out
    assert "problem(s)" in result.out
    assert SERVICE_TOKEN not in result.out + result.err
