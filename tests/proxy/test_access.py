"""Access rules at the edge: allowed email domains and groups, after authentication and
before anything reaches OpenWebUI. The policy as a table, then both listeners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from proxy.access import AccessRules, domain_allowed
from proxy.identity import Identity
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE

DOMAIN_ROWS = [
    ("exact domain", "kate@school.edu", ("school.edu",), True),
    ("other domain", "kate@other.edu", ("school.edu",), False),
    ("subdomain needs the wildcard", "kate@mail.school.edu", ("school.edu",), False),
    ("wildcard admits a subdomain", "kate@mail.school.edu", ("*.school.edu",), True),
    ("wildcard admits a deeper one", "kate@a.b.school.edu", ("*.school.edu",), True),
    ("wildcard is not the domain itself", "kate@school.edu", ("*.school.edu",), False),
    ("suffix lookalike", "kate@evilschool.edu", ("*.school.edu",), False),
    ("suffix lookalike, exact rule", "kate@evilschool.edu", ("school.edu",), False),
    ("domain as local part", "school.edu@evil.example", ("school.edu",), False),
    ("any of several", "kate@staff.org", ("school.edu", "staff.org"), True),
]


@pytest.mark.parametrize(
    ("email", "domains", "allowed"),
    [r[1:] for r in DOMAIN_ROWS],
    ids=[r[0] for r in DOMAIN_ROWS],
)
def test_domain_rule(email: str, domains: tuple[str, ...], allowed: bool) -> None:
    assert domain_allowed(email, domains) is allowed


RULE_ROWS = [
    ("no rules: everyone", AccessRules(), Identity("a@x.io"), None),
    ("group rule, member", AccessRules(groups=("y9",)), Identity("a@x.io", None, ("y9",)), None),
    (
        "group rule, member of another",
        AccessRules(groups=("y9",)),
        Identity("a@x.io", None, ("y10",)),
        "allowed_groups",
    ),
    ("group rule, no groups", AccessRules(groups=("y9",)), Identity("a@x.io"), "allowed_groups"),
    (
        "group names are exact",
        AccessRules(groups=("Y9",)),
        Identity("a@x.io", None, ("y9",)),
        "allowed_groups",
    ),
    (
        "both rules, both met",
        AccessRules(("x.io",), ("y9",)),
        Identity("a@x.io", None, ("y9",)),
        None,
    ),
    (
        "both rules, domain fails first",
        AccessRules(("x.io",), ("y9",)),
        Identity("a@z.io", None, ("y9",)),
        "allowed_email_domains",
    ),
]


@pytest.mark.parametrize(
    ("rules", "identity", "rule"), [r[1:] for r in RULE_ROWS], ids=[r[0] for r in RULE_ROWS]
)
def test_access_rules(rules: AccessRules, identity: Identity, rule: str | None) -> None:
    refusal = rules.check(identity)
    assert (refusal.rule if refusal else None) == rule


# --- the public listener -------------------------------------------------------------------


async def test_api_call_outside_the_rules_is_403_json(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy(allowed_email_domains="example.edu", allowed_groups="staff")
    with capture_logs() as logs:
        bob = await proxy.get("/api/models", headers=BOB_COOKIE)  # right domain, no groups
    assert bob.status == 403
    body = await bob.json()
    assert body["code"] == "access_denied"
    assert body["error"] == "the identity is in none of the allowed groups"
    assert fake_upstream.seen == []
    assert [line["rule"] for line in logs if line["event"] == "access_denied"] == ["allowed_groups"]
    alice = await proxy.get("/api/models", headers=ALICE_COOKIE)  # staff at example.edu
    assert alice.status == 200
    assert fake_upstream.last().values("X-User-Email") == ["alice@example.edu"]


async def test_browser_outside_the_rules_gets_a_page_with_who_and_how_to_sign_out(
    make_proxy, fake_upstream
) -> None:
    logout = "https://idp.example.edu/logout?x=1&y=<2>"
    proxy = await make_proxy(allowed_email_domains="school.edu", logout_url=logout)
    response = await proxy.get("/", headers={**BOB_COOKIE, "Accept": "text/html"})
    assert response.status == 403
    assert response.content_type == "text/html"
    page = await response.text()
    assert "signed in as <strong>bob@example.edu</strong>" in page
    assert 'href="https://idp.example.edu/logout?x=1&amp;y=&lt;2&gt;"' in page  # escaped
    assert response.headers["Cache-Control"] == "no-store"
    assert fake_upstream.seen == []


async def test_without_logout_url_the_page_links_openwebui_sign_out(make_proxy) -> None:
    proxy = await make_proxy(allowed_email_domains="school.edu")
    response = await proxy.get("/", headers={**BOB_COOKIE, "Accept": "text/html"})
    assert 'href="/api/v1/auths/signout"' in await response.text()


@pytest.mark.parametrize("logout_url", [None, "https://idp.example.edu/logout"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_refusal_pages_sign_out_link_signs_out(
    make_proxy, fake_upstream, logout_url: str | None, method: str
) -> None:
    """The page's way out works for the person it refuses, without reaching OpenWebUI."""
    proxy = await make_proxy(allowed_email_domains="school.edu", logout_url=logout_url)
    page = await proxy.get("/", headers={**BOB_COOKIE, "Accept": "text/html"})
    assert page.status == 403
    headers = {**BOB_COOKIE, "Accept": "text/html", "Cookie": "_oauth2_proxy=bob-session; token=t"}
    response = await proxy.request(
        method, "/api/v1/auths/signout", headers=headers, allow_redirects=False
    )
    assert response.status == (302 if logout_url and method == "GET" else 200)
    if response.status == 302:
        assert response.headers["Location"] == logout_url
    assert any(c.startswith("token=;") for c in response.headers.getall("Set-Cookie"))
    assert fake_upstream.seen == []


async def test_websocket_outside_the_rules_is_refused_before_the_upgrade(
    make_proxy, fake_upstream
) -> None:
    proxy = await make_proxy(allowed_groups="staff")
    with pytest.raises(Exception, match="403"):
        await proxy.ws_connect("/ws/socket.io/?EIO=4&transport=websocket", headers=BOB_COOKIE)
    assert fake_upstream.seen == []


async def test_denials_are_counted_on_the_metrics_endpoint(settings_for, aiohttp_client) -> None:
    from proxy.app import Runtime, create_admin_app, create_app

    runtime = Runtime(settings_for(allowed_email_domains="school.edu"))
    await runtime.start()
    try:
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        admin = await aiohttp_client(create_admin_app(runtime.settings, runtime))
        for _ in range(2):
            await public.get("/api/models", headers=BOB_COOKIE)
        text = await (await admin.get("/metrics")).text()
    finally:
        await runtime.close()
    assert 'owui_proxy_auth_decisions_total{outcome="access_denied"} 2.0' in text


# --- the internal listener -----------------------------------------------------------------


async def test_internal_act_as_target_must_pass_the_domain_rule(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    from tests.fakes import FakeUpstream
    from tests.proxy.internal_listener import internal_client
    from tests.proxy.test_internal import AUTH, audits

    fake = FakeUpstream()
    async with internal_client(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        fake.app(),
        allowed_email_domains="school.edu",
        allowed_groups="y9",  # cannot apply here: the act-as names no groups
    ) as client:
        with capture_logs() as logs:
            outside = await client.get("/api/config", headers={**AUTH, "X-User-Email": "k@evil.io"})
            inside = await client.get(
                "/api/config", headers={**AUTH, "X-User-Email": "k@school.edu"}
            )
        assert outside.status == 403
        assert (await outside.json())["code"] == "access_denied"
        assert inside.status == 200
        assert [line["outcome"] for line in audits(logs)] == ["access_denied", "relayed"]
        assert len(fake.seen) == 1
