"""The webhook receiver's admission (round 4): one lock per person, returning people first,
and a slot never handed out twice when a deadline ends a wait."""

from __future__ import annotations

import asyncio
import json

import pytest

from provisioner.webhook import Admission


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
