"""Exactly once under crashes: real provisioner processes killed at random points of a run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

from provisioner.threads import MARKER_KEY
from tests.provisioner.cli_helpers import finish, run, start
from tests.provisioner.fake_owui import FakeOpenWebUI

USERS = 200
MODULES = ("intro", "next")
# Three runs at once, and six times one of them is killed (SIGKILL, nothing cleaned up)
# and replaced by a fresh one, after a random number of further requests.
AT_ONCE = 3
KILLS = 6


async def test_provisioners_killed_at_random_points_leave_one_archived_thread_each(
    env: dict[str, str], fake: FakeOpenWebUI, course_file: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    emails = [f"student{n:03}@example.edu" for n in range(USERS)]
    roster = tmp_path / "roster.csv"
    roster.write_text("email\n" + "".join(f"{email}\n" for email in emails), encoding="utf-8")
    args = ("bulk", str(course_file), str(roster), "--concurrency", "8")

    reached = asyncio.Event()
    target = 0

    def count(_: object) -> None:
        if len(fake.calls) >= target:
            reached.set()

    fake.on_call = count
    running = [await start(env, *args) for _ in range(AT_ONCE)]
    killed = 0
    while killed < KILLS:
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
    survivors = [await finish(p, timeout=300) for p in running]
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
