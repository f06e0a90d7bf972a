"""A sign-in is never cut short by its caller's cancellation (round 4).

Reproduced against OpenWebUI 0.12.4 behind the proxy: 300 webhook deliveries in one second;
deliveries that got their slot late in their 12 s deadline were cancelled in the middle of
the first sign-in (the proxy logged 499 ``cancelled`` and cancelled its upstream call), and
OpenWebUI kept the user row without its credentials: every later sign-in of those 3 people
was 400 "email or password incorrect" (AccountCannotSignIn), for good, until an admin
deletes the account. The caller now leaves at once; the sign-in itself runs on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from provisioner.client import OpenWebUI, UserSession
from provisioner.course import Course
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.slots import Slots

CONFIG = {"features": {"auth_trusted_header": True}, "onboarding": False, "version": "0.12.4"}


class SlowSignin(OpenWebUI):
    """Answers the config at once; a sign-in takes ``seconds`` and says how it ended."""

    def __init__(self, api: OpenWebUI, seconds: float) -> None:
        super().__init__(api.transport)
        self.seconds = seconds
        self.ended: list[str] = []
        self.calls = 0

    async def config(self) -> dict[str, Any]:
        return dict(CONFIG)

    async def signin(self, email: str, name: str | None) -> UserSession:
        self.calls += 1
        try:
            await asyncio.sleep(self.seconds)  # the account's writes, in OpenWebUI
        except asyncio.CancelledError:
            self.ended.append("cut short")
            raise
        self.ended.append("completed")
        return UserSession(self.transport, email=email, user_id="u1", role="pending", token="t")


async def test_a_deadline_during_the_sign_in_does_not_cut_it_short(
    provisioner: Provisioner, settings: Settings, course: Course
) -> None:
    api = SlowSignin(provisioner.api, 0.3)
    slow = Provisioner(api, settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slow.provision_user([course], "ada@example.edu")
    assert loop.time() - started < 0.2  # the caller still leaves at its deadline
    assert api.ended == []
    await slow.settle()
    assert api.ended == ["completed"]


async def test_the_next_delivery_for_that_email_joins_the_sign_in_under_way(
    provisioner: Provisioner, settings: Settings, course: Course
) -> None:
    """Two sign-ins of one new email at once can collide in OpenWebUI (a half-made account,
    as a cut one): the redelivery after a deadline waits for the first instead."""
    api = SlowSignin(provisioner.api, 0.3)
    slow = Provisioner(api, settings)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slow.provision_user([course], "ada@example.edu")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slow.provision_user([course], "ada@example.edu")
    await slow.settle()
    assert api.calls == 1
    assert api.ended == ["completed"]


async def test_a_sign_in_left_running_keeps_its_slot_until_it_ends(
    provisioner: Provisioner, settings: Settings, course: Course
) -> None:
    """The caller leaves, but its call still runs at OpenWebUI: it still counts towards
    ``concurrency``, or a storm of deadlines would pile sign-ins up without bound."""
    api = SlowSignin(provisioner.api, 0.3)
    slow = Provisioner(api, settings)
    gate = Slots(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), gate.lease() as lease:
            await slow.provision_user([course], "ada@example.edu", slot=lease)
    next_in = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0.1)
    assert not next_in.done(), "a slot was free while the sign-in still ran"
    await slow.settle()
    await asyncio.wait_for(next_in, 1)
    assert api.ended == ["completed"]
