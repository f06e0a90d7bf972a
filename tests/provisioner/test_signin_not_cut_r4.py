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

CONFIG = {"features": {"auth_trusted_header": True}, "onboarding": False, "version": "0.12.4"}


class SlowSignin(OpenWebUI):
    """Answers the config at once; a sign-in takes ``seconds`` and says how it ended."""

    def __init__(self, api: OpenWebUI, seconds: float) -> None:
        super().__init__(api.transport)
        self.seconds = seconds
        self.ended: list[str] = []

    async def config(self) -> dict[str, Any]:
        return dict(CONFIG)

    async def signin(self, email: str, name: str | None) -> UserSession:
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
