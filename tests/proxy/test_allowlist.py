"""The internal allowlist: one table of request targets, allowed or refused, and why."""

from __future__ import annotations

import pytest

from proxy.allowlist import Allowed, Allowlist, Refused, parse_rule
from proxy.settings import DEFAULT_INTERNAL_ALLOW
from proxy.target import read_target

UUID = "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
DEFAULT = Allowlist(DEFAULT_INTERNAL_ALLOW)

# (id, method, raw target, expected): expected is the relayed target when allowed, or a
# fragment of the refusal reason when refused (prefixed with "!").
CASES = [
    # --- what the provisioner needs --------------------------------------------------
    ("config", "GET", "/api/config", "/api/config"),
    ("signin", "POST", "/api/v1/auths/signin", "/api/v1/auths/signin"),
    ("new-chat", "POST", "/api/v1/chats/new", "/api/v1/chats/new"),
    ("archived", "GET", "/api/v1/chats/archived", "/api/v1/chats/archived"),
    ("archived-paged", "GET", "/api/v1/chats/archived?page=2", "/api/v1/chats/archived?page=2"),
    ("list", "GET", "/api/v1/chats/list", "/api/v1/chats/list"),
    ("all", "GET", "/api/v1/chats/all", "/api/v1/chats/all"),
    ("get-chat", "GET", f"/api/v1/chats/{UUID}", f"/api/v1/chats/{UUID}"),
    ("archive-chat", "POST", f"/api/v1/chats/{UUID}/archive", f"/api/v1/chats/{UUID}/archive"),
    ("delete-chat", "DELETE", f"/api/v1/chats/{UUID}", f"/api/v1/chats/{UUID}"),
    ("query-not-matched", "GET", "/api/config?x=/api/v1/users", "/api/config?x=/api/v1/users"),
    ("encoded-unreserved-decoded", "GET", "/api/%63onfig", "/api/config"),
    (
        "encoded-hyphen-in-param",
        "GET",
        f"/api/v1/chats/{UUID[:8]}%2D{UUID[9:]}",
        f"/api/v1/chats/{UUID}",
    ),
    ("upper-case-uuid", "GET", f"/api/v1/chats/{UUID.upper()}", f"/api/v1/chats/{UUID.upper()}"),
    # --- {id} is a UUID: other routes of the same shape stay out ------------------------
    ("chats-config-is-not-an-id", "GET", "/api/v1/chats/config", "!not on the internal allowlist"),
    ("chats-pinned-is-not-an-id", "GET", "/api/v1/chats/pinned", "!not on the internal allowlist"),
    ("chats-all-is-not-an-id", "DELETE", "/api/v1/chats/all", "!not on the internal allowlist"),
    ("short-id", "DELETE", "/api/v1/chats/a-b", "!not on the internal allowlist"),
    ("uuid-with-suffix", "GET", f"/api/v1/chats/{UUID}x", "!not on the internal allowlist"),
    # --- not on the list -------------------------------------------------------------
    ("other-endpoint", "GET", "/api/v1/users", "!not on the internal allowlist"),
    ("admin-endpoint", "POST", "/api/v1/users/abc/update", "!not on the internal allowlist"),
    ("root", "GET", "/", "!not on the internal allowlist"),
    ("wrong-method", "DELETE", "/api/config", "!not on the internal allowlist"),
    ("head-is-not-get", "HEAD", "/api/config", "!not on the internal allowlist"),
    ("lower-case-method", "get", "/api/config", "!not on the internal allowlist"),
    ("mixed-case-method", "Post", "/api/v1/chats/new", "!not on the internal allowlist"),
    ("options", "OPTIONS", "/api/config", "!not on the internal allowlist"),
    ("path-case", "GET", "/API/config", "!not on the internal allowlist"),
    ("prefix-only", "GET", "/api/v1/chats", "!not on the internal allowlist"),
    ("extra-segment", "GET", "/api/config/extra", "!not on the internal allowlist"),
    ("param-spans-two", "GET", "/api/v1/chats/a/b", "!not on the internal allowlist"),
    ("param-with-dot", "GET", "/api/v1/chats/a.b", "!not on the internal allowlist"),
    ("param-with-tilde", "GET", "/api/v1/chats/~x", "!not on the internal allowlist"),
    # --- empty and dot segments --------------------------------------------------------
    ("trailing-slash", "GET", "/api/config/", "!empty path segment"),
    ("trailing-slash-on-an-id-rule", "DELETE", f"/api/v1/chats/{UUID}/", "!empty path segment"),
    # --- a rule ending in '/' names that one slash, and only it -------------------------
    ("folders-with-its-slash", "GET", "/api/v1/folders/", "/api/v1/folders/"),
    ("folders-create", "POST", "/api/v1/folders/", "/api/v1/folders/"),
    ("folders-without-slash", "GET", "/api/v1/folders", "!not on the internal allowlist"),
    ("folders-two-slashes", "GET", "/api/v1/folders//", "!empty path segment"),
    ("folders-encoded-slash", "GET", "/api/v1/folders%2F", "!encoded slash"),
    ("folders-wrong-method", "PUT", "/api/v1/folders/", "!empty path segment"),
    ("double-slash", "GET", "/api//config", "!empty path segment"),
    ("leading-double-slash", "GET", "//api/config", "!empty path segment"),
    ("dot-segment", "GET", "/api/./config", "!dot segment"),
    ("dotdot-escape", "GET", "/api/v1/chats/new/../../users", "!dot segment"),
    ("dotdot-into-allowed", "GET", "/api/v1/users/../../config", "!dot segment"),
    ("dotdot-param", "DELETE", "/api/v1/chats/..", "!dot segment"),
    ("dot-param", "DELETE", "/api/v1/chats/.", "!dot segment"),
    # --- encoded tricks ----------------------------------------------------------------
    ("encoded-slash", "GET", "/api/v1/chats/x%2F..%2F..%2Fusers", "!encoded slash"),
    ("encoded-slash-lower", "GET", "/api/v1/chats/x%2f..", "!encoded slash"),
    ("encoded-slash-in-param", "DELETE", "/api/v1/chats/a%2Fb", "!encoded slash"),
    ("encoded-dot", "GET", "/api/v1/chats/%2E%2E", "!encoded dot"),
    ("encoded-dot-lower", "GET", "/api/v1/chats/%2e%2e", "!encoded dot"),
    ("encoded-dot-mixed", "GET", "/api/v1/chats/.%2e", "!encoded dot"),
    ("encoded-dot-in-name", "GET", "/api/v1/chats/a%2Eb", "!encoded dot"),
    ("double-encoded-slash", "GET", "/api/v1/chats/x%252F..", "!double percent-encoding"),
    ("double-encoded-dot", "GET", "/api/v1/chats/%252E%252E", "!double percent-encoding"),
    ("encoded-backslash", "GET", "/api/v1/chats/x%5C..", "!encoded backslash"),
    ("encoded-backslash-lower", "GET", "/api/v1/chats/x%5c..", "!encoded backslash"),
    ("encoded-nul", "GET", "/api/config%00", "!percent-encoded control character"),
    ("encoded-crlf", "GET", "/api/config%0D%0AX-User-Role:admin", "!control character"),
    ("encoded-semicolon", "GET", "/api/config%3Bx", "!percent-encoded character ';'"),
    ("encoded-question", "GET", "/api/config%3F", "!percent-encoded character '?'"),
    ("encoded-hash", "GET", "/api/config%23", "!percent-encoded character '#'"),
    ("encoded-space", "DELETE", "/api/v1/chats/a%20b", "!percent-encoded character ' '"),
    ("encoded-utf8", "GET", "/api/v1/chats/%C2%AD", "!percent-encoded non-ASCII"),
    ("overlong-utf8-slash", "GET", "/api/v1/chats/%C0%AF", "!percent-encoded non-ASCII"),
    ("truncated-escape", "GET", "/api/config%2", "!invalid percent-encoding"),
    ("bad-hex-escape", "GET", "/api/config%zz", "!invalid percent-encoding"),
    ("bare-percent", "GET", "/api/con%fig", "!invalid percent-encoding"),
    # --- raw characters ----------------------------------------------------------------
    ("backslash", "GET", "/api/v1/chats/x\\..\\users", "!backslash"),
    ("path-param-semicolon", "GET", "/api/config;jsessionid=1", "!character ';'"),
    ("path-param-in-segment", "DELETE", f"/api/v1/chats/{UUID};x", "!character ';'"),
    ("colon", "GET", "/api/v1/chats/a:b", "!character ':'"),
    ("at-sign", "GET", "/api/v1/chats/@x", "!character '@'"),
    ("nul", "GET", "/api/config\x00", "!control character"),
    ("tab", "GET", "/api/config\t", "!control character"),
    ("space", "GET", "/api/con fig", "!character ' '"),
    ("unicode-fullwidth-slash", "GET", "/api/v1/chats/x\uff0f..", "!non-ASCII"),
    ("unicode-one-dot-leader", "GET", "/api/v1/chats/\u2024\u2024", "!non-ASCII"),
    ("unicode-cyrillic-a", "GET", "/\u0430pi/config", "!non-ASCII"),
    ("unicode-division-slash", "GET", "/api/v1/chats/a\u2215b", "!non-ASCII"),
    # --- request-target forms ------------------------------------------------------------
    ("absolute-form", "GET", "http://127.0.0.1/api/config", "!origin-form"),
    ("absolute-form-https", "GET", "https://owui/api/v1/users", "!origin-form"),
    ("asterisk-form", "OPTIONS", "*", "!origin-form"),
    ("authority-form", "GET", "127.0.0.1:8080", "!origin-form"),
    ("empty-target", "GET", "", "!origin-form"),
    ("fragment", "GET", "/api/config#x", "!fragment"),
    ("query-with-space", "GET", "/api/config?a b", "!query string"),
    ("query-with-crlf", "GET", "/api/config?a\r\nX-User-Role: admin", "!query string"),
    ("query-non-ascii", "GET", "/api/config?\u0430", "!query string"),
]


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [pytest.param(m, t, e, id=i) for i, m, t, e in CASES],
)
def test_default_allowlist(method: str, target: str, expected: str) -> None:
    """Each target is relayed to exactly the expected canonical target, or refused for the
    expected reason."""
    decision = DEFAULT.check(method, read_target(target))
    if expected.startswith("!"):
        assert isinstance(decision, Refused), decision
        assert expected[1:] in decision.reason
    else:
        assert isinstance(decision, Allowed), decision
        assert decision.target == expected


def test_allowed_names_the_rule() -> None:
    """The decision says which rule matched (for the log)."""
    decision = DEFAULT.check("POST", read_target(f"/api/v1/chats/{UUID}/archive"))
    assert isinstance(decision, Allowed)
    assert str(decision.rule) == "POST /api/v1/chats/{id}/archive"


def test_every_default_rule_is_reachable() -> None:
    """No default rule is shadowed or unmatchable: each allows a concrete request."""
    for rule in DEFAULT.rules:
        path = rule.pattern.replace("{id}", UUID)
        decision = DEFAULT.check(rule.method, read_target(path))
        assert isinstance(decision, Allowed)
        assert decision.rule == rule


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        pytest.param("get /api/config", "must start with", id="lower-case-method"),
        pytest.param("FETCH /api/config", "must start with", id="unknown-method"),
        pytest.param("GET", "must start with", id="no-path"),
        pytest.param("GET api/config", "must start with '/'", id="relative-path"),
        pytest.param("GET /", "at least one segment", id="root-only"),
        pytest.param("GET /api//config", "segment ''", id="empty-segment"),
        pytest.param("GET /api/config//", "segment ''", id="two-trailing-slashes"),
        pytest.param("GET /api/../config", "segment '..'", id="dot-segment"),
        pytest.param("GET /api/{id", "segment '{id'", id="unclosed-param"),
        pytest.param("GET /api/x{id}", "segment 'x{id}'", id="param-inside-segment"),
        pytest.param("GET /api/{}", "not a valid {param}", id="empty-param"),
        pytest.param("GET /api/{1d}", "not a valid {param}", id="param-name-digit"),
        pytest.param("GET /api/%2e", "segment '%2e'", id="encoded-literal"),
    ],
)
def test_bad_rules_are_refused(rule: str, problem: str) -> None:
    """A rule that could not match safely is a start-up error naming it."""
    with pytest.raises(ValueError, match="bad internal allowlist") as info:
        Allowlist(["GET /api/config", rule])
    assert problem in str(info.value)
    assert repr(rule) in str(info.value)


def test_every_bad_rule_is_reported_together() -> None:
    with pytest.raises(ValueError, match="bad internal allowlist") as info:
        Allowlist(["GET /ok", "get /a", "GET /b//"])
    assert "'get /a'" in str(info.value)
    assert "'GET /b//'" in str(info.value)


def test_empty_allowlist_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Allowlist([])


def test_parse_rule_id_param_is_a_uuid() -> None:
    rule = parse_rule("DELETE /api/v1/chats/{id}")
    assert rule.segments[:3] == ("api", "v1", "chats")
    assert rule.matches("DELETE", ("api", "v1", "chats", UUID))
    assert not rule.matches("DELETE", ("api", "v1", "chats", ""))
    assert not rule.matches("DELETE", ("api", "v1", "chats", "config"))


def test_parse_rule_other_params_match_one_plain_segment() -> None:
    rule = parse_rule("GET /api/v1/models/{model}")
    assert rule.matches("GET", ("api", "v1", "models", "ralph-wiggum"))
    assert not rule.matches("GET", ("api", "v1", "models", "a.b"))
    assert not rule.matches("GET", ("api", "v1", "models", ""))
