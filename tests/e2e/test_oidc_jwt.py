"""JWT mode against a real OpenID Provider: its ID tokens, its JWKS, its key rotation.

npm ``oidc-provider`` issues ID tokens through a real authorization-code flow (its login and
consent forms, driven with httpx); the proxy (``auth=jwt``) verifies them against the JWKS
named by the provider's discovery document and signs the user in to the real OpenWebUI.
Then the provider rotates its signing key (restarted publishing only a new one): a token
with the new ``kid`` makes the proxy refetch and is accepted; a token signed with the
withdrawn key is refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from demo.stack import Stack
from tests.deploy.edge import Proxy, free_port
from tests.e2e.conftest import ARTIFACTS, fresh_email, owui_url
from tests.e2e.oidc.chain import CLIENT_ID, OidcProvider, User, code_flow_tokens

pytestmark = [pytest.mark.e2e]

TOKEN_HEADER = "X-Oidc-Id-Token"
REDIRECT_URI = "https://owui.test/oauth2/callback"  # registered; the flow stops before it


@dataclass
class JwtGate:
    provider: OidcProvider
    proxy: Proxy
    url: str
    users: tuple[User, ...]

    def id_token(self, user: User) -> str:
        return str(code_flow_tokens(self.provider, user.email, REDIRECT_URI)["id_token"])

    def sign_in(self, token: str | None) -> httpx.Response:
        headers = {TOKEN_HEADER: token} if token is not None else {}
        return httpx.post(
            f"{self.url}/api/v1/auths/signin",
            json={"email": "", "password": ""},
            headers=headers,
            timeout=60,
        )


@pytest.fixture(scope="module")
def jwt_gate(stack: Stack) -> Iterator[JwtGate]:
    state = ARTIFACTS / "oidc-jwt"
    state.mkdir(parents=True, exist_ok=True)
    users = (
        User(fresh_email("oidc-jwt"), "Jay Doubleyou", ("students",)),
        User(fresh_email("oidc-jwt2"), "Kay Rotated", ("students",)),
    )
    provider = OidcProvider(state, users, [REDIRECT_URI], [])
    provider.start()
    public, admin = free_port(), free_port()
    proxy = Proxy(
        {
            "OWUI_PROXY_UPSTREAM": owui_url(stack),
            "OWUI_PROXY_LISTEN": f"127.0.0.1:{public}",
            "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "OWUI_PROXY_AUTH": "jwt",
            "OWUI_PROXY_JWT_SOURCE": f"header:{TOKEN_HEADER}",
            "OWUI_PROXY_JWT_JWKS_URL": provider.discovery()["jwks_uri"],
            "OWUI_PROXY_JWT_ISSUER": provider.issuer,
            "OWUI_PROXY_JWT_AUDIENCE": CLIENT_ID,
            "OWUI_PROXY_JWT_ALGORITHMS": "RS256",
            "OWUI_PROXY_JWT_REQUIRE_EMAIL_VERIFIED": "true",
            # Only an unknown kid may explain a refetch during the test, never the timer.
            "OWUI_PROXY_JWT_JWKS_REFRESH_S": "3600",
            "OWUI_PROXY_JWT_JWKS_MIN_REFETCH_S": "1",
            "OWUI_PROXY_SHUTDOWN_GRACE_S": "2",
        },
        state / "proxy.log",
    )
    try:
        proxy.start(("127.0.0.1", public))
        yield JwtGate(provider, proxy, f"http://127.0.0.1:{public}", users)
    finally:
        proxy.stop()
        provider.stop()


def test_provider_id_token_signs_the_user_in(jwt_gate: JwtGate) -> None:
    """An ID token from the provider's code flow is the user's identity in OpenWebUI."""
    user = jwt_gate.users[0]
    token = jwt_gate.id_token(user)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == jwt_gate.provider.kids[0]  # signed by the provider's key
    response = jwt_gate.sign_in(token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["email"], body["name"], body["role"]) == (user.email, user.name, "user")
    # OpenWebUI's own session check, through the proxy with the same identity.
    me = httpx.get(
        f"{jwt_gate.url}/api/v1/auths/",
        headers={TOKEN_HEADER: token, "Authorization": f"Bearer {body['token']}"},
        timeout=30,
    )
    assert me.status_code == 200, me.text
    assert me.json()["email"] == user.email


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no-token"),
        pytest.param("not-a-jwt", id="garbage"),
    ],
)
def test_without_a_valid_token_nothing_reaches_openwebui(
    jwt_gate: JwtGate, token: str | None
) -> None:
    assert jwt_gate.sign_in(token).status_code == 401


def test_tampered_token_is_refused(jwt_gate: JwtGate) -> None:
    """The provider's signature is checked: the same token claiming another email fails."""
    token = jwt_gate.id_token(jwt_gate.users[0])
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["email"] = "operator@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = jwt_gate.sign_in(f"{head}.{forged}.{signature}")
    assert response.status_code == 401


def test_key_rotation_by_the_provider(jwt_gate: JwtGate) -> None:
    """New kid: refetched and accepted. Withdrawn key: refused, though not expired."""
    user = jwt_gate.users[1]
    old_token = jwt_gate.id_token(user)
    assert jwt_gate.sign_in(old_token).status_code == 200
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    jwt_gate.provider.rotate("key-2")
    new_token = jwt_gate.id_token(user)
    assert jwt.get_unverified_header(new_token)["kid"] == "key-2" != old_kid
    response = jwt_gate.sign_in(new_token)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == user.email
    log = Path(jwt_gate.proxy.log).read_text(encoding="utf-8")
    assert "jwks_keys_changed" in log  # the proxy refetched on the unknown kid

    # The old token is still within its lifetime; only its key is gone from the JWKS.
    assert jwt.decode(old_token, options={"verify_signature": False})["email"] == user.email
    assert jwt_gate.sign_in(old_token).status_code == 401
