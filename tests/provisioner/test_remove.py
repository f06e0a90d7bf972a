"""``owui-provision remove``: only the provisioner's threads, never the person's own chats;
replied-to threads kept unless told; exactly once in reverse under repeats, crashes and
concurrency."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from provisioner.course import Course, load_course
from provisioner.folders import folder_name
from provisioner.threads import MARKER_KEY, build_chat
from tests.provisioner.cli_helpers import finish, run, start
from tests.provisioner.conftest import COURSE_TOML, LOOKUP_EMAIL
from tests.provisioner.fake_owui import Chat, FakeOpenWebUI
from tests.provisioner.test_crashes import kill_at_random, roster
from tests.provisioner.test_dry_run import signed_in

EMAIL = "leaver@example.edu"


def theirs(fake: FakeOpenWebUI, course: Course) -> dict[str, str]:
    """A provisioned leaver who also has chats of their own that look like ours."""
    fake.add_user(LOOKUP_EMAIL)
    user = fake.add_user(EMAIL)
    ids: dict[str, str] = {}
    for module in course.modules:
        ids[module.id] = fake.add_chat(
            user, build_chat(course, module), archived=True, created_at=1
        ).id
    own = fake.add_chat(user, {"title": "My essay", "history": {"messages": {}}})
    lookalike = fake.add_chat(user, {"title": "Module 1: Intro [demo/intro]", "history": {}})
    clone_body = build_chat(course, course.modules[0])
    clone_body["originalChatId"] = ids["intro"]
    clone = fake.add_chat(user, clone_body)
    ids |= {"own": own.id, "lookalike": lookalike.id, "clone": clone.id}
    return ids


def markers(fake: FakeOpenWebUI, email: str = EMAIL) -> list[str]:
    return sorted(
        c.chat[MARKER_KEY]["module"]
        for c in fake.chats_of(email)
        if MARKER_KEY in c.chat and "originalChatId" not in c.chat
    )


async def test_remove_deletes_only_the_provisioners_threads(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    ids = theirs(fake, course)
    first = await run(env, "remove", str(course_file), EMAIL)
    again = await run(env, "remove", str(course_file), EMAIL)

    assert first.rc == 0, first.err
    assert sorted((line["result"], line["module"]) for line in first.lines()) == [
        ("deleted", "intro"),
        ("deleted", "next"),
    ]
    assert markers(fake) == []
    for kept in ("own", "lookalike", "clone"):
        assert ids[kept] in fake.chats, kept
    assert again.rc == 0, again.err
    assert again.lines() == []
    assert "0 thread(s) deleted" in again.err


async def test_replied_threads_are_kept_unless_told(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    ids = theirs(fake, course)
    intro = fake.chats[ids["intro"]]
    intro.chat["history"]["messages"]["r"] = {"id": "r", "role": "user", "content": "my work"}

    kept = await run(env, "remove", str(course_file), EMAIL)
    assert kept.rc == 0, kept.err
    assert {(line["result"], line["module"]) for line in kept.lines()} == {
        ("deleted", "next"),
        ("kept", "intro"),
    }
    assert "--including-replied" in kept.err
    assert markers(fake) == ["intro"]

    gone = await run(env, "remove", str(course_file), EMAIL, "--including-replied")
    assert gone.rc == 0, gone.err
    assert markers(fake) == []
    assert ids["own"] in fake.chats


async def test_one_module_is_retired_even_once_it_left_the_course_file(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    theirs(fake, course)
    retired = build_chat(course, course.modules[0])
    retired[MARKER_KEY] = {"course": "demo", "module": "retired"}
    fake.add_chat(fake.users[EMAIL], retired, archived=True)

    result = await run(env, "remove", str(course_file), EMAIL, "--module", "retired")

    assert result.rc == 0, result.err
    assert [(line["result"], line["module"]) for line in result.lines()] == [("deleted", "retired")]
    assert markers(fake) == ["intro", "next"]


async def test_a_person_without_an_account_is_not_signed_in_as(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path
) -> None:
    fake.add_user(LOOKUP_EMAIL)
    result = await run(env, "remove", str(course_file), "never@example.edu")

    assert result.rc == 0, result.err
    assert result.lines() == [
        {
            "email": "never@example.edu",
            "result": "no account",
            "detail": "has no OpenWebUI account: nothing",
        }
    ]
    assert "never@example.edu" not in fake.users
    assert "never@example.edu" not in signed_in(fake)


async def in_course_folders(
    env: dict[str, str], fake: FakeOpenWebUI, tmp_path: Path
) -> tuple[Path, Chat]:
    """A folder course provisioned for a@ and b@, b@ keeping a chat of their own in its
    folder: the course file and that chat."""
    folder_file = tmp_path / "demo.toml"
    folder_file.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1),
        encoding="utf-8",
    )
    fake.add_user(LOOKUP_EMAIL)
    for email in ("a@example.edu", "b@example.edu"):
        assert (await run(env, "user", str(folder_file), email)).rc == 0
    (b_folder,) = fake.folders_of("b@example.edu")
    mine = fake.add_chat(fake.users["b@example.edu"], {"title": "notes", "history": {}})
    mine.folder_id = b_folder.id  # the person keeps a chat of their own in the course folder
    return folder_file, mine


async def test_the_empty_course_folder_goes_too_and_a_used_one_stays(
    env: dict[str, str], fake: FakeOpenWebUI, tmp_path: Path
) -> None:
    folder_file, mine = await in_course_folders(env, fake, tmp_path)

    result = await run(env, "remove", str(folder_file), "a@example.edu", "b@example.edu")

    assert result.rc == 0, result.err
    assert fake.folders_of("a@example.edu") == []
    assert [f.name for f in fake.folders_of("b@example.edu")] == [
        folder_name(load_course(folder_file), "hidden")
    ]
    assert mine.id in fake.chats
    folder_lines = [line for line in result.lines() if line["result"] == "deleted folder"]
    assert [line["email"] for line in folder_lines] == ["a@example.edu"]


async def test_removals_killed_at_random_and_run_at_once_converge(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path, tmp_path: Path
) -> None:
    """Three removals at once over 100 provisioned people, killed and replaced at random;
    then one more: every course thread is gone, every chat of their own is there."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    path, emails = roster(tmp_path, 100)
    fake.add_user(LOOKUP_EMAIL)
    own: list[str] = []
    for email in emails:
        user = fake.add_user(email)
        for module in course.modules:
            fake.add_chat(user, build_chat(course, module), archived=True, created_at=1)
        own.append(fake.add_chat(user, {"title": "mine", "history": {}}).id)
    fake.slow("DELETE", r"/api/v1/chats/[^/]+", 0.005)
    args = ("remove", str(course_file), "--roster", str(path), "--concurrency", "8")

    survivors, killed = await kill_at_random(
        env, fake, args, random.Random(seed), at_once=3, kills=4
    )
    final = await run(env, *args)

    context = f"CRASH_SEED={seed}, {killed} kills"
    assert [s.rc for s in survivors] == [0, 0, 0], (context, [s.err[-2000:] for s in survivors])
    assert final.rc == 0, (context, final.err[-2000:])
    assert [line for line in final.lines() if line["result"] == "deleted"] == [], context
    for email in emails:
        assert markers(fake, email) == [], (context, email)
    assert all(chat_id in fake.chats for chat_id in own), context
    assert fake.count("DELETE", r"/api/v1/chats/[^/]+") >= 2 * len(emails), context


async def test_two_removals_at_once_for_one_person(
    env: dict[str, str], fake: FakeOpenWebUI, course: Course, course_file: Path
) -> None:
    ids = theirs(fake, course)
    fake.slow("DELETE", r"/api/v1/chats/[^/]+", 0.2)
    processes = [await start(env, "remove", str(course_file), EMAIL) for _ in range(2)]
    results = await asyncio.gather(*(finish(p) for p in processes))

    assert [r.rc for r in results] == [0, 0], [r.err for r in results]
    assert markers(fake) == []
    assert ids["own"] in fake.chats
