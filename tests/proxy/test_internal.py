"""The internal act-as listener, through its real app, against the recording fake upstream.

Every refusal is checked on both sides: what the caller got, and that the upstream saw
nothing. Raw requests (``_raw``) are used wherever a client library would normalise the
request target before sending it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from structlog.testing import capture_logs

from proxy.internal import create_internal_app, reload_tokens
from proxy.settings import Settings, SettingsError, load_settings
from proxy.tokens import fingerprint
from proxy.upstream import Upstream
from tests.fakes import FakeUpstream, Seen
from tests.proxy.rawhttp import raw_request

TOKEN = "svc-token-0123456789abcdefghijklmnopqrstuvwxyz"
NEXT = "svc-token-NEXT-ZYXWVUTSRQPONMLKJIHGFEDCBA9876"
UUID = "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
STUDENT = "student@example.edu"
AUTH = {"Proxy-Authorization": f"Bearer {TOKEN}"}
ACT = {"X-User-Email": STUDENT}
SIGNIN_BODY = {"email": "", "password": ""}
_UTF8_NBSP = "\u00a0".encode().decode("latin-1")


@dataclass
class Internal:
    client: TestClient[Any, Any]
    app: web.Application
    upstream: FakeUpstream
    tokens: Path

    async def raw(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """One hand-written HTTP/1.1 request: the target reaches the server byte for byte."""
        length = [] if body else [("Content-Length", "0")]
        response = await raw_request(
            self.client.server.host,
            self.client.server.port,
            target,
            headers + length,
            method=method,
            body=body,
        )
        return response.status, response.headers, response.body


def load_settings_from(tmp_path: Path, **extra: str) -> Settings:
    """The settings as the process loads them (environment), so every problem is listed."""
    values = {
        "upstream": "http://127.0.0.1:9",
        "auth": "forward",
        "forward_auth_url": "http://127.0.0.1:9/oauth2/auth",
        "internal_listen": "127.0.0.1:8001",
        "internal_tokens_file": str(tmp_path / "tokens"),
        **extra,
    }
    env = {f"OWUI_PROXY_{key.upper()}": value for key, value in values.items()}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return load_settings()


def write_tokens(path: Path, *tokens: str, mode: int = 0o600) -> Path:
    path.write_text("# service tokens\n" + "".join(f"{t}\n" for t in tokens), encoding="ascii")
    path.chmod(mode)
    return path


def make_settings(
    tmp_path: Path, upstream_url: str = "http://127.0.0.1:9", **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "upstream": upstream_url,
        "auth": "forward",
        "forward_auth_url": "http://127.0.0.1:9/oauth2/auth",
        "internal_listen": "127.0.0.1:8001",
        "internal_tokens_file": tmp_path / "tokens",
    }
    values.update(extra)
    return Settings(**values)


@pytest.fixture
async def internal(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[Internal]:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, str(server.make_url("/")))
    upstream = Upstream.open(settings)
    app = create_internal_app(settings, upstream)
    client = await aiohttp_client(app)
    yield Internal(client, app, fake, tokens)
    await upstream.close()


def only(seen: list[Seen]) -> Seen:
    assert len(seen) == 1, seen
    return seen[0]


def audits(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "internal_audit"]


# --- 407: the service token ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="missing"),
        pytest.param(
            [("Proxy-Authorization", "Bearer wrong-token-0123456789abcdefghijkl")], id="wrong"
        ),
        pytest.param([("Proxy-Authorization", f"Bearer {TOKEN[:-1]}")], id="prefix-of-token"),
        pytest.param([("Proxy-Authorization", f"Bearer {TOKEN}x")], id="token-plus-one"),
        pytest.param([("Proxy-Authorization", f"Basic {TOKEN}")], id="basic-scheme"),
        pytest.param([("Proxy-Authorization", TOKEN)], id="no-scheme"),
        pytest.param([("Proxy-Authorization", "Bearer")], id="scheme-only"),
        pytest.param([("Proxy-Authorization", "Bearer ")], id="scheme-and-space"),
        # UTF-8 on the wire (raw requests are written as latin-1): a Unicode space is part of
        # what was presented, not trimmed away (str.strip() would).
        pytest.param(
            [("Proxy-Authorization", f"Bearer {TOKEN}{_UTF8_NBSP}")], id="token-plus-nbsp"
        ),
        pytest.param(
            [("Proxy-Authorization", f"Bearer {_UTF8_NBSP}{TOKEN}")], id="nbsp-before-token"
        ),
        pytest.param([("Authorization", f"Bearer {TOKEN}")], id="in-authorization"),
        pytest.param([("Proxy_Authorization", f"Bearer {TOKEN}")], id="underscore-spelling"),
        pytest.param([("X-Service-Token", TOKEN)], id="other-header"),
        pytest.param(
            [("Proxy-Authorization", f"Bearer {TOKEN}"), ("Proxy-Authorization", "Bearer x")],
            id="two-headers",
        ),
    ],
)
async def test_no_valid_token_is_407_and_upstream_sees_nothing(
    internal: Internal, headers: list[tuple[str, str]]
) -> None:
    status, response_headers, body = await internal.raw(
        "POST", "/api/v1/auths/signin", [*headers, ("X-User-Email", STUDENT)], b"{}"
    )
    assert status == 407
    assert response_headers["Proxy-Authenticate"] == "Bearer"
    assert response_headers["Content-Type"].startswith("application/json")
    assert "error" in json.loads(body)
    assert internal.upstream.seen == []


async def test_token_is_checked_before_the_allowlist(internal: Internal) -> None:
    """Without a token even a forbidden endpoint answers 407: nothing about the list leaks."""
    response = await internal.client.get("/api/v1/users", headers=ACT)
    assert response.status == 407
    assert internal.upstream.seen == []


async def test_bearer_scheme_is_case_insensitive(internal: Internal) -> None:
    response = await internal.client.get(
        "/api/config", headers={"Proxy-Authorization": f"bearer  {TOKEN}", **ACT}
    )
    assert response.status == 200
    assert len(internal.upstream.seen) == 1


# --- relaying as the act-as user ----------------------------------------------------------


async def test_signin_as_the_named_user(internal: Internal) -> None:
    """The fake signs in whoever the email header names, exactly as OpenWebUI does."""
    response = await internal.client.post(
        "/api/v1/auths/signin",
        json=SIGNIN_BODY,
        headers={
            **AUTH,
            "X-User-Email": "Student@Example.EDU",
            "X-User-Name": "Ada%20L%C3%B6we",
            "Accept-Encoding": "gzip, br",
        },
    )
    assert response.status == 200
    assert (await response.json())["email"] == STUDENT
    probe, seen = internal.upstream.seen  # the onboarding probe, then the sign-in itself
    assert (probe.method, probe.raw_path) == ("GET", "/api/config")
    assert probe.values("X-User-Email") == []
    assert seen.method == "POST"
    assert seen.raw_path == "/api/v1/auths/signin"
    # The guard reads the answer, so it is asked for uncompressed.
    assert seen.values("Accept-Encoding") == ["identity"]
    assert seen.values("X-User-Email") == [STUDENT]
    # Sent as OpenWebUI reads it (percent-encoded), relayed unchanged, not encoded twice.
    assert seen.values("X-User-Name") == ["Ada%20L%C3%B6we"]
    assert json.loads(seen.body) == SIGNIN_BODY


# --- sign-in yields ordinary users' tokens only ------------------------------------------


async def test_an_admins_token_is_never_handed_out(internal: Internal) -> None:
    """A service token acts as users, never as an admin: the sign-in answer is withheld."""
    internal.upstream.roles["boss@example.edu"] = "admin"
    with capture_logs() as logs:
        response = await internal.client.post(
            "/api/v1/auths/signin",
            json=SIGNIN_BODY,
            headers={**AUTH, "X-User-Email": "boss@example.edu"},
        )
        body = await response.text()
    assert response.status == 403
    assert "does not act as admin accounts" in body
    assert json.loads(body)["code"] == "admin_account"
    assert "tok.boss@example.edu" not in body
    assert "Set-Cookie" not in response.headers
    (audit,) = [line for line in logs if line["event"] == "internal_audit"]
    assert (audit["outcome"], audit["status"]) == ("forbidden", 403)


async def test_signin_is_refused_while_openwebui_has_no_user(internal: Internal) -> None:
    """Its first account becomes admin: the service must not choose who that is."""
    internal.upstream.onboarding = True
    headers = {**AUTH, "X-User-Email": STUDENT}
    response = await internal.client.post("/api/v1/auths/signin", json=SIGNIN_BODY, headers=headers)
    assert response.status == 403
    refusal = await response.json()
    assert "no users yet" in refusal["error"]
    assert refusal["code"] == "onboarding"
    assert [s.raw_path for s in internal.upstream.seen] == ["/api/config"]  # no sign-in sent

    internal.upstream.onboarding = False  # the operator signed in
    for _ in range(2):
        response = await internal.client.post(
            "/api/v1/auths/signin", json=SIGNIN_BODY, headers=headers
        )
        assert response.status == 200
    # Once OpenWebUI has a user it keeps one: the probe is not repeated.
    assert [s.raw_path for s in internal.upstream.seen] == [
        "/api/config",
        "/api/config",
        "/api/v1/auths/signin",
        "/api/v1/auths/signin",
    ]


async def test_a_signin_answer_without_a_role_fails_closed(internal: Internal) -> None:
    internal.upstream.roles[STUDENT] = None  # type: ignore[assignment]
    response = await internal.client.post(
        "/api/v1/auths/signin", json=SIGNIN_BODY, headers={**AUTH, "X-User-Email": STUDENT}
    )
    assert response.status == 502
    assert "tok." not in await response.text()


SPOOFS = [
    pytest.param("X-User-Role", "admin", id="role"),
    pytest.param("x-user-role", "admin", id="role-lower"),
    pytest.param("X-USER-ROLE", "admin", id="role-upper"),
    pytest.param("X_User_Role", "admin", id="role-underscore"),
    pytest.param("x_uSeR-rOlE", "admin", id="role-mixed"),
    pytest.param("X-User-Groups", "admins", id="groups"),
    pytest.param("x_user_groups", "admins", id="groups-underscore"),
    pytest.param("X-User-Email", "admin@example.edu", id="second-email"),
    pytest.param("X_User_Email", "admin@example.edu", id="email-underscore"),
    pytest.param("X_User_Name", "Admin", id="name-underscore"),
    pytest.param("Connection", "X-User-Email", id="connection-names-email"),
]


@pytest.mark.parametrize(("name", "value"), SPOOFS)
async def test_only_the_act_as_identity_reaches_upstream(
    internal: Internal, name: str, value: str
) -> None:
    """Whatever identity headers the caller adds, upstream gets exactly one email header,
    the act-as user's, and never groups, role or the service token."""
    status, _, _ = await internal.raw(
        "GET",
        "/api/config",
        [
            ("Proxy-Authorization", f"Bearer {TOKEN}"),
            ("X-User-Email", STUDENT),
            (name, value),
        ],
    )
    if name.lower().replace("_", "-") == "x-user-email":
        # Two act-as emails, in whatever spelling, are ambiguous: refused, nothing relayed.
        assert status == 400
        assert internal.upstream.seen == []
        return
    assert status == 200
    seen = only(internal.upstream.seen)
    names = seen.names_normalised()
    assert names.count("x-user-email") == 1
    assert seen.values("X-User-Email") == [STUDENT]
    assert "x-user-role" not in names
    assert "x-user-groups" not in names
    assert "proxy-authorization" not in names
    # Any spelling of the name header is read as the name (one at most), sent canonically.
    expected_names = [value] if name == "X_User_Name" else []
    assert seen.values("X-User-Name") == expected_names
    assert names.count("x-user-name") == len(expected_names)
    assert all(TOKEN not in v for _, v in seen.headers)


@pytest.mark.parametrize(
    "spoof",
    [
        pytest.param([], id="plain"),
        pytest.param([("X-User-Role", "admin"), ("x_user_groups", "admins")], id="role-groups"),
    ],
)
async def test_naming_nobody_relays_with_no_identity(
    internal: Internal, spoof: list[tuple[str, str]]
) -> None:
    """``GET /api/config`` needs no user: with no act-as email, no identity header at all
    reaches upstream, and the audit line says so."""
    with capture_logs() as logs:
        status, _, _ = await internal.raw(
            "GET", "/api/config", [("Proxy-Authorization", f"Bearer {TOKEN}"), *spoof]
        )
    assert status == 200
    names = only(internal.upstream.seen).names_normalised()
    for header in ("x-user-email", "x-user-name", "x-user-groups", "x-user-role"):
        assert header not in names
    [line] = audits(logs)
    assert (line["outcome"], line["act_as"]) == ("relayed", None)


async def test_signin_naming_nobody_gets_openwebuis_refusal(internal: Internal) -> None:
    """Nothing is invented: OpenWebUI itself refuses a sign-in without the trusted header."""
    response = await internal.client.post("/api/v1/auths/signin", json=SIGNIN_BODY, headers=AUTH)
    assert response.status == 400
    assert "trusted header" in (await response.json())["detail"]


async def test_openwebui_token_and_body_pass_through(internal: Internal) -> None:
    """The user's OpenWebUI token (Authorization) and the JSON body go through untouched."""
    chat = {"chat": {"title": "Module 1"}, "folder_id": None}
    response = await internal.client.post(
        "/api/v1/chats/new",
        json=chat,
        headers={**AUTH, **ACT, "Authorization": f"Bearer tok.{STUDENT}"},
    )
    assert response.status == 200
    seen = only(internal.upstream.seen)
    assert seen.values("Authorization") == [f"Bearer tok.{STUDENT}"]
    assert json.loads(seen.body) == chat


async def test_user_mismatch_from_upstream_is_relayed(internal: Internal) -> None:
    """OpenWebUI's own check still applies: another user's token with this email is 401."""
    response = await internal.client.get(
        f"/api/v1/chats/{UUID}",
        headers={**AUTH, **ACT, "Authorization": "Bearer tok.other@example.edu"},
    )
    assert response.status == 401
    assert (await response.json())["detail"].startswith("User mismatch")


@pytest.mark.parametrize(
    ("target", "upstream_target"),
    [
        pytest.param("/api/v1/chats/archived?page=2", "/api/v1/chats/archived?page=2", id="query"),
        pytest.param(f"/api/v1/chats/{UUID}/archive", f"/api/v1/chats/{UUID}/archive", id="param"),
        pytest.param("/api/%63onfig", "/api/config", id="encoded-unreserved-canonicalised"),
    ],
)
async def test_upstream_gets_the_canonical_checked_target(
    internal: Internal, target: str, upstream_target: str
) -> None:
    method = "POST" if target.endswith("/archive") else "GET"
    status, _, _ = await internal.raw(
        method, target, [("Proxy-Authorization", f"Bearer {TOKEN}"), ("X-User-Email", STUDENT)]
    )
    assert status == 200
    assert only(internal.upstream.seen).raw_path == upstream_target


async def test_websocket_upgrade_is_not_relayed_as_one(internal: Internal) -> None:
    """No allowlisted endpoint is a WebSocket: an upgrade request is relayed as plain HTTP."""
    status, _, _ = await internal.raw(
        "GET",
        "/api/config",
        [
            ("Proxy-Authorization", f"Bearer {TOKEN}"),
            ("X-User-Email", STUDENT),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert status == 200
    names = only(internal.upstream.seen).names_normalised()
    assert "upgrade" not in names
    assert "connection" not in names


# --- 400: the act-as identity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        pytest.param([("X-User-Name", "Ada")], "X-User-Name without X-User-Email", id="name-only"),
        pytest.param([("X-User-Email", "")], "X-User-Email: email missing", id="empty-email"),
        pytest.param([("X-User-Email", "not-an-email")], "X-User-Email:", id="not-an-email"),
        pytest.param([("X-User-Email", "a@b.edu, c@d.edu")], "X-User-Email:", id="two-in-one"),
        pytest.param([("X-User-Email", "<a@b.edu>")], "X-User-Email:", id="angle-brackets"),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Email", STUDENT)],
            "at most one X-User-Email",
            id="same-email-twice",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "A"), ("x_user_name", "B")],
            "at most one X-User-Name",
            id="two-names",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "Ada%0D%0AX-User-Role:%20admin")],
            "X-User-Name:",
            id="encoded-crlf-in-name",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "Ada%00")],
            "X-User-Name:",
            id="encoded-nul-in-name",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "x" * 300)],
            "X-User-Name:",
            id="name-too-long",
        ),
        # Written as latin-1 by raw_request: these are the raw bytes on the wire.
        pytest.param(
            [("X-User-Email", "\xe2\x84\xaaate@example.edu")],
            "X-User-Email:",
            id="kelvin-sign-utf8-bytes-in-email",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "caf\xe9")],
            "X-User-Name:",
            id="raw-byte-not-utf8-in-name",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "caf%E9")],
            "X-User-Name:",
            id="percent-encoded-byte-not-utf8-in-name",
        ),
        pytest.param(
            [("X-User-Email", STUDENT), ("X-User-Name", "%ED%A0%80")],
            "X-User-Name:",
            id="percent-encoded-surrogate-in-name",
        ),
    ],
)
async def test_bad_act_as_is_400_naming_the_header(
    internal: Internal, headers: list[tuple[str, str]], problem: str
) -> None:
    status, _, body = await internal.raw(
        "GET", "/api/config", [("Proxy-Authorization", f"Bearer {TOKEN}"), *headers]
    )
    assert status == 400
    assert problem in json.loads(body)["error"]
    assert internal.upstream.seen == []


# --- 403: the allowlist, through the real listener -------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        pytest.param("GET", "/api/v1/users", id="not-listed"),
        pytest.param("POST", "/api/v1/users/x/update/role", id="admin-endpoint"),
        pytest.param("HEAD", "/api/config", id="head"),
        pytest.param("PUT", "/api/v1/chats/new", id="wrong-method"),
        pytest.param("GET", "/api/config/", id="trailing-slash"),
        pytest.param("GET", "/api//config", id="double-slash"),
        pytest.param("GET", "/api/v1/chats/new/../../v1/users", id="dotdot"),
        pytest.param("GET", "/api/v1/chats/./archived", id="dot"),
        pytest.param("GET", "/api/v1/chats/x%2F..%2F..%2Fusers", id="encoded-slash"),
        pytest.param("GET", "/api/v1/chats/x%2f..%2f..%2fusers", id="encoded-slash-lower"),
        pytest.param("GET", "/api/v1/chats/%2E%2E", id="encoded-dotdot"),
        pytest.param("GET", "/api/v1/chats/%2e%2e", id="encoded-dotdot-lower"),
        pytest.param("GET", "/api/v1/chats/x%252F..", id="double-encoded-slash"),
        pytest.param("GET", "/api/v1/chats/x%5C..%5Cusers", id="encoded-backslash"),
        pytest.param("GET", "/api/v1/chats/x\\..\\users", id="backslash"),
        pytest.param("GET", "/api/config;.css", id="semicolon-param"),
        pytest.param("GET", "/api/config%00", id="encoded-nul"),
        pytest.param("GET", "/api/v1/chats/%C0%AF", id="overlong-utf8"),
        pytest.param("GET", "http://evil.example/api/config", id="absolute-form"),
        pytest.param("GET", f"/api/v1/chats/{UUID}%3F", id="encoded-question-mark"),
    ],
)
async def test_forbidden_targets_are_403_and_upstream_sees_nothing(
    internal: Internal, method: str, target: str
) -> None:
    status, _, body = await internal.raw(
        method, target, [("Proxy-Authorization", f"Bearer {TOKEN}"), ("X-User-Email", STUDENT)]
    )
    assert status == 403
    if method != "HEAD":
        assert "internal allowlist" in json.loads(body)["error"]
    assert internal.upstream.seen == []


# --- the audit line ------------------------------------------------------------------------


async def test_audit_line_for_a_relayed_call(internal: Internal) -> None:
    with capture_logs() as logs:
        response = await internal.client.post(
            f"/api/v1/chats/{UUID}/archive",
            headers={**AUTH, "X-User-Email": "Student@Example.edu", "X-User-Role": "admin"},
        )
    assert response.status == 200
    [line] = audits(logs)
    assert line["outcome"] == "relayed"
    assert line["status"] == 200
    assert line["service_fp"] == fingerprint(TOKEN)
    assert line["act_as"] == STUDENT
    assert line["method"] == "POST"
    assert line["path"] == f"/api/v1/chats/{UUID}/archive"
    assert line["rule"] == "POST /api/v1/chats/{id}/archive"
    assert line["dropped_headers"] == ["X-User-Role"]
    assert line["peer"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    # One id for the caller, the upstream and the log.
    assert response.headers["X-Request-ID"] == line["request_id"]
    assert only(internal.upstream.seen).values("X-Request-ID") == [line["request_id"]]


async def test_audit_line_carries_the_upstream_status(internal: Internal) -> None:
    with capture_logs() as logs:
        response = await internal.client.get(
            f"/api/v1/chats/{UUID}", headers={**AUTH, **ACT, "Authorization": "Bearer tok.x@y.z"}
        )
    assert response.status == 401
    [line] = audits(logs)
    assert (line["outcome"], line["status"]) == ("relayed", 401)


@pytest.mark.parametrize(
    ("headers", "target", "outcome", "status", "fp", "act_as"),
    [
        pytest.param({}, "/api/config", "proxy_auth_required", 407, None, None, id="407"),
        pytest.param(AUTH, "/api/v1/users", "forbidden", 403, TOKEN, None, id="403"),
        pytest.param(
            {**AUTH, "X-User-Email": "nope"},
            "/api/config",
            "bad_request",
            400,
            TOKEN,
            None,
            id="400",
        ),
    ],
)
async def test_audit_line_for_refused_calls(
    internal: Internal,
    headers: dict[str, str],
    target: str,
    outcome: str,
    status: int,
    fp: str | None,
    act_as: str | None,
) -> None:
    with capture_logs() as logs:
        response = await internal.client.get(target, headers={**ACT, **headers})
    assert response.status == status
    [line] = audits(logs)
    assert line["outcome"] == outcome
    assert line["status"] == status
    assert line["service_fp"] == (fingerprint(fp) if fp else None)
    assert line["act_as"] == act_as
    assert line["path"] == target
    assert line["reason"]
    assert response.headers["X-Request-ID"] == line["request_id"]
    assert (await response.json())["request_id"] == line["request_id"]


async def test_audit_line_for_an_unreachable_upstream(aiohttp_client: Any, tmp_path: Path) -> None:
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, "http://127.0.0.1:9", connect_timeout_s=2)
    upstream = Upstream.open(settings)
    try:
        client = await aiohttp_client(create_internal_app(settings, upstream))
        with capture_logs() as logs:
            response = await client.get("/api/config", headers={**AUTH, **ACT})
    finally:
        await upstream.close()
    assert response.status == 502
    [line] = audits(logs)
    assert (line["outcome"], line["status"], line["act_as"]) == ("upstream_error", 502, STUDENT)


async def test_the_token_never_appears_in_any_log(internal: Internal, tmp_path: Path) -> None:
    """Not in audit lines, refusals, reload messages, nor a failed reload's error."""
    wrong = "wrong-but-plausible-token-0123456789abcdef"
    with capture_logs() as logs:
        await internal.client.get("/api/config", headers={**AUTH, **ACT})
        await internal.client.get("/api/config", headers={"Proxy-Authorization": f"Bearer {wrong}"})
        await internal.client.get("/api/v1/users", headers={**AUTH, **ACT})
        write_tokens(internal.tokens, TOKEN, NEXT)
        assert reload_tokens(internal.app)
        write_tokens(internal.tokens, TOKEN, NEXT[:20])
        assert not reload_tokens(internal.app)
    text = repr(logs)
    assert len(audits(logs)) == 3
    for secret in (TOKEN, NEXT, NEXT[:20], wrong, TOKEN[:16]):
        assert secret not in text


# --- tokens: rotation and reload -----------------------------------------------------------


async def test_two_tokens_are_valid_during_rotation(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN, NEXT)
    settings = make_settings(tmp_path, str(server.make_url("/")))
    upstream = Upstream.open(settings)
    try:
        client = await aiohttp_client(create_internal_app(settings, upstream))
        with capture_logs() as logs:
            for token in (TOKEN, NEXT):
                response = await client.get(
                    "/api/config", headers={"Proxy-Authorization": f"Bearer {token}", **ACT}
                )
                assert response.status == 200
    finally:
        await upstream.close()
    assert [line["service_fp"] for line in audits(logs)] == [fingerprint(TOKEN), fingerprint(NEXT)]


async def get_status(internal: Internal, token: str) -> int:
    response = await internal.client.get(
        "/api/config", headers={"Proxy-Authorization": f"Bearer {token}", **ACT}
    )
    return response.status


async def test_reload_swaps_the_token_set(internal: Internal) -> None:
    assert await get_status(internal, NEXT) == 407
    write_tokens(internal.tokens, NEXT)
    assert reload_tokens(internal.app) is True
    assert await get_status(internal, NEXT) == 200
    assert await get_status(internal, TOKEN) == 407


async def test_a_bad_file_on_reload_keeps_the_old_tokens(internal: Internal) -> None:
    write_tokens(internal.tokens, NEXT, mode=0o644)
    assert reload_tokens(internal.app) is False
    assert await get_status(internal, TOKEN) == 200
    assert await get_status(internal, NEXT) == 407


async def test_sighup_reloads_the_tokens(internal: Internal) -> None:
    """The app installs the SIGHUP handler itself while it runs."""
    write_tokens(internal.tokens, NEXT)
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(200):  # the handler runs on the loop's next turns
        if await get_status(internal, NEXT) == 200:
            break
        await asyncio.sleep(0.01)
    assert await get_status(internal, NEXT) == 200
    assert await get_status(internal, TOKEN) == 407


# --- start-up -------------------------------------------------------------------------------


def test_world_readable_token_file_stops_start_up(tmp_path: Path) -> None:
    write_tokens(tmp_path / "tokens", TOKEN, mode=0o644)
    with pytest.raises(SettingsError) as info:
        load_settings_from(tmp_path)
    assert "world-readable" in str(info.value)
    assert f"chmod 600 {tmp_path / 'tokens'}" in str(info.value)


def test_short_token_line_stops_start_up_naming_the_line(tmp_path: Path) -> None:
    write_tokens(tmp_path / "tokens", TOKEN, "too-short-secret")
    with pytest.raises(SettingsError) as info:
        load_settings_from(tmp_path)
    assert f"{tmp_path / 'tokens'}:3:" in str(info.value)
    assert "too-short-secret" not in str(info.value)


def test_every_start_up_problem_is_reported_together(tmp_path: Path) -> None:
    """A bad token file and a bad allowlist rule: both listed, each naming its setting,
    when the settings load (before any listener is built)."""
    write_tokens(tmp_path / "tokens", "short")
    # The rule's shape passes the first check; the allowlist parser refuses its dot segment.
    with pytest.raises(SettingsError) as info:
        load_settings_from(tmp_path, internal_allow="GET /api/../config")
    problems = info.value.problems
    assert any(p.startswith("OWUI_PROXY_INTERNAL_TOKENS_FILE:") for p in problems)
    assert any(p.startswith("OWUI_PROXY_INTERNAL_ALLOW:") and "'..'" in p for p in problems)


async def test_audit_line_when_the_stream_breaks_mid_body(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """A caller that goes away mid-stream still leaves its one audit line."""
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(tmp_path, str(server.make_url("/")), internal_allow=("GET /sse",))
    upstream = Upstream.open(settings)
    try:
        client = await aiohttp_client(create_internal_app(settings, upstream))
        with capture_logs() as logs:
            response = await client.get("/sse?events=50", headers={**AUTH, **ACT})
            assert response.status == 200
            assert await response.content.readuntil(b"\n\n") == b"data: 0\n\n"
            response.close()  # the caller hangs up while the upstream is still streaming
            fake.release_sse()
            for _ in range(500):
                if audits(logs):
                    break
                await asyncio.sleep(0.01)
    finally:
        await upstream.close()
    [line] = audits(logs)
    assert line["outcome"] in ("broken", "cancelled")
    assert line["act_as"] == STUDENT
    assert line["path"] == "/sse"
