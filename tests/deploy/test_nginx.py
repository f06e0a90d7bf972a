"""The shipped nginx site config, run by Debian's nginx on loopback with a test certificate.

Two set-ups: nginx alone in front of the recording fake upstream (what the edge itself does:
TLS, HTTP/2, header hygiene, limits), and the whole chain client -> nginx -> proxy ->
recording upstream (identity, streaming, WebSockets, uploads, forwarding trust).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.deploy.clients import raw_https, session
from tests.deploy.conftest import TestTLS
from tests.deploy.edge import (
    PLACEHOLDER,
    PLACEHOLDERS,
    SERVER_NAME,
    SITE_CONF,
    Nginx,
    Proxy,
    free_port,
    proxy_available,
)
from tests.deploy.spoof import IDENTITY, SPOOF_MARKERS, spoof_request
from tests.fakes import FakeAuthService, FakeUpstream

pytestmark = pytest.mark.nginx


def test_shipped_config_passes_nginx_t(tmp_path: Path, tls: TestTLS, nginx_bin: str) -> None:
    """`nginx -t` accepts the shipped config once its placeholders are filled, without warnings."""
    nginx = Nginx(tmp_path, "127.0.0.1:8443", "127.0.0.1:8080", "127.0.0.1:8000", tls.cert, tls.key)
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr
    assert "[emerg]" not in result.stderr, result.stderr


def test_placeholders_are_the_documented_ones() -> None:
    """Every ${OWUI_GATE_*} in the config is one the header documents for envsubst."""
    text = SITE_CONF.read_text(encoding="utf-8")
    used = set(PLACEHOLDER.findall(text.split("\nmap ", 1)[1]))
    assert used == PLACEHOLDERS
    envsubst_line = re.search(r"envsubst '([^']*)'", text, re.S)
    assert envsubst_line is not None
    assert set(PLACEHOLDER.findall(envsubst_line.group(1))) == PLACEHOLDERS


def test_no_route_to_admin_or_internal_listeners() -> None:
    """Every location passes to the public listener's upstream and nowhere else."""
    text = SITE_CONF.read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    targets = set(re.findall(r"proxy_pass\s+([^;]+);", code))
    assert targets == {"http://owui_gate_proxy", "http://owui_gate_auth"}
    servers = re.findall(r"^\s*server\s+(\S+);", code, re.M)
    assert servers == ["${OWUI_GATE_PROXY}", "${OWUI_GATE_AUTH}"]
    # The auth service gets exactly one location: its prefix.
    assert re.findall(r"location\s+(.+?)\s*\{\s*proxy_pass http://owui_gate_auth;", code) == [
        "^~ /oauth2/"
    ]
    assert "underscores_in_headers off;" in code
    assert "client_max_body_size 100m;" in code  # = the proxy's default 100 MiB


# --- nginx alone, in front of the recording upstream ------------------------------------


@dataclass
class Edge:
    """The shipped nginx running in front of test upstreams on loopback."""

    nginx: Nginx
    https: int
    http: int


@contextlib.asynccontextmanager
async def edge_in_front_of(
    tmp_path: Path,
    tls: TestTLS,
    app: web.Application,
    *,
    auth: web.Application | None = None,
    auth_is_upstream: bool = False,
    nginx_class: type[Nginx] = Nginx,
    **start: Any,
) -> AsyncIterator[Edge]:
    """``app`` served as the proxy (``start`` goes to its ``start_server``), nginx in front.
    The auth service is ``auth`` served beside it, or ``app`` itself (``auth_is_upstream``),
    or else the default address, where nothing listens."""
    server = TestServer(app, host="127.0.0.1")  # binds port 0: no race
    await server.start_server(**start)
    auth_server = None if auth is None else TestServer(auth, host="127.0.0.1")
    if auth_server is not None:
        await auth_server.start_server()
    https, http = free_port(), free_port()
    nginx = nginx_class(
        tmp_path / "nginx", f"127.0.0.1:{https}", f"127.0.0.1:{http}",
        f"127.0.0.1:{server.port}", tls.cert, tls.key,
    )  # fmt: skip
    if auth_is_upstream or auth_server is not None:
        nginx.auth = f"127.0.0.1:{server.port if auth_server is None else auth_server.port}"
    await asyncio.to_thread(nginx.start, ("127.0.0.1", https))
    try:
        yield Edge(nginx, https, http)
    finally:
        nginx.stop()
        await server.close()
        if auth_server is not None:
            await auth_server.close()


@dataclass
class EdgeOnly:
    fake: FakeUpstream
    nginx: Nginx
    https: int
    http: int
    tls: TestTLS


@pytest.fixture
async def edge_only(tmp_path: Path, tls: TestTLS, nginx_bin: str) -> AsyncIterator[EdgeOnly]:
    fake = FakeUpstream()
    async with edge_in_front_of(tmp_path, tls, fake.app()) as edge:
        yield EdgeOnly(fake, edge.nginx, edge.https, edge.http, tls)


# --- the auth prefix: /oauth2/ goes to the auth service, everything else to the proxy -------


@dataclass
class Routed:
    proxy: FakeUpstream
    auth: FakeUpstream
    https: int
    tls: TestTLS

    async def get(self, target: str, *extra: str) -> int:
        response = await raw_https(
            self.https,
            [f"GET {target} HTTP/1.1", f"Host: {SERVER_NAME}", *extra, "Connection: close"],
            ctx=self.tls.client_context(),
        )
        return response.status


@pytest.fixture
async def routed(tmp_path: Path, tls: TestTLS, nginx_bin: str) -> AsyncIterator[Routed]:
    """nginx in front of two recording upstreams: one as the proxy, one as the auth service."""
    proxy, auth = FakeUpstream(), FakeUpstream()
    async with edge_in_front_of(tmp_path, tls, proxy.app(), auth=auth.app()) as edge:
        yield Routed(proxy, auth, edge.https, tls)


@pytest.mark.parametrize(
    ("target", "to_auth"),
    [
        pytest.param("/oauth2/start?rd=https%3A%2F%2Fowui.test%2Fc%2F1", True, id="login-start"),
        pytest.param("/oauth2/callback?code=abc&state=xyz", True, id="oidc-callback"),
        pytest.param("/oauth2/sign_out", True, id="sign-out"),
        pytest.param("/oauth2/auth", True, id="auth-endpoint"),
        pytest.param("/%6Fauth2/start", True, id="encoded-letter-is-the-same-path"),
        pytest.param("/", False, id="root"),
        pytest.param("/oauth2x/start", False, id="look-alike"),
        pytest.param("/api/oauth2/start", False, id="prefix-not-at-start"),
        pytest.param("/oauth/google/login", False, id="openwebui-own-oauth"),
        pytest.param("/ws/socket.io/?EIO=4&transport=polling", False, id="socketio"),
    ],
)
async def test_auth_prefix_reaches_the_auth_service_only(
    routed: Routed, target: str, to_auth: bool
) -> None:
    """/oauth2/... goes to the auth service, never the proxy; no other path goes there."""
    assert await routed.get(target) == 200
    reached, missed = (routed.auth, routed.proxy) if to_auth else (routed.proxy, routed.auth)
    assert [s.raw_path for s in reached.seen] == [target]
    assert missed.seen == []


async def test_bare_prefix_is_redirected_into_it(routed: Routed) -> None:
    """Exactly /oauth2 gets nginx's own 301 to /oauth2/ (a prefix location's rule): no loop,
    neither service sees it."""
    assert await routed.get("/oauth2") == 301
    assert routed.auth.seen == routed.proxy.seen == []


async def test_auth_service_sees_nginx_view_not_the_client_forgeries(routed: Routed) -> None:
    """The auth service builds its redirect URLs from these: nginx's values, once each."""
    status = await routed.get(
        "/oauth2/start",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Port: 1",
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-Uri: /evil",
        "X-Original-URL: https://evil.example/",
        "X-Auth-Request-Redirect: https://evil.example/",
        "X-User-Email: evil@attacker.example",
        "Proxy-Authorization: Bearer stolen",
        "Cookie: _oauth2_proxy=session",
    )
    assert status == 200
    seen = routed.auth.last()
    assert seen.values("Host") == [SERVER_NAME]
    assert seen.values("X-Forwarded-Host") == [SERVER_NAME]
    assert seen.values("X-Forwarded-Proto") == ["https"]
    assert seen.values("X-Forwarded-Port") == [str(routed.https)]
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.values("Cookie") == ["_oauth2_proxy=session"]  # its own session cookie
    names = seen.names_normalised()
    for gone in (
        "x-forwarded-uri", "x-original-url", "x-auth-request-redirect", "x-user-email",
        "proxy-authorization", "forwarded", "x-real-ip",
    ):  # fmt: skip
        assert gone not in names, seen.headers


async def test_edge_strips_identity_and_forged_forwarding(edge_only: EdgeOnly) -> None:
    """nginx alone drops every identity header, Proxy-Authorization and forged forwarding."""
    response = await raw_https(
        edge_only.https, spoof_request("/api/v1/chats/"), ctx=edge_only.tls.client_context()
    )
    assert response.status == 200
    seen = edge_only.fake.last()
    names = seen.names_normalised()
    assert not [n for n in names if n in IDENTITY or n == "proxy-authorization"], seen.headers
    assert not [h for h in seen.headers if any(m in h[1] for m in SPOOF_MARKERS)], seen.headers
    assert "forwarded" not in names
    assert "x-real-ip" not in names
    # nginx's own view of the connection, exactly once each.
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.values("X-Forwarded-Proto") == ["https"]
    assert seen.values("X-Forwarded-Host") == [SERVER_NAME]
    assert seen.values("Host") == [SERVER_NAME]


async def test_edge_passes_the_raw_request_target(edge_only: EdgeOnly) -> None:
    """The path and query reach the upstream byte for byte: nginx does not normalise them."""
    target = "/api/v1/files/a%2Fb/./c%2e%2e?q=%41%20b&x=1"
    response = await raw_https(
        edge_only.https,
        [f"GET {target} HTTP/1.1", f"Host: {SERVER_NAME}", "Connection: close"],
        ctx=edge_only.tls.client_context(),
    )
    assert response.status == 200
    assert edge_only.fake.last().raw_path == target


async def test_edge_speaks_http2_and_sends_hsts(edge_only: EdgeOnly, tls: TestTLS) -> None:
    """Browsers get HTTP/2 over TLS, and HSTS on every answer."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2", "--cacert", str(tls.ca_pem),
        "--resolve", f"{SERVER_NAME}:{edge_only.https}:127.0.0.1",
        "-D", "-", "-o", "/dev/null", "-w", "VERSION=%{http_version}",
        f"https://{SERVER_NAME}:{edge_only.https}/health",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "VERSION=2" in text
    assert re.search(r"^strict-transport-security: max-age=63072000", text, re.M | re.I), text
    assert not re.search(r"^server: nginx/", text, re.M | re.I)  # server_tokens off


def _handshake(port: int, tls: TestTLS, version: ssl.TLSVersion, sni: str | None) -> str:
    ctx = tls.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, on purpose
        ctx.minimum_version = version
        ctx.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it at all
    if sni is None:
        ctx.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as wrapped,
    ):
        return wrapped.version() or ""


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_3, True, id="tls1.3-accepted"),
        pytest.param(ssl.TLSVersion.TLSv1_2, True, id="tls1.2-accepted"),
        pytest.param(ssl.TLSVersion.TLSv1_1, False, id="tls1.1-refused"),
    ],
)
async def test_edge_tls_versions(
    edge_only: EdgeOnly, tls: TestTLS, version: ssl.TLSVersion, accepted: bool
) -> None:
    """Only TLS 1.2 and 1.3 are offered."""
    if accepted:
        got = await asyncio.to_thread(_handshake, edge_only.https, tls, version, SERVER_NAME)
        assert got == version.name.replace("_", ".").replace("TLSv1.", "TLSv1.")
    else:
        with pytest.raises(ssl.SSLError, match=r"(?i)protocol version|unsupported protocol"):
            await asyncio.to_thread(_handshake, edge_only.https, tls, version, SERVER_NAME)


@pytest.mark.parametrize("sni", [None, "other.example"], ids=["no-sni", "foreign-sni"])
async def test_edge_refuses_unknown_host_names(
    edge_only: EdgeOnly, tls: TestTLS, sni: str | None
) -> None:
    """A TLS handshake without our name (bare IP scan, other host) is aborted: no certificate."""
    with pytest.raises(ssl.SSLError, match=r"(?i)unrecognized name|handshake failure"):
        await asyncio.to_thread(_handshake, edge_only.https, tls, ssl.TLSVersion.TLSv1_3, sni)
    assert edge_only.fake.seen == []


async def test_plain_http_only_redirects(edge_only: EdgeOnly) -> None:
    """Port 80 answers a redirect to HTTPS and never reaches the upstream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_only.http)
    writer.write(
        f"GET /api/v1/chats/?a=1 HTTP/1.1\r\nHost: {SERVER_NAME}\r\n"
        "X-User-Email: evil@attacker.example\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(), 10)).decode("latin-1")
    writer.close()
    assert head.startswith("HTTP/1.1 308")
    assert f"Location: https://{SERVER_NAME}/api/v1/chats/?a=1\r\n" in head
    assert edge_only.fake.seen == []


async def test_edge_refuses_bodies_over_the_proxy_limit(edge_only: EdgeOnly) -> None:
    """A body declared larger than 100 MiB is refused by nginx before any of it is sent."""
    response = await raw_https(
        edge_only.https,
        [
            "POST /upload HTTP/1.1",
            f"Host: {SERVER_NAME}",
            f"Content-Length: {100 * 1024 * 1024 + 1}",
            "Connection: close",
        ],
        ctx=edge_only.tls.client_context(),
    )
    assert response.status == 413
    assert edge_only.fake.seen == []


def streaming_app(gate: asyncio.Event) -> web.Application:
    """An upstream streaming on OpenWebUI's paths: SSE held open until ``gate``, WS echo."""

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await gate.wait()
        await response.write(b"data: last\n\n")
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        async for msg in socket_:
            await socket_.send_str(msg.data)
        return socket_

    app = web.Application()
    app.router.add_get("/ws/socket.io/", ws)
    app.router.add_route("*", "/{tail:.*}", sse)
    return app


@pytest.mark.parametrize(
    "path",
    [
        "/api/chat/completions",
        "/api/v1/chat/completions",
        "/ollama/api/pull",
        "/api/v1/chats/some-other-path",
    ],
)
async def test_edge_streams_events_unbuffered(
    tmp_path: Path, tls: TestTLS, nginx_bin: str, path: str
) -> None:
    """On streaming paths (and any other), nginx passes each event on as it arrives."""
    gate = asyncio.Event()
    async with edge_in_front_of(tmp_path, tls, streaming_app(gate)) as edge:
        https = edge.https
        try:
            async with (
                session(tls.client_context()) as client,
                client.post(f"https://{SERVER_NAME}:{https}{path}", json={}) as response,
            ):
                first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 15)
                assert first == b"data: first\n\n"  # while the upstream still holds the stream
                gate.set()
                assert await asyncio.wait_for(response.content.read(), 15) == b"data: last\n\n"
            async with (
                session(tls.client_context()) as client,
                client.ws_connect(f"https://{SERVER_NAME}:{https}/ws/socket.io/") as ws,
            ):
                await ws.send_str("ping-through-nginx")
                assert (await ws.receive(timeout=10)).data == "ping-through-nginx"
        finally:
            gate.set()  # let the held stream end, or closing the server waits for it


# --- the whole chain: client -> nginx -> proxy -> recording upstream ----------------------

ALICE_COOKIE = "_oauth2_proxy=alice-session"
ALICE = {
    "X-Auth-Request-Email": "Alice@Example.edu",
    "X-Auth-Request-User": "Alice Émile",
    "X-Auth-Request-Groups": "students,course-101",
}
requires_proxy = pytest.mark.skipif(not proxy_available(), reason="the proxy has not landed yet")


@dataclass
class Chain:
    fake: FakeUpstream
    auth: FakeAuthService
    nginx: Nginx
    proxy: Proxy
    https: int
    tls: TestTLS

    def url(self, path: str) -> str:
        return f"https://{SERVER_NAME}:{self.https}{path}"


@contextlib.asynccontextmanager
async def run_chain(base: Path, tls: TestTLS, trusted_proxies: str) -> AsyncIterator[Chain]:
    fake, auth = FakeUpstream(), FakeAuthService(users={"alice-session": ALICE})
    upstream = TestServer(fake.app(), host="127.0.0.1")  # binds port 0: no race
    auth_server = TestServer(auth.app(), host="127.0.0.1")  # binds port 0: no race
    await upstream.start_server()
    await auth_server.start_server()
    public, admin, https, http = free_port(), free_port(), free_port(), free_port()
    env = {
        "OWUI_PROXY_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
        "OWUI_PROXY_LISTEN": f"127.0.0.1:{public}",
        "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "OWUI_PROXY_AUTH": "forward",
        "OWUI_PROXY_FORWARD_AUTH_URL": f"http://127.0.0.1:{auth_server.port}/oauth2/auth",
        # A failed test may leave a request hanging; do not wait 30 s for it at the end.
        "OWUI_PROXY_SHUTDOWN_GRACE_S": "2",
    }
    if trusted_proxies:
        env["OWUI_PROXY_TRUSTED_PROXIES"] = trusted_proxies
    proxy = Proxy(env, base / "proxy.log")
    nginx = Nginx(
        base / "nginx",
        f"127.0.0.1:{https}",
        f"127.0.0.1:{http}",
        f"127.0.0.1:{public}",
        tls.cert,
        tls.key,
    )
    try:
        await asyncio.to_thread(proxy.start, ("127.0.0.1", public))
        await asyncio.to_thread(nginx.start, ("127.0.0.1", https))
        yield Chain(fake, auth, nginx, proxy, https, tls)
    finally:
        fake.release_sse()  # a held SSE stream would keep the upstream from closing
        nginx.stop()
        proxy.stop()
        await upstream.close()
        await auth_server.close()


@pytest.fixture
async def chain(tmp_path: Path, tls: TestTLS, nginx_bin: str) -> AsyncIterator[Chain]:
    if not proxy_available():
        pytest.skip("the proxy (python -m proxy) is not in this tree")
    async with run_chain(tmp_path, tls, "127.0.0.1/32") as running:
        yield running


async def test_chain_spoof_corpus_yields_only_the_verified_identity(chain: Chain) -> None:
    """Through nginx and the proxy, the upstream sees exactly the verified identity, once."""
    response = await raw_https(
        chain.https,
        spoof_request("/api/v1/chats/", (("Cookie", ALICE_COOKIE),)),
        ctx=chain.tls.client_context(),
    )
    assert response.status == 200, response.body
    seen = chain.fake.last()
    assert seen.values("X-User-Email") == ["alice@example.edu"]
    assert seen.values("X-User-Name") == [quote("Alice Émile", safe="")]
    assert seen.values("X-User-Groups") == ["students,course-101"]
    names = seen.names_normalised()
    assert names.count("x-user-email") == 1
    assert "x-user-role" not in names
    assert "proxy-authorization" not in names
    assert not [h for h in seen.headers if any(m in h[1] for m in SPOOF_MARKERS)], seen.headers


async def test_chain_unauthenticated_spoof_never_reaches_upstream(chain: Chain) -> None:
    """Without a session, the identity headers a client sends get it nowhere: 401, no request."""
    response = await raw_https(
        chain.https, spoof_request("/api/v1/chats/"), ctx=chain.tls.client_context()
    )
    assert response.status == 401
    assert chain.fake.seen == []


async def test_chain_sse_is_not_buffered(chain: Chain) -> None:
    """The first server-sent event reaches the client while the upstream is still streaming."""
    async with (
        session(chain.tls.client_context(), headers={"Cookie": ALICE_COOKIE}) as client,
        client.get(chain.url("/sse?events=3")) as response,
    ):
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 15)
        assert first == b"data: 0\n\n"
        assert chain.fake.sse_finished is False  # the upstream is blocked until released
        chain.fake.release_sse()
        rest = await asyncio.wait_for(response.content.read(), 15)
    assert rest == b"data: 1\n\ndata: 2\n\n"
    assert chain.fake.sse_finished is True


async def test_chain_websocket(chain: Chain) -> None:
    """A WebSocket passes nginx and the proxy: text, binary and the close code."""
    async with (
        session(chain.tls.client_context(), headers={"Cookie": ALICE_COOKIE}) as client,
        client.ws_connect(chain.url("/ws"), protocols=("chat",)) as ws,
    ):
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello"
        await ws.send_bytes(b"\x00\xffbin")
        assert (await ws.receive(timeout=10)).data == b"\x00\xffbin"
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001
    assert chain.fake.last().values("X-User-Email") == ["alice@example.edu"]


async def test_chain_large_upload_streams(chain: Chain) -> None:
    """99 MiB (under both 100 MiB limits) pass, and reach the upstream while still being sent."""
    chunk = b"x" * (1024 * 1024)
    total = 99

    async def body() -> AsyncIterator[bytes]:
        for i in range(total):
            if i == total // 2:
                # Nothing more is sent until the upstream has the request: with request
                # buffering anywhere on the way, it never would, and this times out.
                deadline = asyncio.get_running_loop().time() + 30
                while not any(s.raw_path == "/upload" for s in chain.fake.seen):
                    assert asyncio.get_running_loop().time() < deadline, "upload was buffered"
                    await asyncio.sleep(0.05)
            yield chunk

    async with (
        session(chain.tls.client_context(), headers={"Cookie": ALICE_COOKIE}) as client,
        client.post(chain.url("/upload"), data=body()) as response,
    ):
        assert response.status == 200, await response.text()
        assert await response.json() == {"bytes": total * len(chunk)}


@pytest.mark.parametrize(
    ("trusted", "expected_for", "expected_proto"),
    [
        pytest.param("127.0.0.1/32", "127.0.0.2, 127.0.0.1", "https", id="nginx-trusted"),
        pytest.param("", "127.0.0.1", "http", id="nginx-not-trusted"),
    ],
)
@requires_proxy
async def test_chain_client_address_believed_only_from_trusted_nginx(
    tmp_path: Path,
    tls: TestTLS,
    nginx_bin: str,
    trusted: str,
    expected_for: str,
    expected_proto: str,
) -> None:
    """The client's address (127.0.0.2) survives only because nginx is a trusted proxy."""
    async with run_chain(tmp_path, tls, trusted) as running:
        async with (
            session(
                tls.client_context(),
                local_addr=("127.0.0.2", 0),
                headers={"Cookie": ALICE_COOKIE, "X-Forwarded-For": "6.6.6.6"},
            ) as client,
            client.get(running.url("/whoami")) as response,
        ):
            assert response.status == 200
        seen = running.fake.last()
    assert seen.values("X-Forwarded-For") == [expected_for]
    assert seen.values("X-Forwarded-Proto") == [expected_proto]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_chain_admin_paths_are_ordinary_public_paths(chain: Chain, path: str) -> None:
    """Through nginx, the admin listener's paths are just relayed (authenticated) requests."""
    async with (
        session(chain.tls.client_context(), headers={"Cookie": ALICE_COOKIE}) as client,
        client.get(chain.url(path)) as response,
    ):
        assert response.status == 200
        assert (await response.json())["raw_path"] == path
    assert chain.fake.last().raw_path == path


async def test_chain_streamed_body_over_the_limit_is_refused(chain: Chain) -> None:
    """A chunked upload (no declared length) is counted as it streams: 413 past 100 MiB."""
    chunk = b"x" * (1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(101):
            yield chunk

    async with (
        session(chain.tls.client_context(), headers={"Cookie": ALICE_COOKIE}) as client,
        client.post(chain.url("/upload"), data=body()) as response,
    ):
        assert response.status == 413


# --- HTTP/2 cannot upgrade -----------------------------------------------------------------


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _hpack_literal(name: str, value: str) -> bytes:
    """One header as an HPACK literal without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    out = b"\x00"
    for text in (name, value):
        data = text.encode()
        assert len(data) < 127  # a one-byte length prefix is enough for these tests
        out += bytes([len(data)]) + data
    return out


def _h2_get(port: int, tls: TestTLS, headers: list[tuple[str, str]]) -> bytes:
    """Send one HTTP/2 request, hand-framed (so no client library drops headers), and read a bit."""
    ctx = tls.client_context()
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        block = b"".join(_hpack_literal(n, v) for n, v in headers)
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _h2_frame(4, 0, 0, b"")  # SETTINGS
            + _h2_frame(1, 0x5, 1, block)  # HEADERS, END_HEADERS | END_STREAM
        )
        sock.settimeout(3)
        received = b""
        with contextlib.suppress(OSError):
            while len(received) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        return received


async def test_http2_request_is_never_forwarded_as_an_upgrade(
    edge_only: EdgeOnly, tls: TestTLS
) -> None:
    """An HTTP/2 stream cannot switch protocols, so its `upgrade` header is not passed on.

    Otherwise nginx asks the proxy for a WebSocket (Upgrade + Connection: upgrade), the proxy
    opens one to OpenWebUI and answers 101, and nginx, unable to upgrade an HTTP/2 stream,
    logs an alert and leaves the stream without an answer while that WebSocket stays open.
    """
    await asyncio.to_thread(
        _h2_get,
        edge_only.https,
        tls,
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/ws/socket.io/?EIO=4&transport=websocket"),
            (":authority", SERVER_NAME),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    )
    seen = edge_only.fake.last()
    names = seen.names_normalised()
    assert "upgrade" not in names, seen.headers
    assert [v for v in seen.values("Connection") if "upgrade" in v.lower()] == [], seen.headers


async def test_http1_websocket_upgrade_still_forwarded(edge_only: EdgeOnly) -> None:
    """The HTTP/1.1 WebSocket handshake still reaches the proxy as an upgrade."""
    response = await raw_https(
        edge_only.https,
        [
            "GET /api/v1/chats/ HTTP/1.1",
            f"Host: {SERVER_NAME}",
            "Upgrade: websocket",
            "Connection: close",
        ],
        ctx=edge_only.tls.client_context(),
    )
    assert response.status == 200
    seen = edge_only.fake.last()
    assert seen.values("Upgrade") == ["websocket"]
    assert seen.values("Connection") == ["upgrade"]


async def test_default_server_error_pages_hide_the_version(edge_only: EdgeOnly) -> None:
    """A malformed request answered by the catch-all server does not name nginx's version."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_only.http)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400 from the default server
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(), 10)).decode("latin-1")
    writer.close()
    assert head.startswith("HTTP/1.1 400"), head
    assert not re.search(r"nginx/\d", head), head
    assert edge_only.fake.seen == []


# --- every OpenWebUI stream gets the long timeouts ---------------------------------------


class ShortOrdinaryTimeout(Nginx):
    """The shipped config with the ordinary paths' 130 s read timeout scaled down to 1 s."""

    def write_config(self) -> Path:
        conf = super().write_config()
        site = self.prefix / "owui-gate.conf"
        text = site.read_text(encoding="utf-8")
        assert text.count("proxy_read_timeout 130s;") == 1
        site.write_text(text.replace("proxy_read_timeout 130s;", "proxy_read_timeout 1s;"))
        return conf


@pytest.mark.parametrize(
    "path",
    [
        "/api/chat/completions",
        "/api/v1/messages",  # Anthropic Messages API: chat_completion, streamed as SSE
        "/api/message",
        "/api/v1/terminals/srv/api/terminals/sess",  # terminal WebSocket (routers/terminals.py)
    ],
)
async def test_edge_long_streams_survive_silence_over_the_ordinary_timeout(
    tmp_path: Path, tls: TestTLS, nginx_bin: str, path: str
) -> None:
    """OpenWebUI's streams (completions, also via its Anthropic-style API; terminals) get the
    long read timeout: a model may think for minutes before its next token."""
    gate = asyncio.Event()
    app = streaming_app(gate)
    async with edge_in_front_of(tmp_path, tls, app, nginx_class=ShortOrdinaryTimeout) as edge:
        try:
            async with (
                session(tls.client_context()) as client,
                client.post(f"https://{SERVER_NAME}:{edge.https}{path}", json={}) as response,
            ):
                assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), 15) == (
                    b"data: first\n\n"
                )
                await asyncio.sleep(2.5)  # silence longer than the (scaled) ordinary timeout
                gate.set()
                assert await asyncio.wait_for(response.content.read(), 15) == b"data: last\n\n"
        finally:
            gate.set()


# --- header limits: nginx lets through what the proxy accepts --------------------------


async def test_edge_passes_a_header_line_the_proxy_accepts(
    tmp_path: Path, tls: TestTLS, nginx_bin: str
) -> None:
    """A 60 KB Cookie line (a big auth-service session in 4 KB parts) is within the proxy's
    64 KiB header-field limit (proxy/app.py max_field_size), so nginx must not refuse it."""
    fake = FakeUpstream()
    # max_field_size: the proxy's public listener's limit
    async with edge_in_front_of(tmp_path, tls, fake.app(), max_field_size=65536) as edge:
        cookie = "; ".join(f"_oauth2_proxy_{i}={'a' * 3990}" for i in range(15))
        assert 60000 < len("Cookie: " + cookie) < 65536
        response = await raw_https(
            edge.https,
            ["GET /api/v1/chats/ HTTP/1.1", f"Host: {SERVER_NAME}", f"Cookie: {cookie}",
             "Connection: close"],
            ctx=tls.client_context(),
        )  # fmt: skip
        assert response.status == 200
        assert fake.last().values("Cookie") == [cookie]


@pytest.mark.parametrize("path", ["/api/v1/chats/", "/oauth2/callback?code=x&state=y"])
async def test_edge_relays_a_response_head_as_big_as_the_session_it_accepts(
    tmp_path: Path, tls: TestTLS, nginx_bin: str, path: str
) -> None:
    """The session cookie nginx accepts on requests (up to 64 KiB) is set, and renewed, in
    Set-Cookie answers: by the auth service's callback under /oauth2/, and relayed by the
    proxy. nginx must pass such a response head on instead of answering 502."""
    parts = [f"_oauth2_proxy_{i}={'a' * 3990}; Path=/; Secure; HttpOnly" for i in range(15)]

    async def handler(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        for part in parts:
            response.headers.add("Set-Cookie", part)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with edge_in_front_of(tmp_path, tls, app, auth_is_upstream=True) as edge:
        response = await raw_https(
            edge.https,
            [f"GET {path} HTTP/1.1", f"Host: {SERVER_NAME}", "Connection: close"],
            ctx=tls.client_context(),
        )
        assert response.status == 200
        assert [v for k, v in response.headers if k.lower() == "set-cookie"] == parts
