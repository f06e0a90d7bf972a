"""A slot lent out during the settle pause (round 4): when the holder is cancelled while
waiting to get it back (the webhook's deadline), it leaves without it and must not give it
back as well, or one more person than ``concurrency`` makes calls at once."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.provision import Provisioner
from provisioner.webhook import Admission


async def test_a_deadline_while_waiting_to_come_back_from_the_pause_hands_out_no_extra_slot(
    provisioner: Provisioner,
) -> None:
    """A person lends their slot out during the settle pause; if their deadline passes
    while they wait to get it back, they leave without it, and must not give it back as
    well: that let a third delivery in beside the one holding the only slot."""
    admission = Admission(concurrency=1, queue=10)
    b_in, b_done, c_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with asyncio.timeout(0.2), admission.person("a@example.edu") as slot:
            await provisioner._pause(0.01, slot)  # lends the slot to b, then waits for it

    async def b() -> None:
        async with admission.person("b@example.edu"):
            b_in.set()
            await b_done.wait()

    async def c() -> None:
        async with admission.person("c@example.edu"):
            c_in.set()

    first = asyncio.create_task(a())
    await asyncio.sleep(0)  # a holds the slot
    second = asyncio.create_task(b())
    await b_in.wait()  # a lent it to b
    with pytest.raises(TimeoutError):
        await first  # a's deadline passed while b held the slot
    third = asyncio.create_task(c())
    await asyncio.sleep(0.05)
    assert not c_in.is_set(), "c got in while b held the only slot"
    b_done.set()
    await asyncio.gather(second, third)
    assert c_in.is_set()
    assert admission.admitted == 0


async def test_bulk_s_slots_are_not_handed_out_twice_either(provisioner: Provisioner) -> None:
    from provisioner.slots import Slots

    gate = Slots(1)
    b_in, b_done, c_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with asyncio.timeout(0.2), gate.lease() as lease:
            await provisioner._pause(0.01, lease)

    async def b() -> None:
        async with gate.lease():
            b_in.set()
            await b_done.wait()

    async def c() -> None:
        async with gate.lease():
            c_in.set()

    first = asyncio.create_task(a())
    await asyncio.sleep(0)
    second = asyncio.create_task(b())
    await b_in.wait()
    with pytest.raises(TimeoutError):
        await first
    third = asyncio.create_task(c())
    await asyncio.sleep(0.05)
    assert not c_in.is_set(), "c got in while b held the only slot"
    b_done.set()
    await asyncio.gather(second, third)


async def test_a_deadline_during_the_pause_answers_at_once_without_waiting_for_a_slot(
    provisioner: Provisioner,
) -> None:
    """Cancelled while it sleeps out the pause, a person does not first wait for a slot to
    come free (the other holders may be sleeping out a 429's Retry-After) before leaving."""
    admission = Admission(concurrency=1, queue=10)
    b_in, b_done = asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with asyncio.timeout(0.1), admission.person("a@example.edu") as slot:
            await provisioner._pause(100.0, slot)  # server seconds: 1 s here

    async def b() -> None:
        async with admission.person("b@example.edu"):
            b_in.set()
            await b_done.wait()

    first = asyncio.create_task(a())
    await asyncio.sleep(0)
    second = asyncio.create_task(b())
    await b_in.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first, 2.0)  # b holds the slot for as long as it likes
    assert loop.time() - started < 0.5
    b_done.set()
    await second
    assert admission.admitted == 0
    assert admission.slot._free == 1
