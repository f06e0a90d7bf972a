"""A fake OpenWebUI 0.12.4 behind a fake internal listener, for the provisioner's tests.

Faithful to 0.12.4's source (``routers/auths.py``, ``routers/chats.py``, ``models/chats.py``,
``main.py``'s ``/api/config``, ``utils/auth.py``) for the endpoints the provisioner uses:

- ``GET /api/config``: ``onboarding: true`` only while there is no user and no valid token;
  ``features.auth_trusted_header`` from ``trusted_header``.
- ``POST /api/v1/auths/signin``: the body must be a SigninForm (422 otherwise); without the
  trusted header 400; creates a missing user with ``default_role`` (the very first user
  becomes admin); the name header is URL-decoded; answers the session (token, id, email,
  name, role, ...) and sets the ``token`` cookie.
- Every chat endpoint: token from ``Authorization: Bearer`` then the ``token`` cookie
  (401 "Not authenticated" without); unknown token 401; email header naming another user
  401 "User mismatch"; role ``pending`` 401 (``get_verified_user``).
- ``POST /api/v1/chats/new`` (server id, ``created_at`` in whole seconds, messages get
  ``user_id``), ``GET /api/v1/chats/list`` (non-archived; folders and pinned only when
  asked; ``page`` = 60 a page), ``GET /api/v1/chats/archived`` (always paged by 60;
  ``query`` is a case-insensitive SQL LIKE ``%query%`` on the title; ``order_by`` +
  ``direction``), ``GET /api/v1/chats/all`` (every chat whole, archived too, JSON Lines,
  batches of 100 each a query of its own), ``GET /api/v1/chats/{id}`` (401 when not the caller's),
  ``POST /api/v1/chats/{id}`` (merges the update: keys, history messages by id),
  ``POST /api/v1/chats/{id}/archive`` (a **toggle**; 401 when not the caller's),
  ``DELETE /api/v1/chats/{id}`` (404 when not the caller's; 401 without chat.delete).

In front sits a minimal internal listener: ``Proxy-Authorization: Bearer <service token>``
or 407, then the default allowlist or 403 (JSON without ``detail``). With
``listener=False`` it is left out, for tests that put the real proxy in front.

Its clock (``created_at``, ``updated_at`` and the ``Date`` header) is injectable;
:class:`FastClock` runs it many times faster than real time, so a provisioner waiting out
the two-second settle rule on the server's clock waits milliseconds instead.

Test levers: :meth:`FakeOpenWebUI.fail` queues faults (a status, a Retry-After, or a
dropped connection) for matching requests; :meth:`FakeOpenWebUI.slow` delays them;
``on_create`` / ``on_archive`` hooks run inside those endpoints to stage races
(``on_call`` as each request arrives); ``calls``
records every request that arrived, ``peak_in_flight`` the most handled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

SERVICE_TOKEN = "svc-" + "s3rvice-t0ken-for-tests-only-0123456789"
NOT_FOUND = "We could not find what you're looking for :/"
ACCESS_PROHIBITED = (
    "You do not have permission to access this resource. "
    "Please contact your administrator for assistance."
)
INVALID_TOKEN = "Your session has expired or the token is invalid. Please sign in again."
INVALID_TRUSTED_HEADER = (
    "Your provider has not provided a trusted header. "
    "Please contact your administrator for assistance."
)
INVALID_CRED = (
    "The email or password provided is incorrect. Please check for typos and try logging in again."
)
PAGE = 60
EXPORT_BATCH = 100  # CHAT_EXPORT_BATCH_SIZE

ALLOW = [
    ("GET", r"/api/config"),
    ("POST", r"/api/v1/auths/signin"),
    ("POST", r"/api/v1/chats/new"),
    ("GET", r"/api/v1/chats/archived"),
    ("GET", r"/api/v1/chats/list"),
    ("GET", r"/api/v1/chats/all"),
    ("GET", r"/api/v1/chats/[A-Za-z0-9_-]+"),
    ("POST", r"/api/v1/chats/[A-Za-z0-9_-]+"),
    ("POST", r"/api/v1/chats/[A-Za-z0-9_-]+/archive"),
    ("DELETE", r"/api/v1/chats/[A-Za-z0-9_-]+"),
    ("POST", r"/api/v1/chats/[A-Za-z0-9_-]+/folder"),
    ("GET", r"/api/v1/folders/"),
    ("POST", r"/api/v1/folders/"),
    ("DELETE", r"/api/v1/folders/[A-Za-z0-9_-]+"),
    ("GET", r"/api/v1/users/search"),
]
USERS_PAGE = 30  # PAGE_ITEM_COUNT of routers/users.py


@dataclass
class User:
    id: str
    email: str
    name: str
    role: str
    can_delete: bool = True


@dataclass
class Chat:
    id: str
    user_id: str
    title: str
    chat: dict[str, Any]
    created_at: int
    updated_at: int
    archived: bool = False
    pinned: bool = False
    folder_id: str | None = None

    def response(self) -> dict[str, Any]:
        """``ChatResponse``."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "title": self.title,
            "chat": json.loads(json.dumps(self.chat)),
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "share_id": None,
            "archived": self.archived,
            "pinned": self.pinned,
            "meta": {},
            "variables": {},
            "folder_id": self.folder_id,
            "tasks": None,
            "summary": None,
            "current_message_id": (self.chat.get("history") or {}).get("currentId"),
            "context_usage": None,
        }

    def title_id(self, *, with_last_read: bool) -> dict[str, Any]:
        """``ChatTitleIdResponse`` (``archived`` keeps its default False, as in 0.12.4)."""
        return {
            "id": self.id,
            "title": self.title,
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "last_read_at": self.updated_at if with_last_read else None,
            "snippet": None,
            "active": False,
            "archived": False,
        }


@dataclass
class Folder:
    id: str
    user_id: str
    name: str
    parent_id: str | None
    meta: dict[str, Any] | None
    created_at: int
    updated_at: int

    def listed(self) -> dict[str, Any]:
        """``FolderNameIdResponse``: ``meta`` keeps only its icon."""
        icon = (self.meta or {}).get("icon")
        return {
            "id": self.id,
            "name": self.name,
            "meta": {"icon": icon} if self.meta is not None else None,
            "parent_id": self.parent_id,
            "is_expanded": False,
            "unread_count": 0,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int  # 0 = drop the connection without answering
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"detail": "injected"})


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    status: int
    act_as: str | None  # the email header as sent
    bearer: bool  # an Authorization: Bearer header was sent


class FastClock:
    """Server time running ``speed`` times faster than real time, from now on.

    The fake stamps chats and ``Date`` headers with it. A provisioner in the test's own
    process sleeps with :meth:`sleep` (server seconds, slept as real seconds / ``speed``),
    so its pauses keep their order and their meaning on the server's clock; one in a
    child process sleeps real seconds, but finds the settle time already past when its
    next round begins, because a few real milliseconds are seconds here.
    """

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start_real = time.time()

    def __call__(self) -> float:
        return self._start_real + (time.time() - self._start_real) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


class Gate:
    """Holds the first ``arrivals`` matching requests until they are all in (a barrier)."""

    def __init__(self, method: str, path: re.Pattern[str], arrivals: int, timeout_s: float):
        self.method = method
        self.path = path
        self.arrivals = arrivals
        self.timeout_s = timeout_s
        self.arrived = 0
        self.opened = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.arrivals:
            self.opened.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.opened.wait(), self.timeout_s)


class FakeOpenWebUI:
    def __init__(
        self,
        *,
        trusted_header: bool = True,
        default_role: str = "user",
        email_header: str = "X-User-Email",
        name_header: str = "X-User-Name",
        service_tokens: tuple[str, ...] = (SERVICE_TOKEN,),
        clock: Callable[[], float] = time.time,
        listener: bool = True,
    ) -> None:
        self.listener = listener  # False: the real proxy's internal listener stands in front
        self.trusted_header = trusted_header
        self.default_role = default_role
        self.email_header = email_header
        self.name_header = name_header
        self.service_tokens = service_tokens
        self.clock = clock
        self.users: dict[str, User] = {}  # by email
        # Users whose credentials record is missing: what 0.12.4 on SQLite can leave after a
        # "database is locked" during sign-up; their trusted sign-in answers 400.
        self.without_credentials: set[str] = set()
        self.tokens: dict[str, str] = {}  # token -> user id
        self.chats: dict[str, Chat] = {}
        self.folders: dict[str, Folder] = {}
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.in_flight = 0  # requests being handled right now, and the most at once
        self.peak_in_flight = 0
        self.on_call: Callable[[Call], None] | None = None
        self.on_create: Callable[[Chat], None] | None = None
        self.on_archive: Callable[[Chat], None] | None = None
        self.allow = list(ALLOW)
        self.delays: list[tuple[str, re.Pattern[str], float]] = []
        self.gates: list[Gate] = []
        # The release /api/config names; before 0.8.0 with sign-ups off (OpenWebUI turns them
        # off after the first account), the trusted-header sign-in of a new user is a 403.
        self.version = "0.12.4"
        self.enable_signup = False

    # --- levers and views for tests -------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """The next ``times`` requests to ``method path`` (a regex) get ``status`` (0 = drop)."""
        self.faults.append(
            Fault(
                method,
                re.compile(path),
                status,
                times,
                headers or {},
                body or {"detail": "injected"},
            )
        )

    def slow(self, method: str, path: str, seconds: float) -> None:
        """Requests to ``method path`` (a regex) wait ``seconds`` before being handled."""
        self.delays.append((method, re.compile(path), seconds))

    def gate(self, method: str, path: str, arrivals: int, timeout_s: float = 30.0) -> None:
        """Requests to ``method path`` (a regex) wait until ``arrivals`` of them have come.

        Makes a race certain instead of likely: the first ``arrivals`` requests are held
        until all of them are in (or ``timeout_s`` passes), later ones go straight through.
        """
        self.gates.append(Gate(method, re.compile(path), arrivals, timeout_s))

    def add_user(self, email: str, *, role: str = "user", name: str | None = None) -> User:
        user = User(str(uuid.uuid4()), email.lower(), name or email, role)
        self.users[user.email] = user
        return user

    def add_chat(
        self,
        user: User,
        chat: dict[str, Any],
        *,
        archived: bool = False,
        created_at: int | None = None,
        chat_id: str | None = None,
    ) -> Chat:
        now = int(self.clock()) if created_at is None else created_at
        item = Chat(
            chat_id or str(uuid.uuid4()),
            user.id,
            chat.get("title", "New Chat"),
            json.loads(json.dumps(chat)),
            now,
            now,
            archived,
        )
        self.chats[item.id] = item
        return item

    def add_folder(
        self,
        user: User,
        name: str,
        *,
        parent_id: str | None = None,
        created_at: int | None = None,
        folder_id: str | None = None,
    ) -> Folder:
        now = int(self.clock()) if created_at is None else created_at
        folder = Folder(folder_id or str(uuid.uuid4()), user.id, name, parent_id, None, now, now)
        self.folders[folder.id] = folder
        return folder

    def folders_of(self, email: str) -> list[Folder]:
        user = self.users.get(email.lower())
        return [] if user is None else [f for f in self.folders.values() if f.user_id == user.id]

    def chats_of(self, email: str) -> list[Chat]:
        user = self.users.get(email.lower())
        return [] if user is None else [c for c in self.chats.values() if c.user_id == user.id]

    def count(self, method: str, path_regex: str) -> int:
        return sum(1 for c in self.calls if c.method == method and re.fullmatch(path_regex, c.path))

    # --- the app ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._record, self._listener, self._faults, self._errors]
        )
        app.router.add_get("/api/config", self._config)
        app.router.add_post("/api/v1/auths/signin", self._signin)
        app.router.add_post("/api/v1/chats/new", self._new)
        app.router.add_get("/api/v1/chats/list", self._list)
        app.router.add_get("/api/v1/chats/archived", self._archived)
        app.router.add_get("/api/v1/chats/all", self._all)
        app.router.add_get("/api/v1/chats/{id}", self._get)
        app.router.add_post("/api/v1/chats/{id}", self._update)
        app.router.add_post("/api/v1/chats/{id}/archive", self._archive)
        app.router.add_delete("/api/v1/chats/{id}", self._delete)
        app.router.add_post("/api/v1/chats/{id}/folder", self._move)
        app.router.add_get("/api/v1/folders/", self._folders)
        app.router.add_post("/api/v1/folders/", self._new_folder)
        app.router.add_delete("/api/v1/folders/{id}", self._delete_folder)
        app.router.add_get("/api/v1/users/search", self._search_users)
        app.on_response_prepare.append(self._date)
        return app

    async def _date(self, request: web.Request, response: web.StreamResponse) -> None:
        """The Date header from the fake's own clock, the one ``created_at`` comes from."""
        response.headers["Date"] = email.utils.formatdate(self.clock(), usegmt=True)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        call = Call(
            request.method,
            request.path,
            dict(request.query),
            0,
            request.headers.get(self.email_header),
            request.headers.get("Authorization", "").startswith("Bearer "),
        )
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            self.in_flight -= 1
        call.status = response.status
        return response

    @web.middleware
    async def _listener(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self.listener:
            passed: web.StreamResponse = await handler(request)
            return passed
        offered = request.headers.get("Proxy-Authorization", "")
        if not any(hmac.compare_digest(offered, f"Bearer {t}") for t in self.service_tokens):
            return web.json_response(
                {"error": "proxy authentication required"},
                status=407,
                headers={"Proxy-Authenticate": "Bearer"},
            )
        if not any(m == request.method and re.fullmatch(p, request.path) for m, p in self.allow):
            return web.json_response({"error": "endpoint not allowed"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for gate in self.gates:
            if gate.method == request.method and gate.path.fullmatch(request.path):
                await gate.arrive()
        for method, path, seconds in self.delays:
            if method == request.method and path.fullmatch(request.path):
                await asyncio.sleep(seconds)
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method == request.method
                and fault.path.fullmatch(request.path)
            ):
                fault.times -= 1
                if fault.status == 0:
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response(status=500)  # never reaches the client
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except _Fail as exc:
            return web.json_response({"detail": exc.detail}, status=exc.status)
        return response

    # --- OpenWebUI ------------------------------------------------------------------------------

    def _token_user(self, request: web.Request) -> User | None:
        auth = request.headers.get("Authorization", "")
        token = (
            auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get("token")
        )
        if not token:
            raise _detail(401, "Not authenticated")
        user_id = self.tokens.get(token)
        user = next((u for u in self.users.values() if u.id == user_id), None)
        if user is None:
            raise _detail(401, INVALID_TOKEN)
        trusted = request.headers.get(self.email_header, "").lower() if self.trusted_header else ""
        if trusted and user.email != trusted:
            raise _detail(401, "User mismatch. Please sign in again.")
        return user

    def _verified(self, request: web.Request) -> User:
        user = self._token_user(request)
        assert user is not None
        if user.role not in ("user", "admin"):
            raise _detail(401, ACCESS_PROHIBITED)
        return user

    async def _config(self, request: web.Request) -> web.Response:
        user = None
        if request.headers.get("Authorization"):
            try:
                user = self._token_user(request)
            except _Fail:
                user = None
        body: dict[str, Any] = {}
        if user is None and not self.users:
            body["onboarding"] = True
        body.update(
            {
                "status": True,
                "name": "Open WebUI",
                "version": self.version,
                "features": {
                    "auth": True,
                    "auth_trusted_header": self.trusted_header,
                    "enable_signup": self.enable_signup,
                    "enable_login_form": True,
                },
            }
        )
        return web.json_response(body)

    async def _signin(self, request: web.Request) -> web.Response:
        form = await _json(request)
        if not (
            isinstance(form, dict)
            and isinstance(form.get("email"), str)
            and isinstance(form.get("password"), str)
        ):
            raise _detail(
                422, [{"type": "missing", "loc": ["body", "email"], "msg": "Field required"}]
            )
        if not self.trusted_header:
            raise _detail(400, INVALID_CRED)
        if self.email_header not in request.headers:
            raise _detail(400, INVALID_TRUSTED_HEADER)
        email = request.headers[self.email_header].lower()
        name = unquote(request.headers.get(self.name_header, email), encoding="utf-8")
        user = self.users.get(email)
        old_release = tuple(int(part) for part in self.version.split(".")) < (0, 8, 0)
        if user is None and self.users and not self.enable_signup and old_release:
            raise _detail(403, "You do not have permission to access this resource.")
        if user is None:
            role = "admin" if not self.users else self.default_role
            user = self.add_user(email, role=role, name=name)
        if email in self.without_credentials:
            raise _detail(400, INVALID_CRED)
        token = f"owui-user-token.{uuid.uuid4().hex}"
        self.tokens[token] = user.id
        response = web.json_response(
            {
                "token": token,
                "token_type": "Bearer",
                "expires_at": None,
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "role": user.role,
                "profile_image_url": f"/api/v1/users/{user.id}/profile/image",
                "permissions": {},
            }
        )
        response.set_cookie("token", token, httponly=True)
        return response

    async def _new(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        form = await _json(request)
        if not isinstance(form, dict) or not isinstance(form.get("chat"), dict):
            raise _detail(
                422,
                [
                    {
                        "type": "dict_type",
                        "loc": ["body", "chat"],
                        "msg": "Input should be a valid dictionary",
                    }
                ],
            )
        folder = self.folders.get(form["folder_id"]) if form.get("folder_id") else None
        if form.get("folder_id") is not None and (folder is None or folder.user_id != user.id):
            raise _detail(404, NOT_FOUND)  # has_folder_write_access
        chat = form["chat"]
        messages = list(((chat.get("history") or {}).get("messages") or {}).values())
        messages.extend(chat.get("messages") or [])
        for message in messages:  # set_message_authors
            message["user_id"] = user.id
        now = int(self.clock())
        item = Chat(str(uuid.uuid4()), user.id, chat.get("title", "New Chat"), chat, now, now)
        item.folder_id = form.get("folder_id")
        self.chats[item.id] = item
        if self.on_create is not None:
            self.on_create(item)
        return web.json_response(item.response())

    async def _list(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        include_pinned = request.query.get("include_pinned", "false").lower() == "true"
        include_folders = request.query.get("include_folders", "false").lower() == "true"
        chats = [
            c
            for c in self.chats.values()
            if c.user_id == user.id
            and not c.archived
            and (include_folders or c.folder_id is None)
            and (include_pinned or not c.pinned)
        ]
        chats.sort(key=lambda c: c.id)
        chats.sort(key=lambda c: c.updated_at, reverse=True)
        if "page" in request.query:
            page = int(request.query["page"])
            chats = chats[(page - 1) * PAGE : page * PAGE]
        return web.json_response([c.title_id(with_last_read=True) for c in chats])

    async def _archived(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        page = int(request.query.get("page", "1"))
        chats = [c for c in self.chats.values() if c.user_id == user.id and c.archived]
        query = request.query.get("query")
        if query:
            like = _ilike(query)
            chats = [c for c in chats if like.fullmatch(c.title)]
        order_by, direction = request.query.get("order_by"), request.query.get("direction")
        chats.sort(key=lambda c: c.id)
        if order_by and direction:
            if order_by not in ("created_at", "updated_at", "title", "id"):
                raise _detail(500, "Internal Server Error")  # ValueError, unhandled in 0.12.4
            if direction.lower() not in ("asc", "desc"):
                raise _detail(500, "Internal Server Error")
            chats.sort(key=lambda c: getattr(c, order_by), reverse=direction.lower() == "desc")
        else:
            chats.sort(key=lambda c: c.updated_at, reverse=True)
        chats = chats[(page - 1) * PAGE : page * PAGE]
        return web.json_response([c.title_id(with_last_read=False) for c in chats])

    async def _all(self, request: web.Request) -> web.Response:
        """Every chat of the user, archived too, whole, as JSON Lines in batches of 100.

        Like 0.12.4, each batch is its own query (ordered by ``updated_at`` desc, skipping
        what earlier batches returned), with a pause between batches, so a chat updated
        meanwhile can move from one batch to another: only a short answer is a snapshot.
        """
        user = self._verified(request)
        lines: list[bytes] = []
        skip = 0
        while True:
            chats = [c for c in self.chats.values() if c.user_id == user.id]
            chats.sort(key=lambda c: c.id)
            chats.sort(key=lambda c: c.updated_at, reverse=True)
            batch = chats[skip : skip + EXPORT_BATCH]
            lines += [json.dumps(chat.response()).encode() + b"\n" for chat in batch]
            if len(batch) < EXPORT_BATCH:
                break
            skip += EXPORT_BATCH
            await asyncio.sleep(0)  # other requests may land between two batches
        return web.Response(body=b"".join(lines), content_type="application/x-ndjson")

    def _own(self, request: web.Request, user: User) -> Chat | None:
        chat = self.chats.get(request.match_info["id"])
        return chat if chat is not None and chat.user_id == user.id else None

    async def _get(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        chat = self._own(request, user)
        if chat is None:
            raise _detail(401, NOT_FOUND)
        body = chat.response()
        body["chat"]["share_mode"] = "continue"
        return web.json_response(body)

    async def _update(self, request: web.Request) -> web.Response:
        """``update_chat_by_id``: top-level keys replace, history messages merge by id, and
        the stored ``currentId`` stays unless the update names one that exists."""
        user = self._verified(request)
        chat = self._own(request, user)
        form = await _json(request)
        if chat is None:
            raise _detail(401, ACCESS_PROHIBITED)
        incoming = form["chat"]
        for message in (incoming.get("history") or {}).get("messages", {}).values():
            message["user_id"] = user.id  # set_message_authors
        updated = {**chat.chat, **incoming}
        if "history" in incoming:
            stored = chat.chat.get("history") or {}
            merged = {**stored.get("messages", {}), **incoming["history"].get("messages", {})}
            current = incoming["history"].get("currentId")
            updated["history"] = {
                **stored,
                **incoming["history"],
                "messages": merged,
                "currentId": current if current in merged else stored.get("currentId"),
            }
        chat.chat = updated
        chat.title = updated.get("title", "New Chat")
        chat.updated_at = int(self.clock())
        return web.json_response(chat.response())

    async def _archive(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        chat = self._own(request, user)
        if chat is None:
            raise _detail(401, "Something went wrong :/")
        chat.archived = not chat.archived
        chat.folder_id = None
        chat.updated_at = int(self.clock())
        if self.on_archive is not None:
            self.on_archive(chat)
        return web.json_response(chat.response())

    async def _delete(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        if user.role != "admin" and not user.can_delete:
            raise _detail(401, ACCESS_PROHIBITED)
        chat = self._own(request, user)
        if chat is None:
            raise _detail(404, NOT_FOUND)
        del self.chats[chat.id]
        return web.json_response(True)

    async def _move(self, request: web.Request) -> web.Response:
        """``update_chat_folder_id_by_id``: sets the folder; into a folder also un-archives."""
        user = self._verified(request)
        chat = self._own(request, user)
        form = await _json(request)
        if chat is None:
            raise _detail(401, "Something went wrong :/")
        folder_id = form.get("folder_id")
        if folder_id is not None:
            folder = self.folders.get(folder_id)
            if folder is None or folder.user_id != user.id:
                raise _detail(404, NOT_FOUND)
            chat.archived = False
        chat.folder_id = folder_id
        chat.pinned = False
        chat.updated_at = int(self.clock())
        return web.json_response(chat.response())

    async def _folders(self, request: web.Request) -> web.Response:
        user = self._verified(request)
        return web.json_response(
            [f.listed() for f in self.folders.values() if f.user_id == user.id]
        )

    async def _new_folder(self, request: web.Request) -> web.Response:
        """``create_folder``: a name taken at that level (case-insensitively) is a 400; the
        check and the insert are not atomic, as in 0.12.4 (no unique constraint)."""
        user = self._verified(request)
        form = await _json(request)
        if not isinstance(form, dict) or not isinstance(form.get("name"), str):
            raise _detail(422, [{"type": "missing", "loc": ["body", "name"]}])
        if set(form) - {"name", "data", "meta", "parent_id"}:
            raise _detail(422, [{"type": "extra_forbidden", "loc": ["body"]}])
        parent = form.get("parent_id")
        taken = any(
            f.user_id == user.id
            and f.parent_id == parent
            and f.name.lower() == form["name"].lower()
            for f in self.folders.values()
        )
        if taken:
            raise _detail(400, "[ERROR: Folder already exists]")
        now = int(self.clock())
        folder = Folder(
            str(uuid.uuid4()), user.id, form["name"], parent, form.get("meta"), now, now
        )
        self.folders[folder.id] = folder
        return web.json_response(
            {
                **folder.listed(),
                "user_id": user.id,
                "meta": folder.meta,
                "items": None,
                "data": None,
            }
        )

    async def _delete_folder(self, request: web.Request) -> web.Response:
        """The folder and every folder below it; their chats deleted, or moved to the top
        level with ``delete_contents=false``."""
        user = self._verified(request)
        folder = self.folders.get(request.match_info["id"])
        if folder is None or folder.user_id != user.id:
            raise _detail(404, NOT_FOUND)
        keep = request.query.get("delete_contents", "true").lower() in ("false", "0")
        subtree = {folder.id}
        while True:
            below = {f.id for f in self.folders.values() if f.parent_id in subtree} - subtree
            if not below:
                break
            subtree |= below
        for folder_id in subtree:
            del self.folders[folder_id]
        for chat in list(self.chats.values()):
            if chat.user_id == user.id and chat.folder_id in subtree:
                if keep:
                    chat.folder_id = None
                else:
                    del self.chats[chat.id]
        return web.json_response(True)

    async def _search_users(self, request: web.Request) -> web.Response:
        """``search_users``: any verified user; ``query`` is ILIKE on name or email."""
        self._verified(request)
        like = _ilike(request.query.get("query") or "")
        page = max(1, int(request.query.get("page", "1")))
        found = [
            u for u in self.users.values() if like.fullmatch(u.email) or like.fullmatch(u.name)
        ]
        if request.query.get("order_by") == "email":
            found.sort(key=lambda u: u.email, reverse=request.query.get("direction") == "desc")
        found = found[(page - 1) * USERS_PAGE : page * USERS_PAGE]
        return web.json_response(
            {
                "users": [
                    {"id": u.id, "name": u.name, "email": u.email, "role": u.role} for u in found
                ],
                "total": len(self.users),
            }
        )


class _Fail(Exception):
    """FastAPI's HTTPException: answered as ``{"detail": ...}`` with its status."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status)
        self.status = status
        self.detail = detail


def _ilike(query: str) -> re.Pattern[str]:
    """SQL ``ILIKE '%query%'``: ``%`` and ``_`` in the query are wildcards."""
    body = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in query)
    return re.compile(".*" + body + ".*", re.IGNORECASE | re.DOTALL)


def _detail(status: int, detail: Any) -> _Fail:
    return _Fail(status, detail)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise _detail(
            422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]
        ) from None
