"""Group names reach the real OpenWebUI exactly: a look-alike of a group never joins it.

The e2e OpenWebUI honours the groups header and has a ``staff`` group. An identity provider
may tell ``staff`` and ``staff\\u00a0`` apart (a user-made group, say); so must the proxy,
and OpenWebUI must not end up reading either as the other.
"""

from __future__ import annotations

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import STAFF_GROUP, fresh_email

SIGNIN = {"email": "", "password": ""}


def groups_in_openwebui(gate: Stack, groups: str) -> list[str]:
    """Sign in at the demo IdP with ``groups``, then through the proxy; the OpenWebUI groups
    the user is in afterwards."""
    email = fresh_email("groups")
    with httpx.Client(base_url=gate.idp_url, timeout=30) as idp:
        response = idp.post(
            "/login",
            data={"email": email, "name": "Group Test", "groups": groups, "rd": gate.public_url},
        )
        assert response.status_code in (302, 303), (response.status_code, response.text[:300])
        cookies = idp.cookies
    with httpx.Client(base_url=gate.public_url, cookies=cookies, timeout=60) as client:
        response = client.post("/api/v1/auths/signin", json=SIGNIN)
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        response = client.get("/api/v1/users/groups", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return [group["name"] for group in response.json()]


def test_the_exact_group_name_joins_openwebuis_group(gate: Stack) -> None:
    """The control: the groups header works here, so the look-alike test below can fail."""
    assert STAFF_GROUP in groups_in_openwebui(gate, f"year-9,{STAFF_GROUP}")


@pytest.mark.parametrize(
    "look_alike",
    [
        pytest.param(f"{STAFF_GROUP}\u00a0", id="no-break-space"),
        pytest.param(f"\u3000{STAFF_GROUP}", id="ideographic-space"),
        pytest.param(f"{STAFF_GROUP}\u2028", id="line-separator"),
        pytest.param(f"\ufeff{STAFF_GROUP}", id="zero-width-no-break-space"),
    ],
)
def test_a_look_alike_group_never_joins_it(gate: Stack, look_alike: str) -> None:
    got = groups_in_openwebui(gate, f"year-9,{look_alike}")
    assert STAFF_GROUP not in got, got
