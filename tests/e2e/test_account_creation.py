"""Account creation through the public listener is refused, against the real OpenWebUI.

With sign-ups on (an admin turned them on; on old releases operators must), OpenWebUI's
password sign-up creates any account it is asked for. Through the proxy a signed-in user
could so create an account for someone else's email, with a password of their choosing,
that the victim later lands in. The control shows the endpoint really creates accounts when
reached directly; through the proxy, no spelling gets there.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import (
    find_user,
    fresh_email,
    operator_headers,
    owui_url,
    sign_in_through_proxy,
)

pytestmark = pytest.mark.e2e

SPELLINGS = [
    "/api/v1/auths/signup",
    "/api/v1/auths/signup/",
    "/api/v1/auths/%73ignup",
    "/api/v1/chats/../auths/signup",
    "/API/v1/auths/signup",
]


@pytest.fixture
def signups_on(gate: Stack) -> Iterator[None]:
    """OpenWebUI with ENABLE_SIGNUP on, as an admin can set it; restored afterwards."""
    url = f"{owui_url(gate)}/api/v1/auths/admin/config"
    before = httpx.get(url, headers=operator_headers(gate), timeout=30).json()
    response = httpx.post(
        url, headers=operator_headers(gate), json={**before, "ENABLE_SIGNUP": True}, timeout=30
    )
    response.raise_for_status()
    try:
        yield
    finally:
        httpx.post(url, headers=operator_headers(gate), json=before, timeout=30).raise_for_status()


def test_sign_up_through_the_proxy_never_creates_an_account(gate: Stack, signups_on) -> None:
    attacker = fresh_email("attacker")
    victim = fresh_email("victim")
    with sign_in_through_proxy(gate, attacker) as client:
        for target in SPELLINGS:
            form = {"name": "Victim", "email": victim, "password": "chosen-by-attacker-1"}
            response = client.post(target, json=form)
            assert response.status_code == 403, (target, response.status_code)
    assert find_user(gate, victim) is None

    # The control: the same request, straight to OpenWebUI, does create the account.
    direct = httpx.post(
        f"{owui_url(gate)}/api/v1/auths/signup",
        json={"name": "Control", "email": (control := fresh_email("control")), "password": "x-1"},
        timeout=30,
    )
    assert direct.status_code == 200, direct.text[:300]
    assert find_user(gate, control) is not None


def test_adding_users_through_the_proxy_is_refused_even_for_an_admin_token(gate: Stack) -> None:
    victim = fresh_email("added")
    with sign_in_through_proxy(gate, fresh_email("student")) as client:
        response = client.post(
            "/api/v1/auths/add",
            headers=operator_headers(gate),
            json={"name": "Added", "email": victim, "password": "pw-1", "role": "user"},
        )
    assert response.status_code == 403
    assert find_user(gate, victim) is None


# What OpenWebUI's server reads as sign-up (httptools ends the path at "#"), each written byte
# for byte: an HTTP client would drop the fragment before sending.
FRAGMENT_SPELLINGS = [
    "/api/v1/auths/signup#x",
    "/api/v1/auths/sign%75p#x",
    "/api/v1/auths/signup#/../../chats/new",
]


def _raw_post(base_url: str, target: str, cookie: str, form: dict[str, str]) -> int:
    """One POST written byte for byte on a socket; its status."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    body = json.dumps(form).encode()
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        f"Cookie: {cookie}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1") + body)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        response.read()
        return response.status


@pytest.mark.parametrize("target", FRAGMENT_SPELLINGS)
def test_a_fragment_does_not_get_sign_up_past_the_proxy(
    gate: Stack, signups_on: None, target: str
) -> None:
    """The attack run's bypass: the proxy read the fragment as part of the path, OpenWebUI
    does not. The control shows OpenWebUI routes this very request to sign-up."""
    control = fresh_email("fragment-control")
    form = {"name": "Control", "email": control, "password": "chosen-1"}
    assert _raw_post(owui_url(gate), target, "", form) == 200
    assert find_user(gate, control) is not None

    victim = fresh_email("fragment-victim")
    with sign_in_through_proxy(gate, fresh_email("fragment-attacker")) as client:
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    form = {"name": "Victim", "email": victim, "password": "chosen-by-attacker-1"}
    assert _raw_post(gate.public_url, target, cookie, form) in (400, 403)
    assert find_user(gate, victim) is None
