"""Two facts the edge relies on: the target's route is lower-case, so the Socket.IO path
test on it is a substring test, and the account-creation prefix test never misses an
account-creation path."""

from __future__ import annotations

import pytest

from proxy import browser, socketio
from proxy.target import read_target

TARGETS = [
    "/",
    "/ws/socket.io/?EIO=4&transport=polling",
    "/WS/Socket.IO/",
    "/ws/SOCKET.io",
    "/x/%53ocket.io/",
    "//ws//socket.io//",
    "/ws/socket.io/../x",
    "/api/v1/auths/signup",
    "/API/v1/auths/SignUp/",
    "/api//v1/auths/add",
    "/oauth/clients/x",
    "/oauth/google/login",
    "/api/v1/scim/Users",
    "/api/v1/chats/list?page=1",
    "/a%2Fsocket.io",
    "*",
    "http://host/ws/socket.io/",
]


@pytest.mark.parametrize("raw", TARGETS)
def test_the_route_is_lower_case_so_the_socketio_test_is_a_substring_test(raw: str) -> None:
    target = read_target(raw)
    assert target.route == target.route.lower()
    assert ("socket.io" in target.route) is socketio.is_socketio_path(target.route)


@pytest.mark.parametrize("raw", TARGETS)
def test_the_prefix_test_never_misses_an_account_creation(raw: str) -> None:
    target = read_target(raw)
    inlined = (
        browser.account_creation(target)
        if (target.route + "/").startswith(browser.ACCOUNT_CREATION_PREFIXES)
        else None
    )
    assert inlined == browser.account_creation(target)
