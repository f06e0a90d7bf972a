"""Every httpx error of a call becomes a provisioner error (round 4).

The transport caught httpx's timeouts and transport errors only; an answer whose body
could not be decoded (``Content-Encoding: gzip`` over a body that is not, or a compressed
body cut short) raised ``httpx.DecodingError`` straight through: the webhook receiver
answered 500 with a traceback in its log, and ``bulk`` died with one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioner.course import Course
from provisioner.errors import Unavailable
from provisioner.provision import Provisioner
from provisioner.webhook import create_app
from tests.provisioner.fake_owui import FakeOpenWebUI
from tests.provisioner.test_webhook import KEY, NOW, headers

GARBLED = {"Content-Encoding": "gzip"}  # over a plain JSON body


async def test_an_undecodable_answer_is_retried_then_unavailable(
    provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/v1/chats/all", 200, headers=GARBLED, times=100)
    with pytest.raises(Unavailable, match="chats/all"):
        await provisioner.provision_user([course], "ada@example.edu")


async def test_one_undecodable_answer_is_retried_and_provisioning_goes_on(
    provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/v1/chats/all", 200, headers=GARBLED, times=1)
    results = await provisioner.provision_user([course], "ada@example.edu")
    assert [r.status for r in results] == ["created", "created"]


async def test_the_webhook_answers_503_not_500(
    aiohttp_client: Any, provisioner: Provisioner, course: Course, fake: FakeOpenWebUI
) -> None:
    fake.fail("GET", "/api/v1/chats/all", 200, headers=GARBLED, times=100)
    client = await aiohttp_client(
        create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
    )
    body = json.dumps({"email": "ada@example.edu", "name": None}).encode()
    answer = await client.post("/webhooks/signup", data=body, headers=headers(body))
    assert answer.status == 503
    assert "chats/all" in (await answer.json())["error"]
