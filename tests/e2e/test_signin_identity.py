"""A proxy whose email header is not the one OpenWebUI trusts, against a real OpenWebUI 0.12.4.

A gate of the module's own (``private_gate``) injects ``X-Gate-Email`` while the session's
real OpenWebUI trusts ``X-User-Email`` (the operator changed one setting and not the other).
The proxy strips only the names it is configured with, so a header the client sends,
``X-User-Email: <someone else>``, reaches OpenWebUI and chooses the account its sign-in
answers with. The test first shows the real OpenWebUI does exactly that (directly), then that
through the proxy that answer, the other person's token, never reaches the client: a 502
naming ``signin_identity_mismatch``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from demo import openwebui
from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS, fresh_email, idp_login, owui_url
from tests.e2e.private_gate import private_gate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gate(stack: Stack) -> Iterator[Stack]:
    settings = {"OWUI_PROXY_EMAIL_HEADER": "X-Gate-Email"}
    with private_gate(
        stack, ARTIFACTS / "mismatched-gate", proxy_env=settings, webhook=False
    ) as own:
        yield own


def test_openwebui_signs_in_whoever_its_own_header_names(stack: Stack) -> None:
    victim = fresh_email("victim")
    direct = httpx.post(
        f"{owui_url(stack)}/api/v1/auths/signin",
        headers={openwebui.EMAIL_HEADER: victim, "X-Gate-Email": fresh_email("mallory")},
        json={"email": "", "password": ""},
        timeout=30,
    )
    assert direct.status_code == 200, direct.text[:300]
    assert direct.json()["email"] == victim  # the header it trusts, not the proxy's


def test_through_the_proxy_another_account_s_sign_in_never_reaches_the_client(
    gate: Stack,
) -> None:
    mallory, victim = fresh_email("mallory"), fresh_email("victim")
    cookies = idp_login(gate, mallory)
    with httpx.Client(base_url=gate.public_url, cookies=cookies, timeout=60) as client:
        response = client.post(
            "/api/v1/auths/signin",
            headers={openwebui.EMAIL_HEADER: victim},
            json={"email": "", "password": ""},
        )
        assert response.status_code == 502, response.text[:300]
        assert response.json()["code"] == "signin_identity_mismatch"
        assert "token" not in response.cookies
        assert "token" not in response.json()
