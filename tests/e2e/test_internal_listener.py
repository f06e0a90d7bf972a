"""The internal act-as listener in front of the real OpenWebUI: token, allowlist, no escalation."""

from __future__ import annotations

import socket

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import STAFF_GROUP, direct_client, find_user, fresh_email

pytestmark = pytest.mark.e2e

SIGNIN = {"email": "", "password": ""}


def service_auth(stack: Stack) -> dict[str, str]:
    return {"Proxy-Authorization": "Bearer " + stack.service_token_file.read_text().strip()}


def test_missing_or_wrong_service_token_is_407_and_reaches_nothing(proxy: Stack) -> None:
    email = fresh_email("no-token")
    for headers in ({}, {"Proxy-Authorization": "Bearer " + "x" * 48}):
        response = httpx.post(
            f"{proxy.internal_url}/api/v1/auths/signin",
            headers={**headers, "X-User-Email": email},
            json=SIGNIN,
            timeout=30,
        )
        assert response.status_code == 407
        assert response.headers["Proxy-Authenticate"].startswith("Bearer")
    assert find_user(proxy, email) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/users/"),  # admin-only list of everyone
        ("POST", "/api/v1/auths/update/profile"),
        ("GET", "/api/v1/chats/archived/../../users/"),
        ("GET", "/api/v1/chats/%2E%2E/%2E%2E/users/"),
        ("GET", "/"),
    ],
    ids=["users-list", "profile-update", "dot-dot", "encoded-dot-dot", "root"],
)
def test_endpoints_off_the_allowlist_are_403(proxy: Stack, method: str, path: str) -> None:
    email = fresh_email("allowlist")
    status = raw_status(
        proxy.internal_url, method, path, {**service_auth(proxy), "X-User-Email": email}
    )
    assert status == 403
    assert find_user(proxy, email) is None


def raw_status(base_url: str, method: str, path: str, headers: dict[str, str]) -> int:
    """Send the request target byte for byte (HTTP clients normalise '..' away) and read the
    status code."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Length: 2",
        "Content-Type: application/json",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n{}").encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(head.split()[1])


def test_role_and_groups_headers_from_the_caller_never_escalate(proxy: Stack) -> None:
    """OpenWebUI here honours X-User-Role and X-User-Groups; the listener must drop them."""
    email = fresh_email("escalate")
    response = httpx.post(
        f"{proxy.internal_url}/api/v1/auths/signin",
        headers=[
            *service_auth(proxy).items(),
            ("X-User-Email", email),
            ("X-User-Role", "admin"),
            ("x-user-role", "admin"),
            ("X_User_Role", "admin"),
            ("X-User-Groups", STAFF_GROUP),
        ],
        json=SIGNIN,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "user"
    user = find_user(proxy, email)
    assert user is not None
    assert user["role"] == "user"
    with direct_client(proxy, email) as client:
        groups = client.get("/api/v1/users/groups").json()
    assert STAFF_GROUP not in [group["name"] for group in groups]
