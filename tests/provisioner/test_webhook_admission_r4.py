"""The webhook receiver's admission (round 4): one lock per person, returning people first,
and a slot never handed out twice when a deadline ends a wait."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.webhook import Admission, create_app
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, headers


def _body(email: str) -> bytes:
    return json.dumps({"email": email, "name": None}).encode()


async def test_a_person_s_lock_is_made_once_however_many_deliveries_name_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = 0
    real_lock = asyncio.Lock

    def counting_lock() -> asyncio.Lock:
        nonlocal made
        made += 1
        return real_lock()

    admission = Admission(concurrency=1, queue=10)
    monkeypatch.setattr(asyncio, "Lock", counting_lock)
    release = asyncio.Event()

    async def deliver() -> None:
        async with admission.person("ada@example.edu"):
            await release.wait()

    tasks = [asyncio.create_task(deliver()) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    assert made == 1
    assert admission._people == {}


async def test_a_person_back_from_the_settle_pause_goes_before_deliveries_not_started(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    """With a first-come semaphore the first person, back from the pause, queued behind
    every delivery waiting: under a full queue people whose threads were made ran out of
    their deadline (a 503 after the work) while fresh deliveries started."""
    fake.slow("POST", "/api/v1/auths/signin", 0.03)  # longer than the settle pause here
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=60, clock=lambda: NOW, concurrency=1)
    )
    people = [f"p{n}@example.edu" for n in range(8)]

    async def deliver(person: str) -> int:
        body = _body(person)
        answer = await client.post(
            "/webhooks/signup", data=body, headers=headers(body, msg_id=f"msg_{person[:2]}")
        )
        return int(answer.status)

    statuses = await asyncio.gather(*(deliver(p) for p in people))
    assert statuses == [200] * len(people)
    order = [(c.act_as, c.path) for c in fake.calls if c.act_as is not None]
    first_done = len(order) - 1 - order[::-1].index((people[0], "/api/v1/chats/all"))
    last_signin = order.index((people[-1], "/api/v1/auths/signin"))
    assert first_done < last_signin, "the first person finished only after everyone started"
