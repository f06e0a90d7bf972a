"""Refusals at the public edge: account creation (any spelling, any method, before
authentication) and cross-site sign-out. Policy tables first, then the real app."""

from __future__ import annotations

import pytest

from proxy import browser
from proxy.target import read_target
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.rawhttp import raw_request

PUBLIC = "https://chat.example.edu"

ACCOUNT_ROWS = [
    ("password sign-up", "/api/v1/auths/signup", "password sign-up"),
    ("sign-up, trailing slash", "/api/v1/auths/signup/", "password sign-up"),
    ("sign-up, upper case", "/API/V1/AUTHS/SIGNUP", "password sign-up"),
    ("sign-up, percent-encoded letter", "/api/v1/auths/sign%75p", "password sign-up"),
    ("sign-up, encoded slash", "/api/v1/auths%2Fsignup", "password sign-up"),
    ("sign-up, dot segments", "/api/v1/chats/../auths/./signup", "password sign-up"),
    ("sign-up, encoded dot segments", "/api/v1/x/%2e%2e/auths/signup", "password sign-up"),
    ("sign-up, double slashes", "//api//v1/auths//signup", "password sign-up"),
    ("admin adds a user", "/api/v1/auths/add", "adding users"),
    ("LDAP sign-in creates users", "/api/v1/auths/ldap", "LDAP sign-in"),
    ("OAuth token exchange", "/api/v1/auths/oauth/google/token/exchange", "OAuth token exchange"),
    ("SCIM users", "/api/v1/scim/v2/Users", "SCIM provisioning"),
    ("SCIM groups", "/api/v1/scim/v2/Groups/x", "SCIM provisioning"),
    ("OAuth login", "/oauth/oidc/login", "OAuth sign-in"),
    ("OAuth callback", "/oauth/google/callback", "OAuth sign-in"),
    ("OAuth login callback", "/oauth/microsoft/login/callback", "OAuth sign-in"),
    ("trusted sign-in is how users exist", "/api/v1/auths/signin", None),
    ("sign-out", "/api/v1/auths/signout", None),
    ("session", "/api/v1/auths/", None),
    ("similar name", "/api/v1/auths/signups-report", None),
    ("tool-server OAuth creates no user", "/oauth/clients/abc/callback", None),
    ("chats", "/api/v1/chats/new", None),
    ("root", "/", None),
]


@pytest.mark.parametrize(
    ("path", "refused"), [r[1:] for r in ACCOUNT_ROWS], ids=[r[0] for r in ACCOUNT_ROWS]
)
def test_account_creation_policy(path: str, refused: str | None) -> None:
    assert browser.account_creation(read_target(path)) == refused


CROSS_SITE_ROWS = [
    ("typed or bookmarked", "none", None, False),
    ("same origin", "same-origin", PUBLIC, False),
    ("cross-site navigation", "cross-site", None, True),
    ("sibling subdomain", "same-site", None, True),
    ("cross-site form post", "cross-site", "https://evil.example", True),
    ("odd Sec-Fetch-Site value", "bogus", None, True),
    ("Origin of another site, no Sec-Fetch-Site", None, "https://evil.example", True),
    ("null Origin (sandboxed frame)", None, "null", True),
    ("our Origin, no Sec-Fetch-Site", None, PUBLIC, False),
    ("neither header (script, old client)", None, None, False),
]


@pytest.mark.parametrize(
    ("fetch_site", "origin", "refused"),
    [r[1:] for r in CROSS_SITE_ROWS],
    ids=[r[0] for r in CROSS_SITE_ROWS],
)
def test_cross_site_policy(fetch_site: str | None, origin: str | None, refused: bool) -> None:
    assert browser.cross_site(fetch_site, origin, browser.origin_of(PUBLIC)) is refused


@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
@pytest.mark.parametrize(
    "target",
    ["/api/v1/auths/signup", "/api/v1/auths/Sign%55p", "/x/../api/v1/auths/add", "/oauth/x/login"],
)
async def test_account_creation_is_refused_signed_in_or_not(
    proxy, fake_auth, fake_upstream, method: str, target: str
) -> None:
    for headers in ([], [("Cookie", ALICE_COOKIE["Cookie"])]):
        response = await raw_request(
            proxy.host, proxy.port, target, headers, method=method, body=b"{}"
        )
        assert response.status == 403
    assert fake_upstream.seen == []
    assert fake_auth.seen == []  # refused before any auth-service call


async def test_trusted_sign_in_still_reaches_openwebui(proxy, fake_upstream) -> None:
    response = await proxy.post("/api/v1/auths/signin", headers=ALICE_COOKIE, json={})
    assert response.status == 200
    assert fake_upstream.last().raw_path == "/api/v1/auths/signin"


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_cross_site_signout_is_refused(
    make_proxy, fake_upstream, headers: dict[str, str], method: str
) -> None:
    proxy = await make_proxy(public_url=PUBLIC)
    response = await proxy.request(
        method, "/api/v1/auths/signout", headers={**ALICE_COOKIE, **headers}, allow_redirects=False
    )
    assert response.status == 403
    assert "Set-Cookie" not in response.headers
    assert fake_upstream.seen == []


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC}, {"Sec-Fetch-Site": "none"}, {}],
)
async def test_first_party_signout_still_works(make_proxy, fake_upstream, headers) -> None:
    proxy = await make_proxy(public_url=PUBLIC)
    response = await proxy.post("/api/v1/auths/signout", headers={**ALICE_COOKIE, **headers})
    assert response.status == 200
    assert fake_upstream.last().raw_path == "/api/v1/auths/signout"


async def test_without_public_url_the_origin_is_the_one_we_were_reached_at(
    proxy, fake_upstream
) -> None:
    own = f"http://{proxy.host}:{proxy.port}"
    ok = await proxy.post("/api/v1/auths/signout", headers={**ALICE_COOKIE, "Origin": own})
    assert ok.status == 200
    refused = await proxy.post(
        "/api/v1/auths/signout", headers={**ALICE_COOKIE, "Origin": "http://evil.example"}
    )
    assert refused.status == 403
