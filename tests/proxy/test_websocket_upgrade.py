"""Which requests are WebSocket upgrades (RFC 6455 4.1): the handler's first reading."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy.websocket import is_websocket


@pytest.mark.parametrize(
    ("method", "headers", "upgrade"),
    [
        ("GET", [("Upgrade", "websocket"), ("Connection", "Upgrade")], True),
        ("GET", [("upgrade", "WebSocket"), ("connection", "keep-alive, upgrade")], True),
        ("GET", [("UPGRADE", "websocket"), ("CONNECTION", " Upgrade ,x")], True),
        ("GET", [("Upgrade", "websocket"), ("Connection", "keep-alive")], False),
        ("GET", [("Upgrade", "websocket")], False),
        ("GET", [("Connection", "Upgrade")], False),
        ("GET", [("Upgrade", "h2c"), ("Connection", "Upgrade")], False),
        ("GET", [("Upgrade", ""), ("Connection", "Upgrade")], False),
        ("GET", [("Upgrade", "websocket, h2c"), ("Connection", "Upgrade")], False),
        ("POST", [("Upgrade", "websocket"), ("Connection", "Upgrade")], False),
        ("GET", [], False),
        # The first of several values, as the multidict gives it.
        ("GET", [("Upgrade", "websocket"), ("Upgrade", "h2c"), ("Connection", "Upgrade")], True),
        ("GET", [("Upgrade", "h2c"), ("Upgrade", "websocket"), ("Connection", "Upgrade")], False),
    ],
)
def test_is_websocket(method: str, headers: list[tuple[str, str]], upgrade: bool) -> None:
    request = make_mocked_request(method, "/ws/socket.io/", headers=CIMultiDict(headers))
    assert is_websocket(request) is upgrade
