"""Account creation through the public listener is refused, against the real OpenWebUI.

With sign-ups on (an admin turned them on; on old releases operators must), OpenWebUI's
password sign-up creates any account it is asked for. Through the proxy a signed-in user
could so create an account for someone else's email, with a password of their choosing,
that the victim later lands in. The control shows the endpoint really creates accounts when
reached directly; through the proxy, no spelling gets there.
"""

from __future__ import annotations

from collections.abc import Iterator

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
