"""The spoof corpus through the real proxy app, checked on the recording fake upstream."""

from __future__ import annotations

import pytest

from tests.proxy.rawhttp import raw_request

IDENTITY_NAMES = ("x-user-email", "x-user-name", "x-user-groups", "x-user-role")


def _corpus() -> list[tuple[str, list[tuple[str, str]]]]:
    rows: list[tuple[str, list[tuple[str, str]]]] = []
    for base in ("Email", "Name", "Groups", "Role"):
        value = "evil@attacker.example" if base == "Email" else "admin"
        rows += [
            (f"{base}: canonical", [(f"X-User-{base}", value)]),
            (f"{base}: lower-case", [(f"x-user-{base.lower()}", value)]),
            (f"{base}: underscores", [(f"X_User_{base}", value)]),
            (f"{base}: mixed", [(f"X-USER_{base.lower()}", value)]),
            (f"{base}: two copies", [(f"X-User-{base}", value), (f"X-User-{base}", value)]),
            (f"{base}: comma-joined", [(f"X-User-{base}", f"{value}, alice@example.edu")]),
            (
                f"{base}: listed in Connection",
                [("Connection", f"X-User-{base}"), (f"X-User-{base}", value)],
            ),
        ]
    rows.append(("Proxy-Authorization", [("Proxy-Authorization", "Basic YWRtaW46YWRtaW4=")]))
    rows.append(
        (
            "everything at once",
            [(f"X_user-{b}", "x") for b in ("email", "name", "groups", "role")]
            + [("Connection", "x-user-email, x-user-role")],
        )
    )
    return rows


CORPUS = _corpus()


@pytest.mark.parametrize("sent", [r[1] for r in CORPUS], ids=[r[0] for r in CORPUS])
async def test_upstream_sees_only_the_verified_identity(proxy, fake_upstream, sent) -> None:
    """Exactly one email header, equal to the verified identity, and no spoofed copies."""
    response = await raw_request(
        proxy.host, proxy.port, "/api/chats", [("Cookie", "_oauth2_proxy=alice-session"), *sent]
    )
    assert response.status == 200
    seen = fake_upstream.last()
    names = seen.names_normalised()
    assert seen.values("X-User-Email") == ["alice@example.edu"]
    assert names.count("x-user-email") == 1
    assert seen.values("X-User-Name") == ["Alice%20%C3%84ngstr%C3%B6m"]
    assert seen.values("X-User-Groups") == ["staff,students"]
    assert "x-user-role" not in names
    assert "proxy-authorization" not in names
    # Nothing spelled differently survived (exact names only, as we inject them).
    for name, _ in seen.headers:
        if name.lower().replace("_", "-") in IDENTITY_NAMES:
            assert name in ("X-User-Email", "X-User-Name", "X-User-Groups")


@pytest.mark.parametrize("sent", [r[1] for r in CORPUS], ids=[r[0] for r in CORPUS])
async def test_unauthenticated_spoof_never_reaches_upstream(proxy, fake_upstream, sent) -> None:
    response = await raw_request(proxy.host, proxy.port, "/api/chats", sent)
    assert response.status == 401
    assert fake_upstream.seen == []


async def test_bad_identity_from_auth_service_is_502(proxy, fake_auth, fake_upstream) -> None:
    """A value we refuse to forward is the auth service's fault: 502, nothing relayed."""
    for email in ("not-an-email", "alice@example.edu, bob@example.edu", ""):
        fake_auth.users = {"s": {"X-Auth-Request-Email": email}}
        response = await proxy.get("/", headers={"Cookie": "_oauth2_proxy=s"})
        assert response.status == 502, email
        assert (await response.json())["request_id"] == response.headers["X-Request-ID"]
    assert fake_upstream.seen == []
