"""Every OpenWebUI credential a request carries belongs to the person the proxy let in.

First which credentials a request carries, as OpenWebUI's readers take them (a table, and a
property test against Starlette's cookie parser and FastAPI's bearer reading themselves),
then the public listener against the fake OpenWebUI, whose API key ``sk-123`` is Alice's.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from starlette.requests import cookie_parser

from proxy import browser
from proxy.credentials import carried, token_cookies, without_token_cookie
from proxy.owners import SESSION_PATH, STATUS_PATH
from tests.proxy.authorization_readings import assert_every_reading_is_carried
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE

ALICE_KEY = "sk-123"
LOOKUPS = (SESSION_PATH, STATUS_PATH)

CARRIED_ROWS: list[tuple[str, list[tuple[str, str]], tuple[str, ...], tuple[str, ...]]] = [
    ("nothing", [("Accept", "*/*")], (), ()),
    ("bearer", [("Authorization", "Bearer sk-a")], ("sk-a",), ()),
    ("any scheme (OpenWebUI's split reader)", [("Authorization", "Basic sk-a")], ("sk-a",), ()),
    ("rest after the first space", [("Authorization", "Bearer a b")], ("a b",), ()),
    # Values as aiohttp's server hands them over: a byte that is not UTF-8 (here \xa0, NBSP
    # in Latin-1, which is how OpenWebUI reads it) as a lone surrogate.
    ("stripped as HTTPBearer does", [("Authorization", "Bearer  a\udca0")], ("a",), ()),
    ("two parts, not stripped", [("Authorization", "Basic \udca0a")], ("a", "\xa0a"), ()),
    # UTF-8 NBSP (C2 A0) is "\xc2\xa0" to OpenWebUI: only its last byte is a space there.
    ("as Latin-1", [("Authorization", "Bearer a\u00a0")], ("a\xc2", "a\xc2\xa0"), ()),
    ("cookie name read as Latin-1", [("Cookie", "\udc85token=b")], (), ("b",)),
    ("every copy", [("Authorization", "Bearer a"), ("Authorization", "Bearer b")], ("a", "b"), ()),
    ("no credential after the scheme", [("Authorization", "Bearer")], (), ()),
    ("x-api-key", [("X-Api-Key", "sk-a")], ("sk-a",), ()),
    ("cookie", [("Cookie", "a=1; token=eyJx; b=2")], (), ("eyJx",)),
    ("quoted cookie, unquoted as Starlette does", [("Cookie", 'token="sk-a"')], (), ("sk-a",)),
    ("a quote on one side only is kept", [("Cookie", 'token="sk-a')], (), ('"sk-a',)),
    ("a lone quote is kept", [("Cookie", 'token="')], (), ('"',)),
    ("spaces around", [("Cookie", " token = sk-a ;x=1")], (), ("sk-a",)),
    ("every token cookie", [("Cookie", "token=a; token=b"), ("Cookie", "token=c")], (), "abc"),
    ("similar names are not it", [("Cookie", "xtoken=a; token_b=b; tokens=c")], (), ()),
    ("empty token", [("Cookie", "token=")], (), ()),
]


@pytest.mark.parametrize(
    ("headers", "from_headers", "from_cookies"),
    [r[1:] for r in CARRIED_ROWS],
    ids=[r[0] for r in CARRIED_ROWS],
)
def test_carried(headers, from_headers, from_cookies) -> None:
    found = carried(CIMultiDict(headers), "x-api-key")
    assert found.headers == tuple(from_headers)
    assert found.cookies == tuple(from_cookies)


def test_carried_is_true_when_anything_is_carried() -> None:
    """The admit stage skips the binding when nothing is carried: never when something is."""
    assert not carried(CIMultiDict([("Accept", "*/*")]), "x-api-key")
    assert carried(CIMultiDict([("Authorization", "Bearer a")]), "x-api-key")
    assert carried(CIMultiDict([("Cookie", "token=a")]), "x-api-key")
    assert carried(CIMultiDict([("X-Api-Key", "a")]), "x-api-key")


def test_carried_values_are_distinct_and_in_order_across_headers() -> None:
    headers = CIMultiDict(
        [
            ("Authorization", "Bearer a"),
            ("x-api-key", "b"),
            ("Authorization", "Basic b"),
            ("Authorization", "Bearer \ta"),
            ("x-api-key", "a"),
            ("Cookie", "token=c; token=d"),
            ("Cookie", "token=c"),
        ]
    )
    found = carried(headers, "x-api-key")
    assert found.headers == ("a", "b", "\ta")
    assert found.cookies == ("c", "d")
    one = carried(CIMultiDict([("Authorization", "Bearer a"), ("Cookie", "token=a")]), "k")
    assert one.headers == ("a",)
    assert one.cookies == ("a",)


def test_the_configured_api_key_header_is_read() -> None:
    headers = CIMultiDict([("X-Custom-Key", "sk-a"), ("X-Api-Key", "sk-b")])
    assert carried(headers, "x-custom-key").headers == ("sk-a",)


_COOKIE_TEXT = st.text(alphabet='token=;" \\abc-_', max_size=30)


@settings(max_examples=500, derandomize=True, database=None)
@given(header=_COOKIE_TEXT)
def test_every_token_starlette_reads_is_carried(header: str) -> None:
    """OpenWebUI reads ``request.cookies['token']`` through Starlette's own parser."""
    token = cookie_parser(header).get("token")
    if token:
        assert token in token_cookies(header)
    assert "token" not in cookie_parser(";".join(without_token_cookie([header])))


@settings(max_examples=500, derandomize=True, database=None)
@given(value=st.text(alphabet="Bearer sk-ab \t", max_size=20))
def test_every_authorization_reading_is_carried(value: str) -> None:
    """FastAPI's HTTPBearer (first-space split) and OpenWebUI's own split-on-spaces reader."""
    found = carried(CIMultiDict([("Authorization", value)]), "x-api-key").headers
    assert_every_reading_is_carried(value, found)


# --- someone else's credential with your SSO session ------------------------------------------


# With allow_api_keys, "Authorization: Bearer sk-..." alone makes a key request (its owner is
# the person: test_an_api_key_passes_the_access_rules_as_its_owner); every other carrier
# rides on the SSO session and must be that session's person's.
FOREIGN = {
    "bearer": ({"Authorization": f"Bearer {ALICE_KEY}"}, False),
    "lower-case": ({"Authorization": f"bearer {ALICE_KEY}"}, False),
    "two-spaces": ({"Authorization": f"Bearer  {ALICE_KEY}"}, True),
    "basic": ({"Authorization": f"Basic {ALICE_KEY}"}, True),
    "x-api-key": ({"X-Api-Key": ALICE_KEY}, True),
    "cookie": ({"Cookie": f"_oauth2_proxy=bob-session; token={ALICE_KEY}"}, True),
    "quoted-cookie": ({"Cookie": f'_oauth2_proxy=bob-session; token="{ALICE_KEY}"'}, True),
    "alice-jwt": ({"Authorization": "Bearer tok.alice@example.edu"}, True),
}


@pytest.mark.parametrize(
    ("headers", "allow_api_keys"),
    [(headers, False) for headers, _ in FOREIGN.values()]
    + [(headers, True) for headers, also in FOREIGN.values() if also],
    ids=[*FOREIGN, *(f"keys-on-{name}" for name, (_, also) in FOREIGN.items() if also)],
)
async def test_another_persons_credential_with_your_session_is_refused(
    make_proxy, fake_upstream, headers: dict[str, str], allow_api_keys: bool
) -> None:
    """Bob is signed in; Alice's key (or token) in any carrier must not act as Alice."""
    proxy = await make_proxy(allow_api_keys=allow_api_keys)
    response = await proxy.get("/api/v1/chats/list", headers={**BOB_COOKIE, **headers})
    assert response.status == 401
    assert browser.CLEAR_TOKEN_COOKIE in response.headers.getall("Set-Cookie")
    assert fake_upstream.relayed() == []


async def test_your_own_key_with_your_session_is_relayed(proxy, fake_upstream) -> None:
    response = await proxy.get(
        "/api/v1/chats/list", headers={**ALICE_COOKIE, "Authorization": f"Bearer {ALICE_KEY}"}
    )
    assert response.status == 200
    assert fake_upstream.last().values("Authorization") == [f"Bearer {ALICE_KEY}"]


async def test_a_credential_openwebui_refuses_is_answered_by_openwebui(proxy, fake_upstream):
    response = await proxy.get(
        "/api/config", headers={**ALICE_COOKIE, "Authorization": "Bearer sk-bogus"}
    )
    assert response.status == 401
    assert await response.json() == {"detail": "Invalid token"}
    assert fake_upstream.relayed() == []


async def test_a_stale_cookie_on_a_page_load_is_dropped_not_refused(proxy, fake_upstream):
    response = await proxy.get(
        "/c/1",
        headers={
            "Accept": "text/html",
            "Cookie": "_oauth2_proxy=bob-session; a=1; token=tok.alice@example.edu; b=2",
        },
    )
    assert response.status == 200
    assert browser.CLEAR_TOKEN_COOKIE in response.headers.getall("Set-Cookie")
    (relayed,) = fake_upstream.relayed()
    assert relayed.values("Cookie") == ["_oauth2_proxy=bob-session; a=1; b=2"]


async def test_sign_out_leaves_out_what_is_not_yours(proxy, fake_upstream) -> None:
    """OpenWebUI revokes whatever token a sign-out carries: never someone else's."""
    response = await proxy.post(
        "/api/v1/auths/signout",
        headers={
            "Cookie": "_oauth2_proxy=bob-session; token=tok.alice@example.edu",
            "Authorization": "Bearer tok.alice@example.edu",
        },
    )
    assert response.status == 200
    (relayed,) = fake_upstream.relayed()
    assert relayed.values("Authorization") == []
    assert relayed.values("Cookie") == ["_oauth2_proxy=bob-session"]


async def test_owners_are_cached_and_asked_once_at_a_time(proxy, fake_upstream) -> None:
    headers = {**ALICE_COOKIE, "Authorization": f"Bearer {ALICE_KEY}"}
    answers = await asyncio.gather(
        *(proxy.get("/api/v1/chats/list", headers=headers) for _ in range(20))
    )
    assert [a.status for a in answers] == [200] * 20
    await proxy.get("/api/v1/chats/list", headers=headers)
    lookups = [s.raw_path for s in fake_upstream.seen if s.raw_path in LOOKUPS]
    assert lookups == [SESSION_PATH, STATUS_PATH]  # one question, for 21 requests


# --- API keys without SSO (allow_api_keys) ------------------------------------------------------


async def test_an_api_key_passes_the_access_rules_as_its_owner(make_proxy, fake_upstream):
    proxy = await make_proxy(allow_api_keys=True, allowed_email_domains="example.edu")
    response = await proxy.get("/api/models", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert response.status == 200
    assert fake_upstream.relayed()[-1].values("Authorization") == [f"Bearer {ALICE_KEY}"]


async def test_the_key_of_someone_the_rules_refuse_is_refused(make_proxy, fake_upstream):
    proxy = await make_proxy(allow_api_keys=True, allowed_email_domains="school.edu")
    response = await proxy.get("/api/models", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert response.status == 403
    body = await response.json()
    assert body["code"] == "access_denied"
    assert "domain" in body["error"]
    assert fake_upstream.relayed() == []


async def test_api_keys_never_pass_a_group_rule(make_proxy, fake_upstream) -> None:
    """The IdP's groups are unknown without SSO: someone removed from a group keeps no
    access through a key minted before."""
    proxy = await make_proxy(allow_api_keys=True, allowed_groups="staff")
    response = await proxy.get("/api/models", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert response.status == 403
    assert "group" in (await response.json())["error"]
    assert fake_upstream.relayed() == []


async def test_a_bogus_key_reaches_nothing(make_proxy, fake_upstream) -> None:
    """Not even the endpoints OpenWebUI answers without any credential."""
    proxy = await make_proxy(allow_api_keys=True)
    for path in ("/api/config", "/api/version", "/static/favicon.png", "/health"):
        response = await proxy.get(path, headers={"Authorization": "Bearer sk-bogus"})
        assert response.status == 401, path
    assert fake_upstream.relayed() == []


async def test_a_key_with_another_persons_key_beside_it_is_refused(make_proxy, fake_upstream):
    fake_upstream.api_keys["sk-bob"] = "bob@example.edu"
    proxy = await make_proxy(allow_api_keys=True)
    response = await proxy.get(
        "/api/models", headers={"Authorization": "Bearer sk-bob", "X-Api-Key": ALICE_KEY}
    )
    assert response.status == 401
    assert fake_upstream.relayed() == []


async def test_whose_credential_was_used_is_logged_by_pseudonym(make_proxy, tmp_path) -> None:
    """With log pseudonyms on, the refusal names both people by pseudonym, neither by email."""
    from structlog.testing import capture_logs

    from tests.proxy.test_logs import key_file, pseudonym_of

    proxy = await make_proxy(log_pseudonym_key_file=str(key_file(tmp_path)))
    with capture_logs() as logs:
        response = await proxy.get(
            "/api/models", headers={**BOB_COOKIE, "Authorization": f"Bearer {ALICE_KEY}"}
        )
    assert response.status == 401
    (line,) = [entry for entry in logs if entry["event"] == "credential_not_theirs"]
    assert line["pseudonym"] == pseudonym_of("bob@example.edu")
    assert line["owner_pseudonym"] == pseudonym_of("alice@example.edu")
    assert "@example.edu" not in repr(logs)
