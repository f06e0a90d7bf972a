"""OpenWebUI 0.12.4's server, from its own parts, for reading request targets.

The request line goes through uvicorn's real protocol classes (``HttpToolsProtocol`` for
plain HTTP, ``WebSocketsSansIOProtocol`` after an upgrade, as ``uvicorn[standard]`` picks
them) on an in-memory transport; the ASGI scope they produce is routed by a FastAPI app
holding OpenWebUI 0.12.4's routes that matter to the proxy, declared with the same paths,
methods and router prefixes as its source, and the Socket.IO app mounted at ``/ws`` as
OpenWebUI mounts it (python-socketio's ``ASGIApp`` decides which paths are its own).
Versions: the test extras pin them as OpenWebUI 0.12.4 installs them.

Where each route is defined in OpenWebUI 0.12.4: ``routers/auths.py`` (prefix
``/api/v1/auths``: ``/``, ``/signin``, ``/signup``, ``/signout``, ``/ldap``, ``/add``,
``/oauth/{provider}/token/exchange``, ``/api_key``), ``routers/scim.py`` (prefix
``/api/v1/scim/v2``), ``main.py`` (``/oauth/...``, ``/api/config``, ``app.mount('/ws',
socket_app)``), ``socket/main.py`` (``socketio_path='/ws/socket.io'``); everything else
ends in its single-page app (``SPAStaticFiles`` mounted at ``/``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import socketio
from fastapi import APIRouter, FastAPI
from starlette.routing import Mount
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# What each endpoint is to the proxy.
ACCOUNT_CREATION = frozenset(
    {"signup", "add", "ldap", "oauth_token_exchange", "scim", "oauth_login", "oauth_callback"}
)
AUTHS = frozenset({"session", "signin", "signout", "api_key"} | ACCOUNT_CREATION - {"scim"})


def _record(name: str) -> Any:
    async def endpoint() -> dict[str, str]:
        return {"endpoint": name}

    endpoint.__name__ = name
    return endpoint


def _openwebui_app() -> FastAPI:
    app = FastAPI()
    auths = APIRouter()
    auths.get("/")(_record("session"))
    auths.post("/signin")(_record("signin"))
    auths.post("/signup")(_record("signup"))
    auths.post("/signout")(_record("signout"))
    auths.post("/ldap")(_record("ldap"))
    auths.post("/add")(_record("add"))
    auths.post("/oauth/{provider}/token/exchange")(_record("oauth_token_exchange"))
    auths.delete("/oauth/sessions/{provider:path}")(_record("oauth_sessions"))
    for method in ("get", "post", "delete"):
        getattr(auths, method)("/api_key")(_record("api_key"))
    app.include_router(auths, prefix="/api/v1/auths")
    scim = APIRouter()
    for path in ("/Users", "/Groups"):
        scim.get(path)(_record("scim"))
        scim.post(path)(_record("scim"))
        for method in ("get", "put", "patch", "delete"):
            getattr(scim, method)(path + "/{item_id}")(_record("scim"))
    app.include_router(scim, prefix="/api/v1/scim/v2")
    app.get("/oauth/clients/{client_id}/authorize")(_record("oauth_clients"))
    app.get("/oauth/clients/{client_id}/callback")(_record("oauth_clients"))
    app.get("/oauth/{provider}/login")(_record("oauth_login"))
    app.get("/oauth/{provider}/login/callback")(_record("oauth_callback"))
    app.get("/oauth/{provider}/callback")(_record("oauth_callback"))
    app.post("/oauth/backchannel-logout")(_record("oauth_backchannel"))
    app.get("/api/config")(_record("config"))
    app.router.routes.append(Mount("/ws", app=_socketio_app()))
    app.router.routes.append(Mount("/", app=_Endpoint("spa")))
    return app


class _Endpoint:
    """A plain ASGI endpoint that says its name (the SPA fallback, the Socket.IO server)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope["owui_endpoint"].append(self.name)

    async def handle_request(self, scope: Any, receive: Any, send: Any) -> None:
        await self(scope, receive, send)  # as python-engineio's server: its own paths only


def _socketio_app() -> Any:
    """OpenWebUI's ``socketio.ASGIApp(sio, socketio_path='/ws/socket.io')``, whose own path
    test decides; its Engine.IO server replaced by a recorder (no session is opened)."""
    app = socketio.ASGIApp(socketio.AsyncServer(async_mode="asgi"), socketio_path="/ws/socket.io")
    app.engineio_server = _Endpoint("socketio")
    app.other_asgi_app = _Endpoint("ws_other")
    return app


class _Transport(asyncio.Transport):
    """An in-memory transport: what the server writes is kept, nothing is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


@dataclass(frozen=True)
class Reading:
    """What OpenWebUI's server made of a request: the ASGI path and query, and the endpoint
    its router chose (None: the router redirected, or refused the method)."""

    path: str
    query: bytes
    endpoint: str | None


_UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


class OpenWebUIServer:
    """uvicorn + FastAPI/Starlette routing of OpenWebUI's routes, fed raw request bytes."""

    def __init__(self) -> None:
        self.app = _openwebui_app()
        self.config = Config(
            app=self._capture,
            http="httptools",
            ws="websockets-sansio",
            lifespan="off",
            log_level="critical",
            interface="asgi3",
        )
        self.config.load()
        self._scopes: list[Any] = []

    async def _capture(self, scope: Any, receive: Any, send: Any) -> None:
        self._scopes.append(dict(scope))

    async def read(self, method: str, target: bytes, websocket: bool = False) -> Reading | None:
        """How the server reads ``method target`` (None: it refused the request)."""
        protocol = HttpToolsProtocol(
            config=self.config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        transport = _Transport()
        protocol.connection_made(transport)
        self._scopes.clear()
        head = method.encode("ascii") + b" " + target + b" HTTP/1.1\r\nHost: owui\r\n"
        protocol.data_received(head + (_UPGRADE if websocket else b"") + b"\r\n")
        for _ in range(10):  # the app runs in a task the protocol created
            if self._scopes:
                break
            await asyncio.sleep(0)
        if not self._scopes:
            return None
        scope = self._scopes[0]
        return Reading(scope["path"], scope["query_string"], await self._route(scope))

    async def _route(self, scope: dict[str, Any]) -> str | None:
        routed = {"method": "GET", **scope, "owui_endpoint": [], "type": "http"}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(routed, receive, send)
        if routed["owui_endpoint"]:
            return str(routed["owui_endpoint"][0])
        start = next((m for m in sent if m["type"] == "http.response.start"), None)
        if start is not None and start["status"] == 200:
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            return str(json.loads(body)["endpoint"])
        return None  # 307 (redirect_slashes) or 405: no endpoint ran
