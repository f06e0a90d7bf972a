"""The receiver answers busy at once when a delivery cannot finish within its deadline
(round 5).

Against the real OpenWebUI (about 4 people a second) a 256-deep queue cannot drain within
the 12 s deadline: most queued deliveries waited the whole deadline for a 503 (736 deadline
503s for 300 signups in round 4's storm), holding a connection each and telling the sender
nothing it could not have been told at once. :class:`Admission` now estimates, from the
deliveries it has seen, when a new one would finish (those waiting ahead of it times the slot
time a delivery holds / the slots, plus a delivery's own run time), and refuses it with
503 + Retry-After at once when that is past the deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from provisioner.course import Course
from provisioner.slots import Lease
from provisioner.webhook import create_app
from tests.provisioner.test_webhook import KEY, NOW, headers

RUN_S = 0.3
DEADLINE_S = 1.4


class SteadyProvisioner:
    """Provisions anyone in ``RUN_S``, holding its slot throughout."""

    def __init__(self) -> None:
        self.started = 0

    async def provision_user(
        self, courses: Any, email: str, name: str | None, *, slot: Lease | None = None
    ) -> list[Any]:
        self.started += 1
        await asyncio.sleep(RUN_S)
        return []


async def test_a_delivery_that_cannot_finish_in_time_is_refused_at_once(
    aiohttp_client: Any, course: Course
) -> None:
    provisioner = SteadyProvisioner()
    app = create_app(
        [course],
        (KEY,),
        provisioner,  # type: ignore[arg-type]
        deadline_s=DEADLINE_S,
        clock=lambda: NOW,
        concurrency=1,
        queue=64,
    )
    client = await aiohttp_client(app)
    loop = asyncio.get_running_loop()

    async def deliver(n: int) -> tuple[int, str, float, str | None]:
        body = json.dumps({"email": f"p{n}@example.edu", "name": None}).encode()
        started = loop.time()
        answer = await client.post(
            "/webhooks/signup", data=body, headers=headers(body, msg_id=f"msg_{n}")
        )
        text = (await answer.json()).get("error", "")
        return answer.status, text, loop.time() - started, answer.headers.get("Retry-After")

    for n in range(2):  # the receiver learns how long a delivery takes
        assert (await deliver(n))[0] == 200
    answers = await asyncio.gather(*(deliver(n) for n in range(2, 14)))
    done = [a for a in answers if a[0] == 200]
    busy = [a for a in answers if a[0] == 503 and "busy" in a[1]]
    late = [a for a in answers if a[0] == 503 and "too long" in a[1]]
    assert late == [], "deliveries waited out the whole deadline for a 503"
    assert len(done) >= 3  # the slot and a short queue are still used
    assert len(done) + len(busy) == len(answers)
    assert all(seconds < 0.3 for _, _, seconds, _ in busy), "busy was not answered at once"
    assert all(retry_after is not None for _, _, _, retry_after in busy)
    assert provisioner.started == 2 + len(done)


async def test_a_receiver_that_has_seen_nothing_yet_queues_as_before(
    aiohttp_client: Any, course: Course
) -> None:
    """No estimate yet (the first deliveries after a start): the queue's bound alone."""
    provisioner = SteadyProvisioner()
    app = create_app(
        [course],
        (KEY,),
        provisioner,  # type: ignore[arg-type]
        deadline_s=10,
        clock=lambda: NOW,
        concurrency=2,
        queue=64,
    )
    client = await aiohttp_client(app)

    async def deliver(n: int) -> int:
        body = json.dumps({"email": f"p{n}@example.edu", "name": None}).encode()
        answer = await client.post(
            "/webhooks/signup", data=body, headers=headers(body, msg_id=f"msg_{n}")
        )
        return int(answer.status)

    assert await asyncio.gather(*(deliver(n) for n in range(6))) == [200] * 6
