"""Every 503 the receiver answers says when to come back (round 4).

Only the "busy" 503 carried ``Retry-After``; a delivery that ran out of its deadline, one
that OpenWebUI's state refused for now (a pending user) and one whose calls kept failing
(OpenWebUI down) were 503 without it, and so was the 409 of a replay still running.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.webhook import create_app
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, headers


def _body(email: str) -> bytes:
    return json.dumps({"email": email, "name": None}).encode()


async def _post(client: Any, email: str, msg_id: str = "msg_1") -> Any:
    body = _body(email)
    return await client.post("/webhooks/signup", data=body, headers=headers(body, msg_id=msg_id))


def _app(provisioner: Provisioner, course: Course, deadline_s: float = 60) -> Any:
    return create_app([course], (KEY,), provisioner, deadline_s=deadline_s, clock=lambda: NOW)


async def test_a_delivery_past_its_deadline_is_503_with_retry_after(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/auths/signin", 0.5)
    client = await aiohttp_client(_app(provisioner, course, deadline_s=0.1))
    answer = await _post(client, "ada@example.edu")
    assert answer.status == 503
    assert "too long" in (await answer.json())["error"]
    assert answer.headers["Retry-After"].isdigit()


async def test_openwebui_down_is_503_with_retry_after(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.fail("POST", "/api/v1/auths/signin", 502, times=100)
    client = await aiohttp_client(_app(provisioner, course))
    answer = await _post(client, "ada@example.edu")
    assert answer.status == 503
    assert answer.headers["Retry-After"].isdigit()


async def test_a_pending_user_is_503_with_retry_after(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.add_user("ada@example.edu", role="pending")
    client = await aiohttp_client(_app(provisioner, course))
    answer = await _post(client, "ada@example.edu")
    assert answer.status == 503
    assert answer.headers["Retry-After"].isdigit()


async def test_a_replay_still_running_is_409_with_retry_after(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.slow("POST", "/api/v1/auths/signin", 0.3)
    client = await aiohttp_client(_app(provisioner, course))
    first = asyncio.ensure_future(_post(client, "ada@example.edu"))
    await asyncio.sleep(0.1)
    replay = await _post(client, "ada@example.edu")
    assert replay.status == 409
    assert replay.headers["Retry-After"].isdigit()
    assert (await first).status == 200
