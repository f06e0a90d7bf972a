"""Identity spoofing through the proxy's public listener, against the real OpenWebUI.

The OpenWebUI under test honours the email, name, groups *and* role headers, so any spoofed
header that slipped through would show: another user's token, a changed name, a 'staff'
membership or an admin role.
"""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import (
    OPERATOR_EMAIL,
    STAFF_GROUP,
    direct_client,
    find_user,
    fresh_email,
    operator_headers,
    owui_url,
    sign_in_through_proxy,
)

pytestmark = pytest.mark.e2e

SIGNIN = {"email": "", "password": ""}
ADMIN = OPERATOR_EMAIL
VICTIM = "victim@example.com"

# (id, headers the attacker adds); a list keeps duplicates and the exact spelling.
SPOOF_CORPUS: list[tuple[str, list[tuple[str, str]]]] = [
    ("email", [("X-User-Email", ADMIN)]),
    ("email-lower", [("x-user-email", ADMIN)]),
    ("email-underscores", [("X_User_Email", ADMIN)]),
    ("email-mixed", [("X-USER_email", ADMIN)]),
    ("email-two-copies", [("X-User-Email", ADMIN), ("X-User-Email", VICTIM)]),
    ("email-comma-joined", [("X-User-Email", f"{ADMIN}, {VICTIM}")]),
    ("connection-drops-email", [("Connection", "X-User-Email")]),
    ("connection-and-email", [("Connection", "X-User-Email"), ("X-User-Email", ADMIN)]),
    ("name", [("X-User-Name", "Spoofed%20Name")]),
    ("name-underscores", [("x_user_name", "Spoofed%20Name")]),
    ("groups", [("X-User-Groups", STAFF_GROUP)]),
    ("groups-mixed", [("X_USER-Groups", STAFF_GROUP), ("X-User-Groups", STAFF_GROUP)]),
    ("role", [("X-User-Role", "admin")]),
    ("role-underscores", [("x_user_role", "admin")]),
    ("role-connection", [("Connection", "X-User-Role"), ("X-User-Role", "admin")]),
    ("proxy-authorization", [("Proxy-Authorization", "SERVICE"), ("X-User-Email", ADMIN)]),
    ("everything", [("X-User-Email", ADMIN), ("X-User-Role", "admin"),
                    ("X-User-Groups", STAFF_GROUP), ("X-User-Name", "Spoofed")]),
]  # fmt: skip


@pytest.mark.parametrize("spoof", [s for _, s in SPOOF_CORPUS], ids=[i for i, _ in SPOOF_CORPUS])
def test_spoofed_headers_act_as_the_authenticated_student(
    gate: Stack, spoof: list[tuple[str, str]]
) -> None:
    # The real service token, to show the public listener ignores it entirely.
    service = "Bearer " + gate.service_token_file.read_text().strip()
    spoof = [(k, service if v == "SERVICE" else v) for k, v in spoof]
    email = fresh_email("spoof")
    name = "Student Spoof-Target"
    student = sign_in_through_proxy(gate, email, name)
    with student as client:
        # Sign-in is where OpenWebUI reads the identity headers: it must see only the student.
        response = client.post("/api/v1/auths/signin", headers=spoof, json=SIGNIN)
        assert response.status_code == 200, response.text
        signed_in = response.json()
        assert signed_in["email"] == email
        assert signed_in["role"] == "user"
        assert signed_in["name"] == name
        # Any other call: still the student.
        response = client.get("/api/v1/auths/", headers=[*student.auth().items(), *spoof])
        assert response.status_code == 200, response.text
        assert response.json()["email"] == email
        assert response.json()["role"] == "user"
        groups = client.get("/api/v1/users/groups", headers=student.auth()).json()
        assert STAFF_GROUP not in [group["name"] for group in groups]
    user = find_user(gate, email)
    assert user is not None
    assert (user["role"], user["name"]) == ("user", name)
    operator = find_user(gate, ADMIN)
    assert operator is not None
    assert (operator["role"], operator["name"]) == ("admin", "Operator")


def test_no_identity_never_reaches_openwebui(gate: Stack) -> None:
    """Without an IdP session: 401 for API calls, a login redirect for pages, and OpenWebUI
    never sees the request (no user made, nothing in its access log)."""
    email = fresh_email("anonymous")
    marker = secrets.token_hex(8)
    spoof = {"X-User-Email": email, "X-User-Role": "admin"}
    with httpx.Client(base_url=gate.public_url, timeout=30) as client:
        response = client.post(
            f"/api/v1/auths/signin?probe={marker}-anon", headers=spoof, json=SIGNIN
        )
        assert response.status_code == 401
        assert "token" not in response.text
        page = client.get(f"/?probe={marker}-anon", headers={**spoof, "Accept": "text/html"})
        assert page.status_code == 302
        assert page.headers["Location"].startswith(f"{gate.idp_url}/login")
    assert find_user(gate, email) is None
    # Control: an authenticated request with a marker does show up in OpenWebUI's access log,
    # so the absence of the anonymous marker means something.
    with sign_in_through_proxy(gate, fresh_email("logged")) as client:
        assert client.get(f"/api/config?probe={marker}-ok").status_code == 200
    assert gate.openwebui is not None
    log = gate.openwebui.log_path
    deadline = time.monotonic() + 30
    while f"{marker}-ok" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the control request never reached OpenWebUI's log"
        time.sleep(0.5)
    assert f"{marker}-anon" not in log.read_text(errors="replace")


def test_a_students_token_is_refused_with_another_identity_or_none(gate: Stack) -> None:
    alice = sign_in_through_proxy(gate, fresh_email("alice"), "Alice")
    bob = sign_in_through_proxy(gate, fresh_email("bob"), "Bob")
    with alice, bob:
        # Bob's browser session replays Alice's OpenWebUI token: refused, nothing of Alice's shown.
        response = bob.client.get("/api/v1/auths/", headers=alice.auth())
        assert response.status_code == 401, response.text
        assert alice.email not in response.text
        response = bob.client.get("/api/v1/chats/list", headers=alice.auth())
        assert response.status_code == 401, response.text
        # No SSO identity at all, only the stolen token: refused at the proxy.
        with httpx.Client(base_url=gate.public_url, timeout=30) as anonymous:
            response = anonymous.get("/api/v1/auths/", headers=alice.auth())
            assert response.status_code == 401
            assert alice.email not in response.text
        # And the legitimate pairing still works, so the refusals above are about the pairing.
        response = alice.client.get("/api/v1/auths/", headers=alice.auth())
        assert response.status_code == 200
        assert response.json()["email"] == alice.email


def test_control_openwebui_here_obeys_the_headers_it_is_sent_directly(stack: Stack) -> None:
    """The premise of the tests above: sent straight to this OpenWebUI, the role and groups
    headers do escalate. So a header leaking through the proxy would make them fail."""
    email = fresh_email("control")
    # OpenWebUI finds its primary admin by created_at (1 s resolution), admins winning ties:
    # an admin created in the operator's second could be taken for the primary admin.
    operator = find_user(stack, ADMIN)
    assert operator is not None
    time.sleep(max(0.0, operator["created_at"] + 2 - time.time()))
    response = httpx.post(
        f"{owui_url(stack)}/api/v1/auths/signin",
        headers={"X-User-Email": email, "X-User-Role": "admin", "X-User-Groups": STAFF_GROUP},
        json=SIGNIN,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    with direct_client(stack, email) as client:
        groups = client.get("/api/v1/users/groups").json()
    assert STAFF_GROUP in [group["name"] for group in groups]
    # Demote it again: nothing else in the session should meet a stray admin.
    user = find_user(stack, email)
    assert user is not None
    response = httpx.post(
        f"{owui_url(stack)}/api/v1/users/{user['id']}/update",
        headers=operator_headers(stack),
        json={"role": "pending"},
        timeout=30,
    )
    if response.status_code != 200:  # older releases (scripts/compat) have their own endpoint
        response = httpx.post(
            f"{owui_url(stack)}/api/v1/users/update/role",
            headers=operator_headers(stack),
            json={"id": user["id"], "role": "pending"},
            timeout=30,
        )
    assert response.status_code == 200, response.text
