"""Exactly once under crashes: real provisioner processes killed at random points of a run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

from provisioner.folders import folder_tag
from provisioner.threads import MARKER_KEY
from tests.provisioner.cli_helpers import Run, finish, run, start
from tests.provisioner.conftest import COURSE_TOML
from tests.provisioner.fake_owui import FakeOpenWebUI

USERS = 200
MODULES = ("intro", "next")
# Three runs at once, and six times one of them is killed (SIGKILL, nothing cleaned up)
# and replaced by a fresh one, after a random number of further requests.
AT_ONCE = 3
KILLS = 6


def roster(tmp_path: Path, users: int) -> tuple[Path, list[str]]:
    emails = [f"student{n:03}@example.edu" for n in range(users)]
    path = tmp_path / "roster.csv"
    path.write_text("email\n" + "".join(f"{email}\n" for email in emails), encoding="utf-8")
    return path, emails


async def kill_at_random(
    env: dict[str, str],
    fake: FakeOpenWebUI,
    args: tuple[str, ...],
    rng: random.Random,
    *,
    at_once: int,
    kills: int,
    leave_running: bool = True,
) -> tuple[list[Run], int]:
    """``at_once`` runs of ``args``; ``kills`` times one is SIGKILLed after a random number
    of further requests and replaced. The survivors are awaited, or (``leave_running``
    false) killed too once the kills are done."""
    reached = asyncio.Event()
    target = 0

    def count(_: object) -> None:
        if len(fake.calls) >= target:
            reached.set()

    fake.on_call = count
    running = [await start(env, *args) for _ in range(at_once)]
    killed = 0
    while killed < kills:
        target = len(fake.calls) + rng.randint(10, 600)
        reached.clear()
        all_done = asyncio.gather(*(p.wait() for p in running))
        waiter = asyncio.ensure_future(reached.wait())
        await asyncio.wait([waiter, all_done], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        all_done.cancel()
        live = [p for p in running if p.returncode is None]
        if not live:
            break
        victim = rng.choice(live)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed += 1
        running[running.index(victim)] = await start(env, *args)
    if not leave_running:
        for process in running:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
        return [], killed
    return [await finish(p, timeout=300) for p in running], killed


async def test_provisioners_killed_at_random_points_leave_one_archived_thread_each(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    path, emails = roster(tmp_path, USERS)
    args = ("bulk", str(course_file), str(path), "--concurrency", "8")

    survivors, killed = await kill_at_random(
        env, fake, args, random.Random(seed), at_once=AT_ONCE, kills=KILLS
    )
    final = await run(env, *args)

    context = f"CRASH_SEED={seed}, {killed} kills"
    assert [s.rc for s in survivors] == [0] * AT_ONCE, (context, [s.err[-2000:] for s in survivors])
    assert final.rc == 0, (context, final.err[-2000:])
    assert {line["status"] for line in final.lines()} == {"existing"}, context
    for email in emails:
        found = sorted(
            (c.chat.get(MARKER_KEY, {}).get("module"), c.archived) for c in fake.chats_of(email)
        )
        assert found == [(module, True) for module in MODULES], (context, email, found)


async def test_killed_runs_then_a_change_of_placement_leave_one_thread_each_in_the_folder(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    """Exactly once across placements: archived runs are killed at random (and the last
    ones stopped), then runs of the same course with ``placement = "folder"`` are killed at
    random too; afterwards every person has one course folder holding one thread a module,
    and no other chat."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path, emails = roster(tmp_path, USERS // 2)
    folder_file = tmp_path / "demo-folder.toml"
    folder_file.write_text(
        COURSE_TOML.replace('model = "tutor"', 'model = "tutor"\nplacement = "folder"', 1),
        encoding="utf-8",
    )
    archived = ("bulk", str(course_file), str(path), "--concurrency", "8")
    in_folder = ("bulk", str(folder_file), str(path), "--concurrency", "8")

    _, first_kills = await kill_at_random(
        env, fake, archived, rng, at_once=2, kills=3, leave_running=False
    )
    survivors, second_kills = await kill_at_random(env, fake, in_folder, rng, at_once=2, kills=3)
    final = await run(env, *in_folder)

    context = f"CRASH_SEED={seed}, {first_kills} + {second_kills} kills"
    assert [s.rc for s in survivors] == [0, 0], (context, [s.err[-2000:] for s in survivors])
    assert final.rc == 0, (context, final.err[-2000:])
    assert {line["status"] for line in final.lines()} == {"existing"}, context
    tag = folder_tag("demo", "hidden")
    for email in emails:
        folders = [f.id for f in fake.folders_of(email) if tag in f.name]
        assert len(folders) == 1, (context, email, folders)
        found = sorted(
            (c.chat.get(MARKER_KEY, {}).get("module"), c.archived, c.folder_id)
            for c in fake.chats_of(email)
        )
        assert found == [(module, False, folders[0]) for module in MODULES], (context, email)
