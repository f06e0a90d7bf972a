"""A storm of signup deliveries (term start): bounded work at OpenWebUI, no duplicated work.

Every delivery used to start its own provisioning at once, however many arrived: a
thousand signups meant a thousand users signing in and creating chats together at
OpenWebUI, and two deliveries naming one person (Clerk's ``user.created`` and the proxy's
``user.seen``) provisioned that person twice at once, each creating threads the other then
had to delete.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.webhook import create_app
from tests.holding import held_elsewhere
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, headers


def _body(email: str) -> bytes:
    return json.dumps({"email": email, "name": None}).encode()


async def _sign_up_at_once(client: Any, people: list[str]) -> list[Any]:
    """One signup delivery per person, all at once (message id: the email's local part)."""
    return await asyncio.gather(
        *(
            client.post(
                "/webhooks/signup",
                data=_body(p),
                headers=headers(_body(p), msg_id=f"msg_{p.split('@')[0]}"),
            )
            for p in people
        )
    )


async def test_a_storm_of_signups_reaches_openwebui_a_few_people_at_a_time(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/auths/signin", 0.05)
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=60, clock=lambda: NOW, concurrency=3)
    )
    people = [f"s{n}@example.edu" for n in range(24)]
    answers = await _sign_up_at_once(client, people)
    assert [a.status for a in answers] == [200] * len(people)
    assert fake.peak_in_flight <= 3
    for person in people:
        assert len(fake.chats_of(person)) == 2


async def test_more_waiting_than_the_queue_holds_is_503_with_retry_after(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/auths/signin", 0.3)
    client = await aiohttp_client(
        create_app(
            [course],
            (KEY,),
            provisioner,
            deadline_s=60,
            clock=lambda: NOW,
            concurrency=1,
            queue=2,
        )
    )
    people = [f"q{n}@example.edu" for n in range(6)]
    answers = await _sign_up_at_once(client, people)
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 200, 200, 503, 503, 503]
    for answer in answers:
        if answer.status == 503:
            assert answer.headers["Retry-After"].isdigit()
            assert "busy" in (await answer.json())["error"]
    metrics = await (await client.get("/metrics")).text()
    assert 'owui_provision_webhook_deliveries_total{outcome="busy"} 3.0' in metrics


async def test_two_deliveries_naming_one_person_provision_them_once(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.gate("POST", "/api/v1/auths/signin", arrivals=2, timeout_s=1.0)
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=60, clock=lambda: NOW)
    )
    body = _body("ada@example.edu")
    first, second = await asyncio.gather(
        client.post("/webhooks/signup", data=body, headers=headers(body, msg_id="msg_clerk")),
        client.post("/webhooks/signup", data=body, headers=headers(body, msg_id="msg_seen")),
    )
    assert (first.status, second.status) == (200, 200)
    assert fake.count("POST", "/api/v1/chats/new") == 2  # one per module, not two
    assert fake.count("DELETE", "/api/v1/chats/.*") == 0
    assert len(fake.chats_of("ada@example.edu")) == 2


async def test_a_delivery_that_runs_out_of_time_waiting_leaves_nothing_held() -> None:
    from provisioner.webhook import Admission

    admission = Admission(concurrency=1, queue=1)
    async with held_elsewhere(admission.person("ada@example.edu")):  # ada's first delivery
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05), admission.person("ada@example.edu"):
                pass  # never reached: ada's first delivery still runs
    assert admission.admitted == 0
    assert admission._people == {}
