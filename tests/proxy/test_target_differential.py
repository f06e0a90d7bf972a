"""Differential test: the proxy's one reading of a request target against OpenWebUI's server.

Generated request targets, near the endpoints the proxy treats specially and spelt every way
the readers might disagree on (percent-escapes of any case, overlong and invalid ones, ``#``,
``;``, backslashes, dot and empty segments, case, trailing slashes, non-ASCII, controls),
go through aiohttp's request parser (what the proxy's listener accepts, and the raw target
it relays), the proxy's reading (``proxy.target.read_target`` and the decisions made on it),
and OpenWebUI's server built from its own parts (``tests/proxy/owui_server.py``: uvicorn's
httptools and websockets protocols, FastAPI/Starlette routing of OpenWebUI's routes,
python-socketio's own path test). The properties:

- whatever the proxy would relay, the server reads exactly as the proxy does (same path);
- whenever the server would route a target to an account-creation endpoint, the sign-in,
  the sign-out, anything under ``/api/v1/auths``, or its Socket.IO app, the proxy's
  decision agrees (refuses, hooks, intercepts, keeps API keys away, guards tokens) or the
  proxy refuses the target outright;
- what the internal listener's allowlist admits is read by the server as exactly the path
  the allowlist checked.

Without the fix (the refusal reading ``raw_path``, which keeps ``#``) the second property
fails on ``/api/v1/auths/signup#x``: the server routes it to sign-up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.http_parser import HttpRequestParser
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from proxy import browser, socketio
from proxy.allowlist import Allowed, Allowlist
from proxy.settings import DEFAULT_INTERNAL_ALLOW
from proxy.target import read_target
from tests.proxy.owui_server import ACCOUNT_CREATION, AUTHS, OpenWebUIServer, Reading

PROFILE = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ALLOWLIST = Allowlist(DEFAULT_INTERNAL_ALLOW)
UUID = "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"

# Paths the generator starts from: the special endpoints, their neighbours, the allowlist's.
SEEDS = [
    "/api/v1/auths/signup",
    "/api/v1/auths/add",
    "/api/v1/auths/ldap",
    "/api/v1/auths/signin",
    "/api/v1/auths/signout",
    "/api/v1/auths/",
    "/api/v1/auths/api_key",
    "/api/v1/auths/oauth/google/token/exchange",
    "/api/v1/scim/v2/Users",
    "/api/v1/scim/v2/Groups/g1",
    "/oauth/google/login",
    "/oauth/oidc/callback",
    "/oauth/microsoft/login/callback",
    "/oauth/clients/c1/callback",
    "/ws/socket.io/",
    "/ws/socket.io",
    "/api/config",
    "/api/v1/chats/new",
    f"/api/v1/chats/{UUID}/archive",
    "/c/abc",
]
# Characters a mutation may insert: the ones readers disagree on, and plain ones.
INSERTS = [
    "#", "#x", "?", "?x=1", ";", ";x", "\\", "/", "//", "/./", "/../", "/x/../", ".", "..",
    "%", "%2", "%zz", "%2F", "%2f", "%2E", "%2e%2e", "%5C", "%23", "%3F", "%3B", "%25",
    "%252F", "%00", "%0A", "%09", "%20", "%7F", "%C0%AF", "%C0%AE", "%E2%80", "%FF",
    "%C2%85", "%C3%A9", "%EF%BC%8F", "\u00e9", " ", "\t", "|", "{", "\"", "@", ":", "~",
]  # fmt: skip


def _encode_some(text: str, draw: Any) -> str:
    """Percent-encode some characters of ``text`` (either hex case), as clients may."""
    out = []
    for ch in text:
        if ch != "/" and ch.isascii() and draw(st.integers(0, 5)) == 0:
            code = f"%{ord(ch):02X}"
            out.append(code.lower() if draw(st.booleans()) else code)
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def targets(draw: Any) -> str:
    """A seed path, mangled a few times."""
    path = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2, 3]))):
        kind = draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3, 3, 4]))
        if kind == 0:
            at = draw(st.integers(0, len(path)))
            path = path[:at] + draw(st.sampled_from(INSERTS)) + path[at:]
        elif kind == 1:
            path = _encode_some(path, draw)
        elif kind == 2:
            path = "".join(c.upper() if draw(st.integers(0, 3)) == 0 else c for c in path)
        elif kind == 3:
            path = path + draw(st.sampled_from(["/", "#", "?EIO=4", "#frag", ";v=1", "/."]))
        else:
            path = draw(st.sampled_from(["/", "//", "/x/..", "/%2e/"])) + path.lstrip("/")
    return path


def aiohttp_target(method: str, target: bytes) -> str | None:
    """The raw target aiohttp's request parser hands the proxy (None: it refused the line)."""
    parser = HttpRequestParser(
        _NullProtocol(), asyncio.get_running_loop(), 2**16, max_field_size=65536
    )
    try:
        messages, _, _ = parser.feed_data(
            method.encode() + b" " + target + b" HTTP/1.1\r\nHost: proxy\r\n\r\n"
        )
    except Exception:  # any refusal: the request never reaches the proxy's handler
        return None
    return str(messages[0][0].path) if messages else None


class _NullProtocol:
    transport = None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest.fixture(scope="module")
def server() -> OpenWebUIServer:
    return OpenWebUIServer()


def _relayed_bytes(raw: str) -> bytes:
    """What the relay puts on the wire for ``raw`` (``proxy/h1.py``'s encoding)."""
    return raw.encode("utf-8", "surrogateescape")


async def _check(server: OpenWebUIServer, method: str, text: str, websocket: bool) -> None:
    try:
        wire = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    raw = aiohttp_target(method, wire)
    if raw is None:
        event("refused by aiohttp's parser")
        return  # refused by the proxy's own HTTP parser
    target = read_target(raw)
    refused_at_edge = target.problem is not None or browser.account_creation(target) is not None
    reading = await server.read(method, _relayed_bytes(raw), websocket)
    if reading is None:
        event("refused by uvicorn")
        return  # the server refuses it too
    event(f"proxy refuses: {refused_at_edge}; server routes to {reading.endpoint}")
    if not refused_at_edge:
        # 1. The server reads what the proxy read.
        assert reading.path == target.path, (raw, reading)
    _agree(method, raw, target, reading, websocket, refused_at_edge)
    # 3. What the allowlist admits is what the server routes.
    decision = ALLOWLIST.check(method, target)
    if isinstance(decision, Allowed):
        assert reading.path == decision.path, (raw, reading, decision)
        assert reading.query.decode("ascii") == decision.query


def _agree(
    method: str, raw: str, target: Any, reading: Reading, websocket: bool, refused: bool
) -> None:
    """2. Where the server routes it, the proxy's decision agrees, or the proxy refused."""
    endpoint = reading.endpoint
    if endpoint == "socketio":
        assert socketio.is_socketio_path(target.route) or refused, (raw, reading)
        return
    if websocket or refused:
        return
    if endpoint in ACCOUNT_CREATION:
        assert browser.account_creation(target) is not None, (raw, reading)
    if endpoint == "signin":
        assert browser.is_signin(method, target), (raw, reading)
    if endpoint == "signout":
        assert browser.is_signout(method, target), (raw, reading)
    if endpoint in AUTHS:
        on_socketio = socketio.is_socketio_path(target.path)
        assert not browser.api_key_allowed(["Bearer sk-x"], target, on_socketio), (raw, reading)
    if browser.is_signin(method, target):
        # The first-sign-in hook fires on exactly what the server signs in.
        assert endpoint == "signin", (raw, reading)


@PROFILE
@given(method=st.sampled_from(["POST", "GET", "DELETE", "PUT"]), text=targets())
@example(method="POST", text="/api/v1/auths/signup#x")
@example(method="POST", text="/api/v1/auths/sign%75p#x")
@example(method="POST", text="/api/v1/auths%2Fsignup")
@example(method="GET", text="/oauth/google/login#/x")
@example(method="POST", text="/api/v1/auths/signin#x")
async def test_http_targets_read_as_openwebui_reads_them(
    server: OpenWebUIServer, method: str, text: str
) -> None:
    await _check(server, method, text, websocket=False)


@PROFILE
@given(text=targets())
@example(text="/ws/socket.io/#?EIO=4&transport=websocket")
@example(text="/ws/socket%2Eio/?EIO=4")
async def test_websocket_targets_read_as_openwebui_reads_them(
    server: OpenWebUIServer, text: str
) -> None:
    await _check(server, "GET", text, websocket=True)


async def test_the_proxys_parser_hands_over_what_it_accepts() -> None:
    """The harness's control: aiohttp's parser gives the raw target, a fragment included."""
    assert aiohttp_target("POST", b"/api/v1/auths/signup#x") == "/api/v1/auths/signup#x"
    assert aiohttp_target("GET", b"/a?b=%00") == "/a?b=%00"
    assert aiohttp_target("GET", b"/a b") is None


@pytest.mark.parametrize(
    ("method", "raw", "endpoint"),
    [
        ("POST", b"/api/v1/auths/signup#x", "signup"),
        ("POST", b"/api/v1/auths/sign%75p#x", "signup"),
        ("POST", b"/api/v1/auths/add#x", "add"),
        ("POST", b"/api/v1/auths/ldap#x", "ldap"),
        ("GET", b"/ws/socket.io/#x", "socketio"),
    ],
)
async def test_the_server_does_route_the_attack_targets(
    server: OpenWebUIServer, method: str, raw: bytes, endpoint: str
) -> None:
    """The control: these are real routes at OpenWebUI's server, not targets it refuses."""
    reading = await server.read(method, raw)
    assert reading is not None
    assert reading.endpoint == endpoint
