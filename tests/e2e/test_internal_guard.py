"""Sign-in through the internal listener against the real OpenWebUI: no admin token, ever."""

from __future__ import annotations

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import OPERATOR_EMAIL, fresh_email

pytestmark = pytest.mark.e2e

SIGNIN = {"email": "", "password": ""}


def signin(stack: Stack, email: str) -> httpx.Response:
    token = stack.service_token_file.read_text().strip()
    return httpx.post(
        f"{stack.internal_url}/api/v1/auths/signin",
        headers={"Proxy-Authorization": f"Bearer {token}", "X-User-Email": email},
        json=SIGNIN,
        timeout=30,
    )


def test_the_operator_admins_token_is_withheld(proxy: Stack) -> None:
    """A compromised service token must not yield the admin's OpenWebUI token."""
    response = signin(proxy, OPERATOR_EMAIL)
    assert response.status_code == 403
    assert "does not act as admin accounts" in response.json()["error"]
    assert "token" not in response.json()
    assert "token=" not in response.headers.get("set-cookie", "")


def test_an_ordinary_user_still_signs_in(proxy: Stack) -> None:
    email = fresh_email("guard")
    response = signin(proxy, email)
    assert response.status_code == 200
    body = response.json()
    assert (body["email"], body["role"]) == (email, "user")
    assert body["token"]
