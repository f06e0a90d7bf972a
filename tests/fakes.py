"""In-process fakes that record exactly what reached them.

``FakeUpstream`` stands in for OpenWebUI and ``FakeAuthService`` for a forward-auth
service (oauth2-proxy's ``/oauth2/auth``); ``CookieSessionAuthService`` is one whose
sessions expire unless refreshed, as oauth2-proxy's cookie sessions with ``--cookie-refresh``.
All are plain aiohttp apps: serve them with the ``aiohttp_server`` fixture
(``await aiohttp_server(fake.app())``) or any AppRunner.

Every request a fake receives is appended to ``fake.seen`` as a :class:`Seen` holding the
method, the raw path and query as they arrived on the wire, the headers as a list of
``(name, value)`` pairs with duplicates and original case kept, and the body.

FakeUpstream routes (anything else is the echo route):

- ``/health``                      ``{"status": true}`` like OpenWebUI. The proxy's own
                                   readiness reads (its User-Agent) are counted in
                                   ``fake.health_reads``, not in ``fake.seen``.
- ``/sse?events=N``                ``text/event-stream``: sends ``data: 0``, then waits until
                                   ``fake.release_sse()`` is called, then sends the rest;
                                   ``fake.sse_finished`` tells whether it got to the end.
- ``/ws``, ``/ws/socket.io/...``     (upgrades) WebSocket echo (text and binary, each kept in
                                   ``fake.ws_received``); the text ``close:CODE`` makes it
                                   close with that code; offers subprotocol ``chat``.
- ``GET /ws/socket.io/?...&transport=polling`` without ``sid``: an Engine.IO handshake
                                   answer ``0{"sid": "eio-N", ...}`` (a new id each time);
                                   with a ``sid``, the echo route.
- ``/slow?delay=S``                waits S seconds before answering (default 30).
- ``/upload``                      reads the body chunk by chunk without keeping it and
                                   answers ``{"bytes": n}``.
- ``/download?bytes=N``            streams N bytes (default 1 MiB) in 64 KiB chunks.
- ``/gzip``                        a gzip body with ``Content-Encoding: gzip``.
- ``/broken``                      starts a chunked body, then drops the connection.
- ``/hop``                         a response carrying hop-by-hop headers, to check they go.
- ``/status/CODE``                 answers with that status.
- ``POST /api/v1/auths/signin``    like OpenWebUI in trusted-header mode: token ``tok.<email>``
                                   for the email header, also set as the ``token`` cookie.
- ``GET /api/v1/auths/``          the token's user ``{"email", "role"}`` (401 without one);
                                   an API key gets 403 "A human session is required.".
- ``GET /api/v1/users/user/status`` the caller's account ``{"email", "role"}``, for a token
                                   or an API key of ``fake.api_keys`` (401 otherwise).
- ``POST /api/v1/auths/signout``   ``{"status": true}`` and deletes the ``token`` cookie.
- ``GET /api/config`` from the proxy's release check (its User-Agent): ``{"version": ...}``
                                   (``fake.version``), counted in ``fake.release_reads``,
                                   not in ``fake.seen``.

Like OpenWebUI's ``get_current_user``, any request carrying a token ``tok.<email>`` (Bearer
or ``token`` cookie; Bearer first) together with an email header for a different user gets
``401 {"detail": "User mismatch. Please sign in again."}``, unless ``mismatch_check`` is
off (releases before 0.6.14 had no such check). API keys (``fake.api_keys``: key -> email;
``sk-123`` is Alice's unless a test says otherwise) skip that check, as OpenWebUI's do.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from proxy.owners import SESSION_PATH, STATUS_PATH
from proxy.readiness import USER_AGENT as READINESS_AGENT
from proxy.release_watch import USER_AGENT as RELEASE_CHECK_AGENT

EMAIL_HEADER = "X-User-Email"
MISMATCH = {"detail": "User mismatch. Please sign in again."}


@dataclass
class Seen:
    """One request as it arrived."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), duplicates kept."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names_normalised(self) -> list[str]:
        """Header names lower-cased with ``_`` read as ``-``, as the spoof checks need."""
        return [k.lower().replace("_", "-") for k, _ in self.headers]


def _record(request: web.Request, body: bytes = b"") -> Seen:
    raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
    return Seen(request.method, request.raw_path, raw_headers, body)


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get("token")


@dataclass
class FakeUpstream:
    """A recording stand-in for OpenWebUI. ``email_header`` is its trusted email header."""

    email_header: str = EMAIL_HEADER
    seen: list[Seen] = field(default_factory=list)
    sse_finished: bool = False
    ws_closed_with: int | None = None
    ws_received: list[str | bytes] = field(default_factory=list)
    upload_largest_chunk: int = 0
    # As OpenWebUI: /api/config says whether it has no user yet; sign-in answers with a role.
    onboarding: bool = False
    # The release /api/config names: the proxy refuses to relay to one it would fail open
    # against (proxy/openwebui_release.py), so the fake is a safe one unless a test says not.
    version: str | None = "0.12.4"
    # What /api/config's features say (as OpenWebUI: trusted-header mode, authentication on).
    features: dict[str, Any] = field(
        default_factory=lambda: {"auth": True, "auth_trusted_header": True}
    )
    release_reads: int = 0
    health_reads: int = 0
    # False: like OpenWebUI before 0.6.14, no "User mismatch" check at all.
    mismatch_check: bool = True
    roles: dict[str, str] = field(default_factory=dict)  # email -> role; default "user"
    ws_set_cookie: str | None = None  # a Set-Cookie the WebSocket upgrade answers with
    api_keys: dict[str, str] = field(default_factory=lambda: {"sk-123": "alice@example.edu"})
    engineio_sessions: int = 0
    _sse_gate: asyncio.Event | None = None

    def app(self) -> web.Application:
        # OpenWebUI's server (uvicorn with httptools) sets no header size limit; aiohttp's
        # 8,190 bytes would refuse the groups header of a person in a few thousand groups.
        app = web.Application(client_max_size=1024**4, handler_args={"max_field_size": 1 << 20})
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def release_sse(self) -> None:
        self._gate().set()

    def _gate(self) -> asyncio.Event:
        if self._sse_gate is None:
            self._sse_gate = asyncio.Event()
        return self._sse_gate

    def last(self) -> Seen:
        return self.seen[-1]

    def relayed(self) -> list[Seen]:
        """What reached the fake as relayed requests, not the proxy's owner lookups."""
        return [s for s in self.seen if s.raw_path not in (SESSION_PATH, STATUS_PATH)]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/upload":
            return await self._upload(request)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and (path == "/ws" or path.startswith("/ws/socket.io")):
            return await self._ws(request)
        body = await request.read()
        if path == "/api/config" and request.headers.get("User-Agent") == RELEASE_CHECK_AGENT:
            self.release_reads += 1  # the proxy's own check, not a relayed request
            return web.json_response({"version": self.version, "features": self.features})
        if path == "/health" and request.headers.get("User-Agent") == READINESS_AGENT:
            self.health_reads += 1
            return web.json_response({"status": True})
        self.seen.append(_record(request, body))
        mismatch = self._mismatch(request)
        if mismatch is not None:
            return mismatch
        if path == "/health":
            return web.json_response({"status": True})
        if (
            path.startswith("/ws/socket.io")
            and request.method == "GET"
            and request.query.get("transport") == "polling"
            and "sid" not in request.query
        ):
            self.engineio_sessions += 1
            opened = {
                "sid": f"eio-{self.engineio_sessions}",
                "upgrades": ["websocket"],
                "pingInterval": 25000,
                "pingTimeout": 20000,
            }
            return web.Response(text="0" + json.dumps(opened), content_type="text/plain")
        if path == "/sse":
            return await self._sse(request)
        if path == "/slow":
            await asyncio.sleep(float(request.query.get("delay", "30")))
            return web.json_response({"slow": True})
        if path == "/download":
            remaining = int(request.query.get("bytes", str(1024 * 1024)))
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = remaining
            await response.prepare(request)
            block = b"\x5a" * 65536
            while remaining > 0:
                await response.write(block[:remaining])
                remaining -= min(remaining, len(block))
            await response.write_eof()
            return response
        if path == "/broken":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"partial")
            assert request.transport is not None
            request.transport.close()
            return response
        if path == "/gzip":
            payload = gzip.compress(b'{"compressed": true}')
            return web.Response(
                body=payload,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if path == "/hop":
            return web.Response(
                text="hop",
                headers={
                    "Connection": "X-Secret-Hop",
                    "X-Secret-Hop": "1",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authenticate": "Basic",
                    "X-Kept": "yes",
                },
            )
        if path.startswith("/status/"):
            return web.json_response({"status": int(path[8:])}, status=int(path[8:]))
        if path == "/api/v1/auths/signin" and request.method == "POST":
            email = request.headers.get(self.email_header, "").lower()
            if not email:
                return web.json_response(
                    {"detail": "Your provider has not provided a trusted header"}, status=400
                )
            token = f"tok.{email}"
            role = self.roles.get(email, "user")
            response = web.json_response({"email": email, "role": role, "token": token})
            response.set_cookie("token", token, httponly=True, samesite="Lax")
            return response
        if path == "/api/v1/users/user/status" and request.method == "GET":
            token = _token_of(request) or ""
            owner = self.api_keys.get(token) or (token[4:] if token.startswith("tok.") else "")
            if not owner:
                return web.json_response({"detail": "Invalid token"}, status=401)
            return web.json_response({"email": owner, "role": self.roles.get(owner, "user")})
        if path == "/api/v1/auths/" and request.method == "GET":
            token = _token_of(request) or ""
            if token.startswith("sk-"):
                return web.json_response({"detail": "A human session is required."}, status=403)
            if not token.startswith("tok."):
                return web.json_response({"detail": "Not authenticated"}, status=401)
            return web.json_response(
                {"email": token[4:], "role": self.roles.get(token[4:], "user")}
            )
        if path == "/api/v1/auths/signout" and request.method == "POST":
            response = web.json_response({"status": True})
            response.del_cookie("token")
            return response
        echo: dict[str, object] = {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": _record(request).headers,
            "body": body.decode("latin-1"),
        }
        if path == "/api/config":
            echo["onboarding"] = self.onboarding
        return web.json_response(echo)

    def _mismatch(self, request: web.Request) -> web.Response | None:
        if not self.mismatch_check:
            return None
        token = _token_of(request)
        email = request.headers.get(self.email_header, "").lower()
        if token and token.startswith("tok.") and email and token[4:] != email:
            return web.json_response(MISMATCH, status=401)
        return None

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        events = int(request.query.get("events", "3"))
        self.sse_finished = False
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 0\n\n")
        await self._gate().wait()
        for i in range(1, events):
            await response.write(f"data: {i}\n\n".encode())
        await response.write_eof()
        self.sse_finished = True
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        self.seen.append(_record(request))
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            self.upload_largest_chunk = max(self.upload_largest_chunk, len(chunk))
        return web.json_response({"bytes": total})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(_record(request))
        mismatch = self._mismatch(request)
        if mismatch is not None:
            return mismatch
        ws = web.WebSocketResponse(protocols=("chat",), autoping=True)
        if self.ws_set_cookie is not None:
            ws.headers.add("Set-Cookie", self.ws_set_cookie)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self.ws_received.append(msg.data)
            if msg.type == WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye")
                    break
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        self.ws_closed_with = ws.close_code
        return ws


@dataclass
class FakeAuthService:
    """A recording forward-auth service answering like oauth2-proxy's ``/oauth2/auth``.

    ``users`` maps a value of the ``cookie_name`` cookie to the identity response headers
    returned with 202. Unknown or missing cookie: 401 with ``Location: login_url`` and a
    ``WWW-Authenticate``. ``mode`` ``"error"`` answers 500; ``"slow"`` waits ``delay``
    seconds first; ``"forbidden"`` answers 403; ``"redirect"`` answers 302 to ``login_url``
    (as Authelia does for browsers). ``deny_uris`` are answered 403 whoever asks, as a
    path-aware service (Authelia's access-control rules) would. ``set_cookies`` go with
    every 202 and 401 as ``Set-Cookie`` headers (a refreshed or cleared session).
    """

    users: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    cookie_name: str = "_oauth2_proxy"
    login_url: str = "https://idp.example/login"
    mode: str = "ok"
    delay: float = 30.0
    deny_uris: set[str] = field(default_factory=set)
    set_cookies: tuple[str, ...] = ()
    seen: list[Seen] = field(default_factory=list)
    probes: int = 0

    PATH = "/oauth2/auth"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        probe = "X-Owui-Proxy-Probe" in request.headers  # readiness: not a user's request
        if probe:
            self.probes += 1
        else:
            self.seen.append(_record(request, await request.read()))
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        if self.mode == "redirect":
            return web.Response(status=302, headers={"Location": self.login_url})
        if self.mode == "forbidden" or request.headers.get("X-Forwarded-Uri") in self.deny_uris:
            return web.Response(status=403, text="forbidden")
        identity = self.users.get(request.cookies.get(self.cookie_name, ""))
        if identity is None:
            response = web.Response(
                status=401,
                text="unauthorized",
                headers={"Location": self.login_url, "WWW-Authenticate": 'Bearer realm="fake"'},
            )
        else:
            response = web.Response(status=202, headers=dict(identity))
        for cookie in self.set_cookies:
            response.headers.add("Set-Cookie", cookie)
        return response


@dataclass
class CookieSessionAuthService:
    """oauth2-proxy with its cookie session store and ``--cookie-refresh``, in miniature.

    A session is the ``_oauth2_proxy`` cookie; :meth:`sign_in` makes one (the login flow is
    not what is tested). Its access token lives ``lifetime_s``: a session older than that
    is refused (401, and the cookie cleared, as oauth2-proxy does). A session older than
    ``refresh_s`` is refreshed, which takes ``refresh_delay_s`` (the round trip to the
    identity provider): 202 with ``Set-Cookie`` carrying a new session. The refresh token
    inside the old cookie is used up then (rotation), and presenting it again is taken for
    theft, as providers with reuse detection do: the whole session chain is revoked
    (``revoked`` counts it) and the answer is 401. ``clock`` is injectable, so no test waits.
    """

    lifetime_s: float = 300.0  # Keycloak's default access-token lifespan
    refresh_s: float = 60.0
    refresh_delay_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    cookie_name: str = "_oauth2_proxy"
    # cookie -> (who, since when, the sign-in it descends from)
    sessions: dict[str, tuple[str, float, int]] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)  # refreshed cookies -> their sign-in
    refreshes: int = 0
    revoked: int = 0
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth2/auth", self._handle)
        return app

    def sign_in(self, email: str, chain: int | None = None) -> str:
        """A fresh session for ``email``; its cookie value."""
        serial = next(self._serial)
        value = f"session-{serial}"
        self.sessions[value] = (email, self.clock(), serial if chain is None else chain)
        return value

    def _cookie(self, value: str) -> str:
        return f"{self.cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax"

    def _refused(self, value: str) -> web.Response:
        response = web.Response(status=401, text="unauthorized")
        if value:
            response.headers.add("Set-Cookie", f"{self.cookie_name}=; Path=/; Max-Age=0; HttpOnly")
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        value = request.cookies.get(self.cookie_name, "")
        if value in self.used:  # a used-up refresh token presented again: revoke them all
            chain = self.used[value]
            self.sessions = {k: v for k, v in self.sessions.items() if v[2] != chain}
            self.revoked += 1
            return self._refused(value)
        session = self.sessions.get(value)
        if session is None or self.clock() - session[1] >= self.lifetime_s:
            self.sessions.pop(value, None)
            return self._refused(value)
        email, created, chain = session
        if self.clock() - created < self.refresh_s:
            return web.Response(status=202, headers={"X-Auth-Request-Email": email})
        await asyncio.sleep(self.refresh_delay_s)
        if value in self.used or value not in self.sessions:  # refreshed by another call
            return await self._handle(request)
        del self.sessions[value]
        self.used[value] = chain
        self.refreshes += 1
        response = web.Response(status=202, headers={"X-Auth-Request-Email": email})
        response.headers.add("Set-Cookie", self._cookie(self.sign_in(email, chain)))
        return response


def echo_of(body: bytes) -> dict[str, object]:
    """Decode the echo route's JSON answer."""
    decoded: dict[str, object] = json.loads(body)
    return decoded
