"""A relayed WebSocket does not outlive the sign-in it was admitted with.

A WebSocket is authenticated once, at its upgrade. Socket.IO keeps it busy (a ping every
25 s), so the idle timeout never ends it: before this bound, a socket opened while signed in
stayed open, and usable (Socket.IO events, a terminal), for as long as the tab did, hours
after the person was signed out, their session revoked at the identity provider or their
JWT expired. Now every relayed WebSocket is closed (1001, going away) once its lifetime
(``OWUI_PROXY_WEBSOCKET_MAX_LIFETIME_S``, 900 s) is over, busy or not; the client
reconnects, and that new upgrade is authenticated again, with whatever the browser holds
then.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType

from proxy.settings import Settings
from tests.proxy.conftest import ALICE_COOKIE

LIFETIME_S = 1.0


async def test_a_busy_websocket_is_closed_when_its_lifetime_is_over(
    make_proxy, fake_upstream, fake_auth
) -> None:
    client = await make_proxy(websocket_max_lifetime_s=LIFETIME_S)
    started = time.monotonic()
    async with client.ws_connect("/ws", headers=ALICE_COOKIE) as ws:
        # Alice's session is revoked at the auth service while her socket is open.
        fake_auth.users = {}
        closed = None
        # Busy all along (never idle): one message every 0.1 s, each echoed.
        while time.monotonic() - started < LIFETIME_S + 5:
            try:
                await ws.send_str("still here")
            except ConnectionResetError:  # the close came in while we slept: read it
                msg = await ws.receive(timeout=5)
                closed = msg.data if msg.type == WSMsgType.CLOSE else ws.close_code
                break
            msg = await ws.receive(timeout=5)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                closed = ws.close_code if msg.type != WSMsgType.CLOSE else msg.data
                break
            await asyncio.sleep(0.1)
        assert closed is not None, "the WebSocket outlived its lifetime"
        assert closed == 1001
    assert time.monotonic() - started < LIFETIME_S + 3
    for _ in range(100):
        if fake_upstream.ws_closed_with is not None:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.ws_closed_with == 1001  # the upstream's leg ends too
    # The reconnect is authenticated again: the revoked session gets no socket.
    response = await client.get(
        "/ws",
        headers={
            **ALICE_COOKIE,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert response.status == 401


async def test_a_websocket_within_its_lifetime_is_left_open(make_proxy, fake_upstream) -> None:
    client = await make_proxy(websocket_max_lifetime_s=30.0)
    async with client.ws_connect("/ws", headers=ALICE_COOKIE) as ws:
        for _ in range(3):
            await ws.send_str("hello")
            msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.TEXT
        await ws.close()
    for _ in range(100):
        if fake_upstream.ws_closed_with is not None:
            break
        await asyncio.sleep(0.05)
    assert fake_upstream.ws_closed_with == 1000


def test_each_socket_lives_90_to_100_percent_of_the_lifetime_given() -> None:
    """The setting's value, its default too, as the public listener passes it."""
    from proxy.websocket import _lifetime

    assert 90.0 <= _lifetime(100.0) <= 100.0
    default = Settings.model_fields["websocket_max_lifetime_s"].default
    assert 0.9 * default <= _lifetime(default) <= default
