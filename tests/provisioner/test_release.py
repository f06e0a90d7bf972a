"""The provisioner and OpenWebUI releases: refused where its chat lists miss threads; the
sign-up trap of releases before 0.8.0 named with its fix (``check``) and when it bites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.provisioner.cli_helpers import run
from tests.provisioner.fake_owui import FakeOpenWebUI


async def test_check_names_a_supported_release(env: dict[str, str]) -> None:
    result = await run(env, "check")
    assert result.rc == 0, result.out
    assert "ok   OpenWebUI 0.12.4 is a supported release" in result.out


@pytest.mark.parametrize("version", ["0.6.33", "0.6.13", "0.6.10"])
async def test_check_and_user_refuse_a_release_whose_lists_miss_threads(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, version: str
) -> None:
    fake.version = version
    check = await run(env, "check")
    assert check.rc == 1
    assert f"FAIL OpenWebUI {version} is not supported" in check.out
    assert "leaves out pinned chats" in check.out
    assert "Upgrade OpenWebUI to 0.6.34 or later" in check.out
    user = await run(env, "user", str(course_file), "new@example.edu")
    assert user.rc != 0
    assert "leaves out pinned chats" in user.err
    assert fake.count("POST", "/api/v1/auths/signin") == 0  # refused before acting
    assert fake.chats_of("new@example.edu") == []


async def test_check_reports_the_signup_trap_with_its_fix(
    env: dict[str, str], fake: FakeOpenWebUI
) -> None:
    fake.version = "0.7.2"
    trapped = await run(env, "check")
    assert trapped.rc == 1
    assert "FAIL OpenWebUI 0.7.2 refuses the trusted-header sign-in of new users" in trapped.out
    assert "fix: as the OpenWebUI admin, turn on Admin Panel > Settings > General" in trapped.out
    fake.enable_signup = True  # the fix
    fixed = await run(env, "check")
    assert fixed.rc == 0, fixed.out
    assert "ok   OpenWebUI 0.7.2 is a supported release" in fixed.out


async def test_user_explains_the_signup_trap_when_it_bites(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    fake.version = "0.7.2"
    fake.add_user("known@example.edu")
    known = await run(env, "user", str(course_file), "known@example.edu")
    assert known.rc == 0, known.err  # existing users still sign in
    new = await run(env, "user", str(course_file), "new@example.edu")
    assert new.rc != 0
    assert "new@example.edu: OpenWebUI 0.7.2 refuses the trusted-header sign-in" in new.err
    assert "Enable New Sign Ups" in new.err
    fake.enable_signup = True
    assert (await run(env, "user", str(course_file), "new@example.edu")).rc == 0
