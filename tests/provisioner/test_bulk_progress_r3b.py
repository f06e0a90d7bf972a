"""A large roster finishes users as it goes, not all at its end (review round 3b)."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.bulk import Outcome, run_bulk
from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.slots import Slots
from provisioner.users import UserRow
from tests.provisioner.fake_owui import FakeOpenWebUI, FastClock

USERS = 60


@pytest.fixture
def clock() -> FastClock:
    """Slow enough that the settle pause (0.5 real s) is longer than a user's calls."""
    return FastClock(4)


async def test_users_back_from_the_settle_pause_go_before_users_not_started(
    provisioner: Provisioner, fake: FakeOpenWebUI, course: Course
) -> None:
    """A user waiting out the settle pause lends its slot to the next user; coming back it
    used to queue behind every user not yet started, so nobody was reported, counted or
    written to the report before the whole roster had begun (at a term start of thousands,
    a run stopped at 95% reported nobody provisioned)."""
    for method in ("GET", "POST"):  # every answer takes a while, as a real server's does
        fake.slow(method, ".*", 0.01)
    rows = [UserRow(n + 2, f"s{n:03}@example.edu", None) for n in range(USERS)]
    signed_in = 0

    def count(call: object) -> None:
        nonlocal signed_in
        signed_in += getattr(call, "path", "").endswith("/auths/signin")

    fake.on_call = count
    finished: list[tuple[str, int]] = []

    def done(outcome: Outcome) -> None:
        finished.append((outcome.row.email, signed_in))

    failures = await run_bulk(
        provisioner, [course], rows, concurrency=2, emit=lambda _: None, on_user=done
    )

    assert failures == []
    assert len(finished) == USERS
    first_email, started_by_then = finished[0]
    assert started_by_then < USERS // 2, (
        f"the first user ({first_email}) finished only after {started_by_then} of {USERS} "
        "users had started"
    )


async def test_slots_bound_the_holders_and_serve_returning_holders_first() -> None:
    slots = Slots(1)
    order: list[str] = []
    await slots.acquire()

    async def newcomer(name: str) -> None:
        async with slots:
            order.append(name)

    async def returning() -> None:
        await slots.resume()
        order.append("returning")
        slots.release()

    waiting = [asyncio.ensure_future(newcomer("new-1")), asyncio.ensure_future(newcomer("new-2"))]
    await asyncio.sleep(0)
    back = asyncio.ensure_future(returning())
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*waiting, back)
    assert order == ["returning", "new-1", "new-2"]


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_gives_it_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.ensure_future(slots.acquire())
    second = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to ``first``...
    first.cancel()  # ...which is cancelled before it runs: ``second`` gets the slot
    await asyncio.sleep(0)
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
