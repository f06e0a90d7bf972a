"""Term start in a few seconds (round 4): a burst of deliveries, some of them twice, a queue
too short for all, the refused ones redelivered after their Retry-After (shortened here).

In the end everyone has exactly one archived thread per module, every 503 said when to
come back (409 and 503 alike), no more than ``concurrency`` calls reached OpenWebUI at
once, and the receiver has no delivery left running.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.threads import MARKER_KEY
from provisioner.webhook import Deliveries, create_app
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, headers

PEOPLE = 120


async def test_a_term_start_burst_ends_with_one_thread_each_and_nothing_held(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.fail("POST", "/api/v1/chats/new", 503, times=5, headers={"Retry-After": "0"})
    fake.fail("GET", "/api/v1/chats/all", 429, times=5, headers={"Retry-After": "0"})
    deliveries = Deliveries(clock=lambda: NOW)
    app = create_app(
        [course],
        (KEY,),
        provisioner,
        deadline_s=30,
        clock=lambda: NOW,
        deliveries=deliveries,
        concurrency=4,
        queue=24,
    )
    client = await aiohttp_client(app)
    people = [f"t{n}@example.edu" for n in range(PEOPLE)]
    rng = random.Random(4)
    jobs = [(p, f"msg_{p[:-12]}") for p in people]
    jobs += [(p, m) for p, m in rng.sample(jobs, PEOPLE // 20)]  # the same delivery twice
    jobs += [(p, m + "_seen") for p, m in rng.sample(jobs[:PEOPLE], PEOPLE // 20)]
    rng.shuffle(jobs)
    refusals: list[str | None] = []

    async def deliver(person: str, msg_id: str) -> None:
        body = json.dumps({"email": person, "name": None}).encode()
        for _ in range(200):
            answer = await client.post(
                "/webhooks/signup", data=body, headers=headers(body, msg_id=msg_id)
            )
            if answer.status == 200:
                return
            assert answer.status in (409, 503), await answer.text()
            refusals.append(answer.headers.get("Retry-After"))
            await asyncio.sleep(0.02 + rng.random() * 0.05)
        raise AssertionError(f"{person} ({msg_id}) never answered 200")

    await asyncio.wait_for(asyncio.gather(*(deliver(p, m) for p, m in jobs)), 60)

    assert refusals, "the queue of 24 never filled: the burst tested nothing"
    assert all(value is not None and value.isdigit() for value in refusals)
    for person in people:
        modules = sorted(
            chat.chat[MARKER_KEY]["module"] for chat in fake.chats_of(person) if chat.archived
        )
        assert modules == ["intro", "next"], person
        assert len(fake.chats_of(person)) == 2, person
    assert fake.peak_in_flight <= 4
    assert deliveries._running == set()
