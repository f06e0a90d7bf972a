"""Forward-auth hardening: an injective decision-cache key, exact bytes to the auth service,
and an identity answer that is unambiguous and text, or a 502 (never a 500, never a guess)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.auth.forward import Asked, _checked, decision_key
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.rawhttp import raw_request

# --- the cache key ---------------------------------------------------------------------------

# Values as aiohttp hands them over: any text, plus lone surrogates for raw bytes.
_values = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
_asked = st.builds(Asked, *[_values] * len(Asked._fields))


def _exact_bytes(asked: Asked) -> tuple[tuple[bytes, bytes], ...] | None:
    """What the auth service would be sent, or None where the proxy refuses to send it."""
    try:
        return tuple(
            (name.encode("utf-8"), value.encode("utf-8"))
            for name, value in sorted(asked.headers().items())
        )
    except UnicodeEncodeError:
        return None


@st.composite
def _neighbours(draw: st.DrawFn) -> tuple[Asked, Asked]:
    """Two questions that differ in one character, one split point, or not at all: the
    near misses a collision hides in (random pairs would almost never be close)."""
    a = draw(_asked)
    b = list(a)
    field = draw(st.integers(0, len(a) - 1))
    value = a[field]
    how = draw(st.sampled_from(["replace", "insert", "move-to-other-field", "same"]))
    at = draw(st.integers(0, len(value)))
    char = draw(st.characters(codec=None, exclude_categories=()))
    if how == "replace" and value:
        at = min(at, len(value) - 1)
        b[field] = value[:at] + char + value[at + 1 :]
    elif how == "insert":
        b[field] = value[:at] + char + value[at:]
    elif how == "move-to-other-field":
        other = draw(st.integers(0, len(a) - 1))
        b[field], b[other] = value[:at], value[at:] + b[other]
    return a, Asked(*b)


@given(_neighbours())
def test_decision_key_is_injective_over_what_the_auth_service_is_sent(pair) -> None:
    a, b = pair
    sent_a, sent_b = _exact_bytes(a), _exact_bytes(b)
    if sent_a is None or sent_b is None:
        return  # refused before any key is made (test_non_utf8_cookie_is_refused_...)
    assert (decision_key(a) == decision_key(b)) == (sent_a == sent_b)


def _question(cookie: str = "s=abc", **values: str) -> Asked:
    base = dict.fromkeys(Asked._fields, "") | {"method": "GET", "accept": "*/*"}
    return Asked(**(base | values | {"cookie": cookie}))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("s=caf\u00e9", "s=caf\u00ff", id="two-latin-1-letters"),
        pytest.param("s=\u4e2d", "s=\u6587", id="two-non-latin-1-letters"),
        pytest.param("s=a\x00b", "s=a", id="separator-inside-a-value"),
    ],
)
def test_keys_that_used_to_collide_differ(a: str, b: str) -> None:
    assert decision_key(_question(a)) != decision_key(_question(b))


def test_values_cannot_shift_into_other_fields() -> None:
    assert decision_key(_question(host="x\x00B\x00y", uri="")) != decision_key(
        _question(host="x", uri="y")
    )


def test_every_value_the_header_set_is_built_from_is_in_the_key() -> None:
    """A field left out of the key would let one request's answer stand in for another's."""
    base = _question()
    for field in Asked._fields:
        changed = base._replace(**{field: getattr(base, field) + "z"})
        assert changed.headers() != base.headers()
        assert decision_key(changed) != decision_key(base), field


@pytest.mark.parametrize("length", [0, 9, 10, 1023, 1024, 1025, 5000])
def test_long_values_are_length_prefixed_as_short_ones(length: int) -> None:
    """The lengths come from a table up to 1,023 and are formatted past it: the same text
    either way, so values at the table's edge cannot shift into their neighbours."""
    for field in Asked._fields[:-1]:
        question = _question(**{field: "a" * length})
        expected = "".join(f"{len(v)}:{v}" for v in question[:-1]) + question.cookie
        assert _checked(question) == expected.encode("utf-8"), field
    longer = _question(uri="u" * length, accept="xy")
    shifted = _question(uri="u" * length + "x", accept="y")
    assert decision_key(longer) != decision_key(shifted)


def _utf8(text: str) -> str:
    """``text``'s UTF-8 bytes as the latin-1 string raw_request writes byte for byte."""
    return text.encode("utf-8").decode("latin-1")


async def test_distinct_non_latin_1_cookies_never_share_a_cached_identity(
    make_proxy, fake_auth, fake_upstream
) -> None:
    """The attack: the second user's cookie used to hash like the first's."""
    fake_auth.users = {
        "\u4e2d": {"X-Auth-Request-Email": "first@example.edu"},
        "\u6587": {"X-Auth-Request-Email": "second@example.edu"},
    }
    proxy = await make_proxy(forward_auth_cache_s=60)
    first = await raw_request(proxy.host, proxy.port, "/x", [("Cookie", _utf8("_oauth2_proxy=中"))])
    assert first.status == 200
    assert fake_upstream.last().values("X-User-Email") == ["first@example.edu"]
    cookie = _utf8("_oauth2_proxy=文")
    second = await raw_request(proxy.host, proxy.port, "/x", [("Cookie", cookie)])
    assert second.status == 200
    assert fake_upstream.last().values("X-User-Email") == ["second@example.edu"]
    assert len(fake_auth.seen) == 2


async def test_non_utf8_cookie_is_refused_before_the_auth_service_is_asked(
    make_proxy, fake_auth, fake_upstream
) -> None:
    """aiohttp's client would drop the bytes it cannot encode: the service would judge a
    different cookie from the one OpenWebUI receives."""
    proxy = await make_proxy(forward_auth_cache_s=60)
    response = await raw_request(
        proxy.host,
        proxy.port,
        "/x",
        [("Cookie", "_oauth2_proxy=alice-session; x=caf\xe9")],  # written as latin-1: raw 0xE9
    )
    assert response.status == 400
    assert fake_auth.seen == []
    assert fake_upstream.seen == []


# --- the identity answer ---------------------------------------------------------------------

Answer = Callable[[bytes], Any]


@pytest.fixture
async def raw_auth() -> AsyncIterator[Callable[[bytes], Any]]:
    """An auth service answering every request with exactly the given response head."""
    servers: list[asyncio.Server] = []

    async def make(head: bytes) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/oauth2/auth"

    yield make
    for server in servers:
        server.close()
        await server.wait_closed()


ANSWERS = [
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-Email: b@x.edu\r\n", id="two-emails"
    ),
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nx-auth-request-email: a@x.edu\r\n",
        id="same-email-twice-other-case",
    ),
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-User: A\r\nX-Auth-Request-User: B\r\n",
        id="two-names",
    ),
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-Groups: staff\r\n"
        b"X-Auth-Request-Groups: admins\r\n",
        id="two-group-lists",
    ),
    pytest.param(b"X-Auth-Request-Email: \xe2\x84\xaaate@x.edu\r\n", id="kelvin-sign-email"),
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-User: caf\xe9\r\n",
        id="name-byte-not-utf8",
    ),
    pytest.param(
        b"X-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-Groups: st\xffaff\r\n",
        id="group-byte-not-utf8",
    ),
]


@pytest.mark.parametrize("identity_headers", ANSWERS)
async def test_an_unusable_identity_answer_is_502(
    make_proxy, raw_auth, fake_upstream, identity_headers: bytes
) -> None:
    url = await raw_auth(b"HTTP/1.1 200 OK\r\n" + identity_headers)
    proxy = await make_proxy(forward_auth_url=url)
    response = await proxy.get("/x", headers=ALICE_COOKIE)
    assert response.status == 502
    assert (await response.json())["error"]  # the reason, for the operator
    assert fake_upstream.seen == []


async def test_a_clean_identity_answer_from_the_raw_service_is_relayed(
    make_proxy, raw_auth, fake_upstream
) -> None:
    """The control for the table above: the same raw service, one clean answer, works."""
    url = await raw_auth(
        b"HTTP/1.1 200 OK\r\nX-Auth-Request-Email: a@x.edu\r\nX-Auth-Request-User: Zo\xc3\xab\r\n"
    )
    proxy = await make_proxy(forward_auth_url=url)
    response = await proxy.get("/x", headers=ALICE_COOKIE)
    assert response.status == 200
    assert fake_upstream.last().values("X-User-Email") == ["a@x.edu"]
    assert fake_upstream.last().values("X-User-Name") == ["Zo%C3%AB"]
