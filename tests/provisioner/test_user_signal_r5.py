"""``owui-provision user`` stopped during a first sign-in lets that sign-in finish (round 5).

``asyncio.run`` cancels every task left when the command's coroutine ends, the shielded
sign-in included, and SIGTERM's default action ends the process at once: either way the
connection to the internal listener closed in the middle of ``POST /auths/signin``. Against
OpenWebUI 0.12.4 a first sign-in cut there can leave the user row without its credentials,
an account OpenWebUI then refuses for ever. ``bulk`` and the receiver waited for it
(``settle()``); ``user`` did not.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.settings import Settings
from tests.provisioner import cli_helpers
from tests.provisioner.conftest import SERVICE_TOKEN
from tests.provisioner.fake_owui import FakeOpenWebUI

SIGNIN = "/api/v1/auths/signin"


def slow_signins(seconds: float) -> tuple[Any, list[str]]:
    """Make a sign-in take ``seconds``; record whether its caller was still there to hear it."""
    ended: list[str] = []

    @web.middleware
    async def slow_signin(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != SIGNIN:
            response: web.StreamResponse = await handler(request)
            return response
        try:
            await asyncio.sleep(seconds)  # the account's writes, in OpenWebUI
        except asyncio.CancelledError:  # the server cancels a handler whose client left
            ended.append("cut short")
            raise
        gone = request.transport is None or request.transport.is_closing()
        ended.append("cut short" if gone else "completed")
        response = await handler(request)
        return response

    return slow_signin, ended


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_user_stopped_during_a_first_sign_in_lets_it_finish(
    fake: FakeOpenWebUI,
    aiohttp_server: Any,
    token_file: Path,
    course_file: Path,
    env: dict[str, str],
    signum: signal.Signals,
) -> None:
    slow_signin, ended = slow_signins(1.5)
    app = fake.app()
    app.middlewares.insert(1, slow_signin)  # after the fake records the call
    server = await aiohttp_server(app, host="127.0.0.1")
    env = dict(env, OWUI_PROVISION_URL=f"http://127.0.0.1:{server.port}")
    process = await cli_helpers.start(env, "user", str(course_file), "ada@example.edu")
    for _ in range(300):
        if fake.count("POST", SIGNIN):
            break
        await asyncio.sleep(0.02)
    if fake.count("POST", SIGNIN) != 1:
        process.kill()
        pytest.fail(f"no sign-in: {(await cli_helpers.finish(process, 30)).err}")
    await asyncio.sleep(0.2)
    process.send_signal(signum)
    result = await cli_helpers.finish(process, 30)
    for _ in range(200):
        if ended:
            break
        await asyncio.sleep(0.02)
    assert ended == ["completed"], result.err
    assert result.rc == 128 + signum
    assert "Traceback" not in result.err
    assert fake.chats_of("ada@example.edu") == []  # stopped before any thread was made


async def test_every_sign_in_runs_on_when_its_caller_is_cancelled(
    fake: FakeOpenWebUI, aiohttp_server: Any, settings: Settings
) -> None:
    """The class, not only ``user``: ``status``, ``remove`` and ``--dry-run`` sign in the
    lookup account (created by its first sign-in) straight through :class:`OpenWebUI`."""
    slow_signin, ended = slow_signins(0.5)
    app = fake.app()
    app.middlewares.insert(1, slow_signin)
    server = await aiohttp_server(app, host="127.0.0.1")
    settings = settings.model_copy(update={"url": f"http://127.0.0.1:{server.port}"})
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await api.signin("lookup@example.edu", "owui-provision lookup")
        with pytest.raises(TimeoutError):  # a second caller joins the same call
            async with asyncio.timeout(0.1):
                await api.signin("lookup@example.edu", "owui-provision lookup")
        await api.settle()
    assert ended == ["completed"]
    assert fake.count("POST", SIGNIN) == 1
