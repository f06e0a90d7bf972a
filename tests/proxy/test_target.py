"""The request target, read once as OpenWebUI's server reads it: a table of readings, then the
app refusing what servers may read differently (every row relayed on the old main)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import target as target_module
from proxy.target import NOT_A_PATH, read_target
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.rawhttp import raw_request

# (name, raw target, path as uvicorn reads it, route (the deny-list fold), refused?)
READING_ROWS = [
    ("plain", "/api/v1/chats/list", "/api/v1/chats/list", "/api/v1/chats/list", False),
    ("query kept apart", "/c/1?x=%2F#", "/c/1", "/c/1", True),
    ("encoded letter", "/api/v1/auths/sign%75p", "/api/v1/auths/signup", None, False),
    ("encoded slash is a separator", "/api/v1/auths%2Fsignup", "/api/v1/auths/signup", None, False),
    ("case kept, route folded", "/API/v1/Auths/", "/API/v1/Auths/", "/api/v1/auths", False),
    ("dots kept, route resolves", "/a/../api/v1/auths/add", None, "/api/v1/auths/add", False),
    ("double slash kept, route merges", "//api//v1", "//api//v1", "/api/v1", False),
    ("file name with # ? % &", "/f/Q%26A%20%233%3F%25.pdf", "/f/Q&A #3?%.pdf", None, False),
    ("model id with a slash", "/m/openai%2Fgpt-4o/chats", "/m/openai/gpt-4o/chats", None, False),
    ("non-ASCII, encoded", "/f/%C3%A9t%C3%A9", "/f/\u00e9t\u00e9", None, False),
    ("fragment", "/api/v1/auths/signup#x", "/api/v1/auths/signup", None, True),
    ("fragment before the query", "/a#b?c", "/a", "/a", True),
    ("fragment in the query", "/a?b#c", "/a", "/a", True),
    ("backslash", "/api\\v1", None, None, True),
    ("semicolon (path parameter)", "/api/v1/auths/signup;x", None, None, True),
    ("quote", '/a"b', None, None, True),
    ("brace", "/a{b}", None, None, True),
    ("pipe", "/a|b", None, None, True),
    ("raw non-ASCII", "/\u00e9", None, None, True),
    ("raw space", "/a b", None, None, True),
    ("percent without digits", "/a%zz", "/a%zz", None, True),
    ("percent at the end", "/a%", "/a%", None, True),
    ("percent and one digit", "/a%4", "/a%4", None, True),
    ("overlong slash", "/a%C0%AFb", None, None, True),
    ("stray byte", "/a%FF", None, None, True),
    ("encoded surrogate", "/a%ED%A0%80", None, None, True),
    ("encoded NUL", "/a%00", "/a\x00", None, True),
    ("encoded tab", "/a%09b", None, None, True),
    ("encoded DEL", "/a%7F", None, None, True),
    ("encoded C1 (NEL)", "/a%C2%85", None, None, True),
    ("query may hold what the path may not", "/a?q=%00;\\|", "/a", "/a", False),
]


@pytest.mark.parametrize(
    ("raw", "path", "route", "refused"),
    [r[1:] for r in READING_ROWS],
    ids=[r[0] for r in READING_ROWS],
)
def test_reading(raw: str, path: str | None, route: str | None, refused: bool) -> None:
    target = read_target(raw)
    assert target.raw == raw
    if path is not None:
        assert target.path == path
    if route is not None:
        assert target.route == route
    assert (target.problem is not None) is refused, target.problem


@pytest.mark.parametrize("raw", ["http://other/api/v1/chats", "*", "other:80", ""])
def test_only_origin_form_is_a_target(raw: str) -> None:
    assert read_target(raw).problem == NOT_A_PATH


# The account-creation bypass of the attack run and its relatives: OpenWebUI's server routes
# each of these to sign-up, adding users or LDAP (httptools ends the path at "#").
FRAGMENT_TARGETS = [
    "/api/v1/auths/signup#x",
    "/api/v1/auths/add#x",
    "/api/v1/auths/ldap#x",
    "/api/v1/auths/sign%75p#x",
    "/api/v1/auths/signup#/../../chats",
    "/api/v1/auths/signup?#",
]


@pytest.mark.parametrize("target", FRAGMENT_TARGETS)
async def test_account_creation_with_a_fragment_is_never_relayed(
    proxy, fake_auth, fake_upstream, target: str
) -> None:
    for headers in ([], [("Cookie", ALICE_COOKIE["Cookie"])]):
        response = await raw_request(proxy.host, proxy.port, target, headers, method="POST")
        assert response.status in (400, 403), target
    assert fake_upstream.seen == []
    assert fake_auth.seen == []


AMBIGUOUS_TARGETS = [
    "/api/v1/chats/list#x",
    "/api/v1/chats/list;jsessionid=1",
    "/api/v1\\chats/list",
    "/api/v1/chats/%zz",
    "/api/v1/chats/%C0%AE%C0%AE/x",
    "/api/v1/chats/%00",
    "/api/v1/chats/%0d%0aX:1",
    "/api/v1/chats/x%E2%80",
    '/api/v1/chats/"x"',
]


@pytest.mark.parametrize("target", AMBIGUOUS_TARGETS)
async def test_targets_servers_may_read_differently_are_a_400(
    proxy, fake_auth, fake_upstream, target: str
) -> None:
    response = await raw_request(proxy.host, proxy.port, target, list(ALICE_COOKIE.items()))
    assert response.status == 400, target
    assert b"refused" in response.body
    assert fake_upstream.seen == []
    assert fake_auth.seen == []  # the same answer for everyone: before authentication


async def test_what_every_server_reads_alike_is_still_relayed_byte_for_byte(
    proxy, fake_upstream
) -> None:
    for target in (
        "/api/v1/files/x/content/Q%26A%20%233%3F%25.pdf",
        "/api/v1/analytics/models/openai%2Fgpt-4o/chats?x=%23",
        "/api/v1/files/%C3%A9t%C3%A9",
    ):
        response = await raw_request(proxy.host, proxy.port, target, list(ALICE_COOKIE.items()))
        assert response.status == 200, target
        assert fake_upstream.last().raw_path == target


# --- the known paths: read_target's memory of paths read without a problem -----------------

# What a target is made of, the awkward parts over-represented: separators, escapes (valid,
# broken, overlong, of controls), dot segments, case, characters servers disagree about.
# fmt: off
_PIECES = [
    "/", "//", "/.", "/..", "a", "A", "api", "v1", "socket.io", "?", "#", "?#", "&", "=",
    "%", "%2F", "%2f", "%25", "%23", "%3F", "%C3%A9", "%C0%AF", "%FF", "%00", "%zz", ";",
    "\\", " ", "\u00e9", "|", "*", "http://x", "SignUp", "auths", "token=secret",
]
# fmt: on
_RAW_TARGETS = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join) | st.text(max_size=12)


@settings(max_examples=500, deadline=None)
@given(raw=_RAW_TARGETS, other_query=st.sampled_from(["", "?", "?x=1", "?a#b", "?#", "??"]))
def test_a_known_path_reads_exactly_as_the_target_read_in_full(raw: str, other_query: str) -> None:
    """Whatever is remembered, from whichever target, every target still reads exactly as
    the full reading does: the target itself, its path alone, and its path with another query
    (each read twice: the first may be remembered, the second may be found)."""
    head = raw.partition("?")[0]
    for text in (raw, head, head + other_query, raw, head, head + other_query):
        assert read_target(text) == target_module._read(text), text
    for path, known in target_module._known.items():
        assert known == target_module._read(path)
        assert known.problem is None
        assert known.query == ""


def test_no_query_string_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query may carry a secret: only paths are kept."""
    monkeypatch.setattr(target_module, "_known", {})
    read_target("/api/x?token=query-secret")
    read_target("/api/x?token=query-secret")
    assert "/api/x" in target_module._known
    assert not [k for k in target_module._known if "secret" in k]
    assert not [t for t in target_module._known.values() if "secret" in "".join(t[:4])]


def test_the_known_paths_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "_known", {})
    for n in range(3 * target_module._MAX_KNOWN):
        read_target(f"/p/{n}")
    assert 0 < len(target_module._known) <= target_module._MAX_KNOWN
    read_target("/" + "x" * target_module._MAX_KNOWN_PATH)  # too long to keep
    assert ("/" + "x" * target_module._MAX_KNOWN_PATH) not in target_module._known
    assert read_target("/p/0") == target_module._read("/p/0")
