"""``OWUI_PROXY_ALLOW_API_KEYS=true`` against the real OpenWebUI.

The session's proxy runs with API keys off; this module starts a second ``owui-proxy`` with
them on (same OpenWebUI, same demo IdP for forward-auth), turns API keys on in OpenWebUI
(admin config ``ENABLE_API_KEYS`` and the default permission ``features.api_keys``, both
restored afterwards) and gives a fresh user V a real ``sk-`` key. It shows:

- V's key alone, no SSO session, reads V's chats through the API-key proxy; the shared proxy
  (keys off) refuses it with its own 401;
- V's OpenWebUI session JWT without an SSO session is refused by the API-key proxy;
- the review's attack: an ``Authorization`` OpenWebUI cannot parse (``\\xa0Bearer  sk-junk``
  and relatives) makes OpenWebUI fall back to ``x-api-key``, which carries V's session JWT;
  sent directly to OpenWebUI that returns V's chats (the control), through the proxy it is
  refused and nothing of V's comes back. ``Bearer sk-junk`` plus the JWT is relayed as a key
  and OpenWebUI refuses the junk key;
- a real key never opens ``/api/v1/auths/*`` (sign-up, who-am-I) or Socket.IO polling.

Requests whose header bytes matter are written byte for byte on a socket (``_raw``), so what
goes on the wire is exactly what the test says.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from demo import openwebui
from demo.stack import (
    Stack,
    StackError,
    child_environment,
    console_script,
    free_ports,
    http_ready,
    spawn,
)
from tests.e2e.conftest import (
    STAFF_GROUP,
    fail,
    find_user,
    fresh_email,
    operator_headers,
    owui_url,
    sign_in_through_proxy,
)

pytestmark = pytest.mark.e2e

CHATS = "/api/v1/chats/list"


@dataclass
class Victim:
    email: str
    id: str
    jwt: str  # V's OpenWebUI session token (what a thief would hold)
    api_key: str  # V's real sk- key
    chat_id: str
    chat_title: str

    def leaked_in(self, body: bytes) -> bool:
        text = body.decode("utf-8", "replace")
        return self.chat_id in text or self.chat_title in text


@dataclass
class ApiKeyProxy:
    url: str
    admin_url: str


def _raw(
    base_url: str,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (no client normalises anything)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    lines = [
        f"{method} {target} HTTP/1.1".encode("ascii"),
        f"Host: {parts.netloc}".encode("ascii"),
        b"Connection: close",
        *(name + b": " + value for name, value in headers),
    ]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}".encode("ascii"))
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.read()


def _from_proxy(status: int, body: bytes) -> bool:
    """The proxy's own error body (``{"error", "request_id"}``), not OpenWebUI's ``detail``."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return False
    return isinstance(decoded, dict) and "error" in decoded and "detail" not in decoded


def _round_trip(path: str, change: dict[str, Any], the_stack: Stack) -> dict[str, Any]:
    """GET an admin settings document, POST it back with ``change`` merged; return the old."""
    url = f"{owui_url(the_stack)}{path}"
    current = httpx.get(url, headers=operator_headers(the_stack), timeout=30)
    current.raise_for_status()
    old: dict[str, Any] = current.json()
    new = json.loads(json.dumps(old))
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        node = new
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    response = httpx.post(url, headers=operator_headers(the_stack), json=new, timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return old


@pytest.fixture(scope="module")
def api_keys_enabled(gate: Stack) -> Iterator[None]:
    """OpenWebUI with API keys on for users (as the harness's operator admin); then restored."""
    config = _round_trip("/api/v1/auths/admin/config", {"ENABLE_API_KEYS": True}, gate)
    permissions = _round_trip(
        "/api/v1/users/default/permissions", {"features.api_keys": True}, gate
    )
    yield
    for path, old in (
        ("/api/v1/users/default/permissions", permissions),
        ("/api/v1/auths/admin/config", config),
    ):
        httpx.post(
            f"{owui_url(gate)}{path}", headers=operator_headers(gate), json=old, timeout=30
        ).raise_for_status()


@pytest.fixture(scope="module")
def victim(gate: Stack, api_keys_enabled: None) -> Victim:
    """V, signed in directly at OpenWebUI: a chat of their own and a real API key."""
    email = fresh_email("key-victim")
    signed_in = openwebui.sign_in(owui_url(gate), email)
    jwt = str(signed_in["token"])
    title = f"V's private chat {secrets.token_hex(4)}"
    with httpx.Client(
        base_url=owui_url(gate),
        headers={"Authorization": f"Bearer {jwt}", "X-User-Email": email},
        timeout=30,
    ) as client:
        chat = {"title": title, "models": [], "messages": [],
                "history": {"messages": {}, "currentId": None}}  # fmt: skip
        created = client.post("/api/v1/chats/new", json={"chat": chat})
        assert created.status_code == 200, created.text
        key = client.post("/api/v1/auths/api_key")
        assert key.status_code == 200, key.text
    api_key = str(key.json()["api_key"])
    assert api_key.startswith("sk-")
    return Victim(email, str(signed_in["id"]), jwt, api_key, str(created.json()["id"]), title)


def _key_proxy(gate: Stack, label: str, **settings: str) -> Iterator[ApiKeyProxy]:
    """Another ``owui-proxy`` like the session's, with ``OWUI_PROXY_ALLOW_API_KEYS=true`` and
    ``settings`` (``OWUI_PROXY_`` + the upper-cased name)."""
    host = gate.config.host
    public, admin = free_ports(host, 2)
    url, admin_url = f"http://{host}:{public}", f"http://{host}:{admin}"
    env = child_environment(
        {
            "OWUI_PROXY_UPSTREAM": owui_url(gate),
            "OWUI_PROXY_LISTEN": f"{host}:{public}",
            "OWUI_PROXY_ADMIN_LISTEN": f"{host}:{admin}",
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{gate.idp_url}/oauth2/auth",
            "OWUI_PROXY_PUBLIC_URL": url,
            "OWUI_PROXY_ALLOW_API_KEYS": "true",
        }
        | {f"OWUI_PROXY_{name.upper()}": value for name, value in settings.items()}
    )
    try:
        service = spawn(
            label,
            f"owui-proxy with OWUI_PROXY_ALLOW_API_KEYS=true {settings}",
            [str(console_script("owui-proxy"))],
            env=env,
            url=url,
            log_path=gate.logs / f"proxy-{label.replace(' ', '-')}.log",
            ready=http_ready(f"{admin_url}/healthz", want=200),
        )
    except StackError as exc:
        fail(f"could not start the {label}: {exc}")
    yield ApiKeyProxy(url, admin_url)
    service.stop()  # SIGTERM to its process group, SIGKILL after a grace period


@pytest.fixture(scope="module")
def api_key_proxy(gate: Stack) -> Iterator[ApiKeyProxy]:
    yield from _key_proxy(gate, "api-key proxy")


@pytest.fixture(scope="module")
def school_only_proxy(gate: Stack) -> Iterator[ApiKeyProxy]:
    """API keys on, but only people of school.example admitted (V is @example.com)."""
    yield from _key_proxy(gate, "school-only proxy", allowed_email_domains="school.example")


@pytest.fixture(scope="module")
def staff_only_proxy(gate: Stack) -> Iterator[ApiKeyProxy]:
    """API keys on, but only members of the IdP group "staff" admitted."""
    yield from _key_proxy(gate, "staff-only proxy", allowed_groups=STAFF_GROUP)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_key_reads_its_users_chats_without_sso(
    api_key_proxy: ApiKeyProxy, victim: Victim
) -> None:
    response = httpx.get(api_key_proxy.url + CHATS, headers=_bearer(victim.api_key), timeout=30)
    assert response.status_code == 200, response.text
    assert victim.chat_id in [chat["id"] for chat in response.json()]
    me = httpx.get(api_key_proxy.url + "/api/models", headers=_bearer(victim.api_key), timeout=30)
    assert me.status_code == 200, me.text


def test_the_shared_proxy_with_api_keys_off_refuses_the_key(gate: Stack, victim: Victim) -> None:
    response = httpx.get(gate.public_url + CHATS, headers=_bearer(victim.api_key), timeout=30)
    assert response.status_code == 401, response.text
    assert _from_proxy(response.status_code, response.content), response.text
    assert not victim.leaked_in(response.content)


def test_a_stolen_session_jwt_without_sso_is_refused(
    api_key_proxy: ApiKeyProxy, victim: Victim
) -> None:
    for kwargs in ({"headers": _bearer(victim.jwt)}, {"cookies": {"token": victim.jwt}}):
        response = httpx.get(api_key_proxy.url + CHATS, timeout=30, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 401, (kwargs.keys(), response.text)
        assert _from_proxy(response.status_code, response.content), response.text
        assert not victim.leaked_in(response.content)


# Authorization values OpenWebUI 0.12.4 cannot parse (FastAPI's HTTPBearer splits at the
# first ASCII space and wants the scheme "bearer"; its middleware splits on ' ' into exactly
# two), so it falls back to the cookie, then to ``x-api-key``. Bytes as they go on the wire.
UNPARSABLE_AUTHORIZATIONS = {
    "nbsp-two-spaces": b"\xa0Bearer  sk-junk",  # the review's attack, latin-1 NBSP
    "utf8-nbsp-two-spaces": "\u00a0Bearer  sk-junk".encode(),
    "nbsp-separator": b"Bearer\xa0sk-junk",
    "tab-separator": b"Bearer\tsk-junk",
}


@pytest.mark.parametrize(
    "authorization", UNPARSABLE_AUTHORIZATIONS.values(), ids=UNPARSABLE_AUTHORIZATIONS.keys()
)
def test_an_unparsable_key_with_the_victims_jwt_in_x_api_key_is_refused(
    gate: Stack, api_key_proxy: ApiKeyProxy, victim: Victim, authorization: bytes
) -> None:
    headers = [(b"Authorization", authorization), (b"x-api-key", victim.jwt.encode())]
    # Control: sent directly, OpenWebUI answers with V's chats. The attack is real, and these
    # bytes reach OpenWebUI as meant.
    status, body = _raw(owui_url(gate), "GET", CHATS, headers)
    assert status == 200, body[:300]
    assert victim.leaked_in(body)
    # Through the API-key proxy: not an API key, so an SSO session is needed, and there is none.
    status, body = _raw(api_key_proxy.url, "GET", CHATS, headers)
    assert status == 401, body[:300]
    assert _from_proxy(status, body), body[:300]
    assert not victim.leaked_in(body)


def test_a_junk_key_with_the_victims_jwt_in_x_api_key_is_refused_by_openwebui(
    api_key_proxy: ApiKeyProxy, victim: Victim
) -> None:
    """``Bearer sk-junk`` is the key form, so it is relayed; OpenWebUI reads that (invalid) key."""
    headers = [(b"Authorization", b"Bearer sk-junk"), (b"x-api-key", victim.jwt.encode())]
    status, body = _raw(api_key_proxy.url, "GET", CHATS, headers)
    assert status != 200
    assert status == 401, body[:300]
    assert not _from_proxy(status, body), body[:300]  # OpenWebUI's own refusal
    assert not victim.leaked_in(body)


NEVER_BY_KEY = {
    "signup": ("POST", "/api/v1/auths/signup"),
    "signup-double-slash": ("POST", "//api/v1/auths/signup"),
    "signup-dot-segments": ("POST", "/api/v1/chats/../auths/signup"),
    "signup-percent-encoded": ("POST", "/api/v1/auths/%73ignup"),
    "who-am-i": ("GET", "/api/v1/auths/"),
    "socketio-polling-post": ("POST", "/ws/socket.io/?EIO=4&transport=polling"),
    "socketio-polling-get": ("GET", "/ws/socket.io/?EIO=4&transport=polling"),
}


@pytest.mark.parametrize("request_line", NEVER_BY_KEY.values(), ids=NEVER_BY_KEY.keys())
def test_a_real_key_never_opens_auth_endpoints_or_socketio(
    gate: Stack, api_key_proxy: ApiKeyProxy, victim: Victim, request_line: tuple[str, str]
) -> None:
    method, target = request_line
    new_email = fresh_email("key-signup")
    body = b""
    headers = [(b"Authorization", f"Bearer {victim.api_key}".encode())]
    if "signup" in target:
        form = {"name": "Key Signup", "email": new_email, "password": secrets.token_hex(12)}
        body = json.dumps(form).encode()
        headers.append((b"Content-Type", b"application/json"))
    elif method == "POST":
        body = b"40" + json.dumps({"token": victim.jwt}).encode()
        headers.append((b"Content-Type", b"text/plain;charset=UTF-8"))
    status, answer = _raw(api_key_proxy.url, method, target, headers, body)
    assert status in (401, 403), answer[:300]
    assert _from_proxy(status, answer), answer[:300]
    assert not victim.leaked_in(answer)
    assert victim.id not in answer.decode("utf-8", "replace")
    if "signup" in target:
        assert find_user(gate, new_email) is None


# --- every credential is the signed-in person's, and that person passes the access rules -------


@pytest.mark.parametrize("carrier", ["authorization", "x-api-key"])
def test_another_persons_key_with_your_sso_session_is_refused(
    gate: Stack, victim: Victim, carrier: str
) -> None:
    """Kate, signed in, sends V's key: with API keys off, through the session's proxy."""
    kate = sign_in_through_proxy(gate, fresh_email("key-kate"))
    key = {"authorization": {"Authorization": f"Bearer {victim.api_key}"},
           "x-api-key": {"x-api-key": victim.api_key}}[carrier]  # fmt: skip
    # Control: straight at OpenWebUI, V's key with Kate's email header is acted on as V
    # (OpenWebUI skips its "User mismatch" check for keys).
    direct = httpx.get(
        owui_url(gate) + CHATS, headers={**key, "X-User-Email": kate.email}, timeout=30
    )
    assert direct.status_code == 200, direct.text
    assert victim.leaked_in(direct.content)
    with kate as client:
        response = client.get(CHATS, headers=key)
    assert response.status_code == 401, response.text
    assert _from_proxy(response.status_code, response.content), response.text
    assert response.json()["code"] == "credential_mismatch"
    assert not victim.leaked_in(response.content)


def test_your_own_key_with_your_sso_session_still_works(gate: Stack, api_keys_enabled: None):
    kate = sign_in_through_proxy(gate, fresh_email("key-own"))
    with kate as client:
        key = client.post("/api/v1/auths/api_key", headers=kate.auth())
        assert key.status_code == 200, key.text
        own = {"Authorization": f"Bearer {key.json()['api_key']}"}
        response = client.get(CHATS, headers=own)
    assert response.status_code == 200, response.text


def test_a_key_of_someone_the_domain_rule_refuses_is_refused(
    school_only_proxy: ApiKeyProxy, victim: Victim
) -> None:
    response = httpx.get(school_only_proxy.url + CHATS, headers=_bearer(victim.api_key), timeout=30)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "access_denied"
    assert "domain" in response.json()["error"]
    assert not victim.leaked_in(response.content)


def test_a_key_never_passes_a_group_rule(staff_only_proxy: ApiKeyProxy, victim: Victim) -> None:
    """The IdP's groups are unknown without SSO: a key minted while in the group stays out."""
    response = httpx.get(staff_only_proxy.url + CHATS, headers=_bearer(victim.api_key), timeout=30)
    assert response.status_code == 403, response.text
    assert "group" in response.json()["error"]
    assert not victim.leaked_in(response.content)


@pytest.mark.parametrize("path", ["/api/config", "/api/version", "/manifest.json"])
def test_a_bogus_key_reaches_no_endpoint(
    gate: Stack, api_key_proxy: ApiKeyProxy, path: str
) -> None:
    """Endpoints OpenWebUI answers without any credential are not opened by "sk-x" either."""
    bogus = _bearer("sk-" + secrets.token_hex(16))
    direct = httpx.get(owui_url(gate) + path, headers=bogus, timeout=30)
    assert direct.status_code == 200, direct.text  # the control: OpenWebUI answers anyone
    response = httpx.get(api_key_proxy.url + path, headers=bogus, timeout=30)
    assert response.status_code == 401, response.text
