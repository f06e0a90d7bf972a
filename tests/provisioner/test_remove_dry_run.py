"""``owui-provision remove --dry-run``: what a removal would delete and keep, deleting nothing.

Before: ``remove`` had no preview; an operator could only find out what it deletes by
deleting it. The dry run looks once per person and says ``would delete`` (and ``would
delete folder``) for exactly what the real run then deletes.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.course import Course
from tests.provisioner.cli_helpers import run
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_remove import EMAIL, in_course_folders, markers, theirs


async def test_the_dry_run_names_what_the_removal_then_deletes(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    ids = theirs(fake, course)
    intro = fake.chats[ids["intro"]]
    intro.chat["history"]["messages"]["r"] = {"id": "r", "role": "user", "content": "my work"}
    chats_before = set(fake.chats)

    preview = await run(env, "remove", str(course_file), EMAIL, "--dry-run")

    assert preview.rc == 0, preview.err
    assert set(fake.chats) == chats_before  # nothing deleted
    assert sorted((line["result"], line["module"]) for line in preview.lines()) == [
        ("kept", "intro"),
        ("would delete", "next"),
    ]
    assert "dry run: nothing deleted" in preview.err
    assert "1 thread(s) would be deleted" in preview.err

    real = await run(env, "remove", str(course_file), EMAIL)
    assert real.rc == 0, real.err
    would = {line["chat_id"] for line in preview.lines() if line["result"] == "would delete"}
    deleted = {line["chat_id"] for line in real.lines() if line["result"] == "deleted"}
    assert would == deleted == {ids["next"]}
    assert markers(fake) == ["intro"]


async def test_the_dry_run_names_the_course_folders_that_would_be_emptied(
    env: dict[str, str], fake: FakeOpenWebUI, tmp_path: Path
) -> None:
    folder_file, _mine = await in_course_folders(env, fake, tmp_path)
    chats_before, folders_before = set(fake.chats), len(fake.folders_of("a@example.edu"))

    preview = await run(
        env, "remove", str(folder_file), "a@example.edu", "b@example.edu", "--dry-run"
    )

    assert preview.rc == 0, preview.err
    assert set(fake.chats) == chats_before
    assert len(fake.folders_of("a@example.edu")) == folders_before == 1
    folder_lines = [line for line in preview.lines() if line["result"] == "would delete folder"]
    assert [line["email"] for line in folder_lines] == ["a@example.edu"]
    real = await run(env, "remove", str(folder_file), "a@example.edu", "b@example.edu")
    deleted = [line for line in real.lines() if line["result"] == "deleted folder"]
    assert [line["folder_id"] for line in deleted] == [line["folder_id"] for line in folder_lines]
