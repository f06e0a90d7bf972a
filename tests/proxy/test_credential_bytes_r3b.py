"""A credential is read from the bytes OpenWebUI reads, not from aiohttp's decoding of them.

aiohttp's server decodes header bytes as UTF-8 (bytes that are not UTF-8 become lone
surrogates); OpenWebUI's server (uvicorn, Starlette) decodes them as Latin-1, and Python's
``str.strip`` then strips ``\\x85`` and ``\\xa0`` (NEL, NO-BREAK SPACE) there, where the
UTF-8 reading holds a surrogate that is no space. So ``Cookie: \\x85token=sk-...`` was a
``token`` cookie to OpenWebUI and none to the proxy: someone else's API key rode on the
signed-in person's request unchecked, and OpenWebUI (which compares an API key's owner with
nobody) acted as the key's owner. The JWT identity source lets such a Cookie through (the
forward-auth source refuses Cookie bytes that are not UTF-8, which hid it there).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from starlette.requests import cookie_parser

from proxy.credentials import carried, token_cookies, without_token_cookie
from tests.proxy.authorization_readings import assert_every_reading_is_carried
from tests.proxy.jwt_signed import SignedIn, key, signed_in, stack  # noqa: F401 (fixtures)

# Bytes the readers disagree on (NEL, NBSP, a UTF-8 lead byte, UTF-8 NBSP) and plain ones.
_BYTES = st.lists(
    st.sampled_from([b"token", b"=", b";", b" ", b'"', b"\x85", b"\xa0", b"\xc2", b"\xc2\xa0",
                     b"sk-1", b"a", b"\t"]),
    max_size=12,
).map(b"".join)  # fmt: skip


def await_json(response: Any) -> Any:
    return json.loads(response.body)


def _aiohttp(raw: bytes) -> str:
    """A header value as aiohttp's server hands it to the proxy."""
    return raw.decode("utf-8", "surrogateescape")


def _starlette(raw: bytes) -> str:
    """The same value as OpenWebUI's Starlette reads it."""
    return raw.decode("latin-1")


@settings(max_examples=1000, derandomize=True, database=None)
@given(raw=_BYTES)
def test_every_token_cookie_openwebui_reads_from_the_bytes_is_carried(raw: bytes) -> None:
    token = cookie_parser(_starlette(raw)).get("token")
    found = carried(CIMultiDict([("Cookie", _aiohttp(raw))]), "x-api-key").cookies
    if token:
        assert token in found
    assert set(token_cookies(_aiohttp(raw))) == set(found)
    # Dropped from a page load, it is gone for OpenWebUI too.
    (kept,) = without_token_cookie([_aiohttp(raw)]) or [""]
    assert "token" not in cookie_parser(_starlette(kept.encode("utf-8", "surrogateescape")))


@settings(max_examples=1000, derandomize=True, database=None)
@given(raw=_BYTES.map(lambda b: b.replace(b"token", b"Bearer ")))
def test_every_authorization_openwebui_reads_from_the_bytes_is_carried(raw: bytes) -> None:
    found = carried(CIMultiDict([("Authorization", _aiohttp(raw))]), "x-api-key").headers
    assert_every_reading_is_carried(_starlette(raw), found)


@pytest.mark.parametrize(
    "cookie",
    [
        "\x85token=sk-123",
        "\xa0token=sk-123",
        "token\x85=sk-123",
        "a=1; \xa0 token\x85 =\xa0sk-123\x85; b=2",
    ],
)
async def test_someone_elses_key_behind_a_latin1_space_is_not_relayed(
    signed_in: SignedIn,  # noqa: F811
    fake_upstream,
    cookie: str,
) -> None:
    """Ada is signed in (a JWT); Alice's key ``sk-123`` in a cookie OpenWebUI reads."""
    response = await signed_in.request(
        "/api/v1/chats/list", ("Accept", "application/json"), ("Cookie", cookie)
    )
    assert response.status == 401
    relayed = fake_upstream.relayed()
    assert relayed == []


async def test_the_same_on_a_page_load_is_dropped_for_openwebui_too(
    signed_in: SignedIn,  # noqa: F811
    fake_upstream,
) -> None:
    response = await signed_in.request(
        "/c/1", ("Accept", "text/html"), ("Cookie", "a=1; \x85token=sk-123")
    )
    assert response.status == 200
    relayed = fake_upstream.relayed()
    (seen,) = relayed
    for value in seen.values("Cookie"):
        assert "token" not in cookie_parser(value)  # Seen keeps the bytes as Latin-1


async def test_a_non_ascii_credential_is_refused_without_asking_openwebui(
    signed_in: SignedIn,  # noqa: F811
    fake_upstream,
) -> None:
    """OpenWebUI issues no such credential, and the proxy could not ask about its bytes."""
    response = await signed_in.request("/api/v1/chats/list", ("Authorization", "Bearer sk-12\x853"))
    assert response.status == 401
    assert (await_json(response))["code"] == "credential_owner_unknown"
    # Neither asked about (its bytes could not be sent as they came) nor relayed.
    assert [r.raw_path for r in fake_upstream.seen if r.raw_path != "/api/config"] == []
