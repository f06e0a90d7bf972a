"""Talking to OpenWebUI through the proxy's internal listener (httpx).

Two layers, one concern each:

- :class:`Transport` sends one call: it adds the service token and the act-as headers,
  retries transient failures with backoff, and is the **one place** where httpx errors
  and HTTP statuses become :mod:`provisioner.errors`.
- :class:`OpenWebUI` and :class:`UserSession` name the endpoints the provisioner uses.

The user's OpenWebUI token lives only in a :class:`UserSession`, in memory: it is never
logged, never part of an error message, never in a ``repr``, and the cookie OpenWebUI
sets with it is never stored (the client's cookie jar accepts no cookie), so one
client can serve many users at once without one user's cookie riding on another's calls.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from provisioner.errors import (
    AccountCannotSignIn,
    ActAsDenied,
    AdminAccount,
    ApiError,
    EndpointNotAllowed,
    Onboarding,
    PublicListener,
    ServiceTokenRefused,
    Unanswered,
    Unavailable,
)
from provisioner.retry import backoff_delay, is_transient
from provisioner.settings import Settings
from proxy.retry_after import parse_retry_after

log = structlog.get_logger("provisioner.client")

Sleep = Callable[[float], Awaitable[None]]

ARCHIVED_PAGE_SIZE = 60  # fixed in 0.12.4's routers/chats.py; a shorter page is the last
USERS_PAGE_SIZE = 30  # PAGE_ITEM_COUNT of 0.12.4's routers/users.py
# 0.12.4 streams ``GET /chats/all`` in batches of this many chats (``CHAT_EXPORT_BATCH_SIZE``),
# one database query each: an answer shorter than a batch came from one query, one snapshot.
EXPORT_BATCH_SIZE = 100
# The archived list is filtered by the thread's tag, so one page is the rule; this bound
# only stops a misbehaving server from keeping us paging for ever.
MAX_ARCHIVED_PAGES = 100
# Reads of a list longer than one page, until two in a row agree (see list_archived).
MAX_ARCHIVED_READS = 4


# What an answer that is no JSON we can read raises: not JSON, or nested deeper than the
# parser goes (RecursionError is no ValueError).
UNREADABLE = (ValueError, RecursionError)


def _no_cookies() -> http.cookiejar.CookieJar:
    # A jar whose policy allows no domain stores nothing. (A ``CookieJar`` is passed as is;
    # an ``httpx.Cookies`` would be copied into a default jar that keeps everything.)
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` a run uses, pointed at the internal listener."""
    timeout = httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s)
    if settings.url.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=settings.url[5:])
        base_url = "http://internal-listener"
    else:
        transport = httpx.AsyncHTTPTransport()
        base_url = settings.url
    return httpx.AsyncClient(
        base_url=base_url,
        transport=transport,
        timeout=timeout,
        cookies=_no_cookies(),
        follow_redirects=False,
        trust_env=False,  # an HTTP(S)_PROXY in the environment must not see the service token
    )


def _refusal_code(response: httpx.Response) -> str | None:
    """The proxy's machine-readable reason for a refusal (``code``), if it gave one."""
    try:
        body = response.json()
    except UNREADABLE:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _from_the_proxy(response: httpx.Response) -> bool:
    """Whether an error answer is the proxy's own: JSON with ``error`` and ``request_id``."""
    try:
        body = response.json()
    except UNREADABLE:
        return False
    return isinstance(body, dict) and "error" in body and "request_id" in body


def _explanation(response: httpx.Response) -> tuple[str, bool]:
    """What the answer says went wrong, and whether OpenWebUI said it.

    OpenWebUI (FastAPI) explains itself in ``detail``; the proxy's own refusals carry
    ``error`` instead, which is how a listener 403 is told apart from an OpenWebUI 403.
    """
    try:
        body = response.json()
    except UNREADABLE:
        body = None
    if isinstance(body, dict):
        for key, from_openwebui in (("detail", True), ("error", False)):
            if key in body:
                value = body[key]
                return (value if isinstance(value, str) else json.dumps(value)), from_openwebui
    return response.reason_phrase, False


class Transport:
    """Sends calls to the internal listener: headers, retries, and error translation."""

    def __init__(
        self,
        settings: Settings,
        service_token: str,
        http: httpx.AsyncClient,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._service_auth = f"Bearer {service_token}"
        self._http = http
        self._sleep = sleep
        # The server's clock (its Date header, whole seconds) at the latest answer: chats'
        # created_at come from that clock, and the convergence rule reasons about it.
        self.server_time: float | None = None

    def __repr__(self) -> str:
        return f"Transport({self._settings.url!r})"

    def _headers(
        self, email: str | None, name: str | None, user_token: str | None
    ) -> dict[str, str]:
        headers = {"Proxy-Authorization": self._service_auth, "Accept": "application/json"}
        if email is not None:
            headers[self._settings.email_header] = email
        if name is not None:
            # OpenWebUI URL-decodes the name header, so non-ASCII names travel encoded.
            headers[self._settings.name_header] = quote(name, safe="")
        if user_token is not None:
            headers["Authorization"] = f"Bearer {user_token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        email: str | None = None,
        name: str | None = None,
        user_token: str | None = None,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        retry: bool = True,
        repeat_unanswered: bool = True,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One call. Returns a 2xx response, or one whose status is in ``accept``.

        ``retry=False`` is for calls that must not be repeated blindly (the archive
        toggle: a retry after a lost response would undo it); their callers re-read the
        state instead. ``repeat_unanswered=False`` is for calls that may be repeated once
        they have ended, but not beside themselves (a first sign-in): one that may have
        reached OpenWebUI and got no answer (read or write timeout, the proxy's 504) ends
        as :class:`Unanswered` at once; refusals before it ran (429, a failed connect,
        OpenWebUI's own 5xx) are still retried.
        """
        attempts = self._settings.max_attempts if retry else 1
        headers = self._headers(email, name, user_token)
        problem = ""
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = await self._http.request(
                    method, path, headers=headers, params=params, json=json
                )
            except (httpx.ReadTimeout, httpx.WriteTimeout):
                problem = "timed out"
                if not repeat_unanswered:
                    raise Unanswered(
                        f"{method} {path}: no answer within {self._settings.request_timeout_s:g} s"
                        "; not sent again while it may still be running",
                        self._settings.request_timeout_s,
                    ) from None
            except httpx.TimeoutException:
                problem = "timed out"
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            except httpx.RequestError as exc:
                # Any other failure of the call (an answer whose body cannot be decoded:
                # a compressed body cut short, or not compressed as it says).
                problem = f"unreadable answer ({type(exc).__name__})"
            else:
                self._note_server_time(response)
                status = response.status_code
                if 200 <= status < 300 or status in accept:
                    return response
                if status == 407:
                    raise ServiceTokenRefused()
                detail, from_openwebui = _explanation(response)
                if status == 403 and not from_openwebui:
                    refusal = _refusal_code(response)
                    if refusal == "admin_account":
                        raise AdminAccount(email)
                    if refusal == "onboarding":
                        raise Onboarding()
                    if refusal == "access_denied":
                        raise ActAsDenied(email, detail)
                    raise EndpointNotAllowed(method, path, detail)
                if status == 401 and not from_openwebui and _from_the_proxy(response):
                    # The internal listener answers a refused token with 407, never 401:
                    # a 401 in the proxy's own words comes from its public listener.
                    raise PublicListener(method, path, status, detail)
                if not is_transient(status):
                    raise ApiError(method, path, status, detail)
                problem = f"{status} {detail}"
                if status == 504 and not repeat_unanswered:
                    raise Unanswered(
                        f"{method} {path}: {problem}; not sent again while it may still be running",
                        self._settings.request_timeout_s,
                    )
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self._settings.retry_after_max_s:
                    raise Unavailable(
                        f"{method} {path}: {problem}, and Retry-After asks for "
                        f"{retry_after:.0f} s (more than OWUI_PROVISION_RETRY_AFTER_MAX_S)",
                        retry_after,
                    )
            if attempt == attempts:
                break
            delay = backoff_delay(
                attempt,
                base_s=self._settings.backoff_base_s,
                max_s=self._settings.backoff_max_s,
                retry_after_s=retry_after,
            )
            log.warning(
                "retrying",
                method=method,
                path=path,
                problem=problem,
                attempt=attempt,
                delay_s=round(delay, 3),
            )
            await self._sleep(delay)
        tries = "once (not retried: not safe to repeat)" if attempts == 1 else f"{attempts} times"
        raise Unavailable(f"{method} {path}: {problem}; tried {tries}", retry_after)

    def _note_server_time(self, response: httpx.Response) -> None:
        date = response.headers.get("Date")
        try:
            parsed = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            self.server_time = parsed.timestamp()


class UserSession:
    """Calls made as one signed-in user. Holds that user's token, in memory only."""

    def __init__(
        self, transport: Transport, *, email: str, user_id: str, role: str, token: str
    ) -> None:
        self._transport = transport
        self.email = email
        self.user_id = user_id
        self.role = role
        self.__token = token

    def __repr__(self) -> str:
        return f"UserSession(email={self.email!r}, role={self.role!r})"

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._transport.request(
            method, path, email=self.email, user_token=self.__token, **kwargs
        )

    async def list_chats(self) -> list[dict[str, Any]]:
        """Every non-archived chat, pinned and in folders too, in one answer.

        Without ``page`` OpenWebUI returns the whole list at once, which is one consistent
        snapshot; paging it (by ``updated_at``) could skip a chat that moves meanwhile.
        """
        response = await self._call(
            "GET",
            "/api/v1/chats/list",
            params={"include_pinned": "true", "include_folders": "true"},
        )
        return _list_of_dicts(response)

    async def list_archived(self, query: str) -> list[dict[str, Any]]:
        """Archived chats whose title contains ``query``, every page.

        OpenWebUI pages this list 60 at a time by offset, ordered here by ``created_at``
        (never changes, ties broken by id). A chat archived meanwhile only pushes later
        ones a place further (read twice, never missed), but one that leaves the list
        (deleted, un-archived) pulls the next page's first chat onto the page already read,
        where neither read sees it. One page is one query, one snapshot; a longer list is
        therefore read again until two reads in a row agree: a chat removed during a read
        is in that read and not in the next, so they differ. (A chat archived after the
        first read began was not archived when the caller read the active list before it,
        so it is seen there.)
        """
        previous = await self._archived_pages(query)
        if len(previous) < ARCHIVED_PAGE_SIZE:
            return previous
        for _ in range(MAX_ARCHIVED_READS - 1):
            current = await self._archived_pages(query)
            if [c.get("id") for c in current] == [c.get("id") for c in previous]:
                return current
            previous = current
        raise Unavailable(
            f"GET /api/v1/chats/archived: the list for {query!r} changed during each of "
            f"{MAX_ARCHIVED_READS} reads; try again"
        )

    async def _archived_pages(self, query: str) -> list[dict[str, Any]]:
        chats: list[dict[str, Any]] = []
        page = 1
        while True:
            response = await self._call(
                "GET",
                "/api/v1/chats/archived",
                params={"page": page, "query": query, "order_by": "created_at", "direction": "asc"},
            )
            batch = _list_of_dicts(response)
            chats.extend(batch)
            if len(batch) < ARCHIVED_PAGE_SIZE:
                return chats
            if page == MAX_ARCHIVED_PAGES:
                raise Unavailable(
                    f"GET /api/v1/chats/archived: still full after {page} pages of "
                    f"{ARCHIVED_PAGE_SIZE} for {query!r}"
                )
            page += 1

    async def list_all(self) -> list[dict[str, Any]]:
        """Every chat of the user, archived or not, whole (chat JSON included), in one call.

        0.12.4 streams it as JSON Lines (earlier releases answer one JSON list); both are read.
        Only an answer shorter than :data:`EXPORT_BATCH_SIZE` is one consistent snapshot
        (longer ones are several queries, paged by ``updated_at``): callers check the length.
        """
        response = await self._call("GET", "/api/v1/chats/all")
        return _json_lines_or_list(response)

    async def get_chat(self, chat_id: str) -> dict[str, Any] | None:
        """The whole chat, or ``None`` when it is gone (OpenWebUI answers 401 for that)."""
        response = await self._call("GET", f"/api/v1/chats/{chat_id}", accept=frozenset({401, 404}))
        if response.status_code in (401, 404):
            return None
        return _dict(response)

    async def create_chat(
        self, chat: dict[str, Any], folder_id: str | None = None
    ) -> dict[str, Any] | None:
        """The new chat, or ``None`` when ``folder_id`` is gone (OpenWebUI answers 404).

        Retried on transient failures: a lost response can leave a duplicate behind, which
        the convergence step that always follows a create removes.
        """
        response = await self._call(
            "POST",
            "/api/v1/chats/new",
            json={"chat": chat, "folder_id": folder_id},
            accept=frozenset({404} if folder_id is not None else ()),
        )
        return None if response.status_code == 404 else _dict(response)

    async def move_to_folder(self, chat_id: str, folder_id: str) -> dict[str, Any] | None:
        """Put the chat in the folder (which also un-archives it); ``None`` when the chat or
        the folder is gone. Sets, never toggles: repeating it is harmless."""
        response = await self._call(
            "POST",
            f"/api/v1/chats/{chat_id}/folder",
            json={"folder_id": folder_id},
            accept=frozenset({401, 404}),
        )
        return None if response.status_code in (401, 404) else _dict(response)

    async def list_folders(self) -> list[dict[str, Any]]:
        """Every folder of the user (id, name, parent, timestamps; ``meta`` only its icon)."""
        return _list_of_dicts(await self._call("GET", "/api/v1/folders/"))

    async def create_folder(self, name: str, meta: dict[str, Any]) -> dict[str, Any] | None:
        """A new top-level folder, or ``None`` when one of that name appeared meanwhile
        (OpenWebUI refuses a taken name with 400; the next look finds it)."""
        try:
            response = await self._call(
                "POST", "/api/v1/folders/", json={"name": name, "meta": meta, "parent_id": None}
            )
        except ApiError as exc:
            if exc.status == 400 and _FOLDER_TAKEN in exc.detail:
                return None
            raise
        return _dict(response)

    async def delete_folder(self, folder_id: str) -> None:
        """Delete a folder, moving whatever it holds to the top level (never deleting it);
        a folder already gone (404) is what we wanted anyway."""
        await self._call(
            "DELETE",
            f"/api/v1/folders/{folder_id}",
            params={"delete_contents": "false"},
            accept=frozenset({404}),
        )

    async def search_users(self, query: str | None, page: int) -> list[dict[str, Any]]:
        """One page of OpenWebUI's user directory (any ordinary user may read it), by email.

        ``query`` matches emails and names with SQL ``ILIKE '%query%'``; ``None`` lists all.
        """
        params: dict[str, str | int] = {"order_by": "email", "direction": "asc", "page": page}
        if query is not None:
            params["query"] = query
        body = _dict(await self._call("GET", "/api/v1/users/search", params=params))
        users = body.get("users")
        if not isinstance(users, list):
            raise Unavailable("GET /api/v1/users/search: answer holds no 'users' list")
        return [user for user in users if isinstance(user, dict)]

    async def update_chat(self, chat_id: str, chat: dict[str, Any]) -> None:
        """Merge ``chat`` into the stored chat (OpenWebUI merges key by key, message by message)."""
        await self._call("POST", f"/api/v1/chats/{chat_id}", json={"chat": chat})

    async def toggle_archive(self, chat_id: str) -> dict[str, Any] | None:
        """Flip ``archived``; the chat as it is afterwards, or ``None`` when it is gone.

        Never retried here: a retry after a lost answer would flip it back. Callers read
        the answer (or, when it is lost, the chat) and decide.
        """
        response = await self._call(
            "POST", f"/api/v1/chats/{chat_id}/archive", retry=False, accept=frozenset({401})
        )
        return None if response.status_code == 401 else _dict(response)

    async def delete_chat(self, chat_id: str) -> None:
        """Delete; a chat already gone (404) is what we wanted anyway."""
        await self._call("DELETE", f"/api/v1/chats/{chat_id}", accept=frozenset({404}))


class OpenWebUI:
    """The endpoints used before a user is signed in."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._signins: dict[str, asyncio.Task[UserSession]] = {}
        # Emails whose last sign-in went unanswered: when (loop time) one may be sent again.
        self._unanswered: dict[str, float] = {}

    async def config(self) -> dict[str, Any]:
        return _dict(await self.transport.request("GET", "/api/config"))

    async def signin(self, email: str, name: str | None) -> UserSession:
        """Sign in as ``email`` via the trusted header; OpenWebUI creates the account if missing.

        A first sign-in is several writes in OpenWebUI (the user row, then its credentials);
        cut short between them, or run twice at once for one email, it leaves an account
        OpenWebUI refuses for ever. So the call is never cut by its caller's cancellation
        (it runs on as its own task; :meth:`settle` waits for it before the client closes),
        and a caller for an email already signing in joins that call.
        """
        task = self._signins.get(email)
        if task is None:
            wait = self._unanswered.get(email, 0.0) - asyncio.get_running_loop().time()
            if wait > 0:
                raise Unavailable(
                    "POST /api/v1/auths/signin: the last sign-in of this person went "
                    "unanswered and may still be running; not sent beside it",
                    wait,
                )
            task = asyncio.ensure_future(self._signin(email, name))
            self._signins[email] = task
            task.add_done_callback(lambda done: self._signin_done(email, done))
        return await asyncio.shield(task)

    def _signin_done(self, email: str, task: asyncio.Task[UserSession]) -> None:
        if self._signins.get(email) is task:
            del self._signins[email]
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left would never read it

    async def settle(self) -> None:
        """Wait for the sign-ins cancelled callers left running."""
        while self._signins:
            await asyncio.gather(*self._signins.values(), return_exceptions=True)

    async def _signin(self, email: str, name: str | None) -> UserSession:
        try:
            response = await self.transport.request(
                "POST",
                "/api/v1/auths/signin",
                email=email,
                name=name,
                json={"email": "", "password": ""},  # ignored in header mode, but must parse
                repeat_unanswered=False,
            )
        except Unanswered as exc:
            # Not again before it has had as long again to end (entries expire, so the
            # map holds only the last request_timeout_s of unanswered sign-ins).
            now = asyncio.get_running_loop().time()
            for old in [e for e, until in self._unanswered.items() if until <= now]:
                del self._unanswered[old]
            self._unanswered[email] = now + (exc.retry_after or 0.0)
            raise
        except ApiError as exc:
            # In header mode nothing checks a password: this answer means the account
            # exists without usable credentials (see AccountCannotSignIn).
            if exc.status == 400 and exc.detail.startswith(_CREDENTIALS_REFUSED):
                raise AccountCannotSignIn(email) from exc
            raise
        body = _dict(response)
        token, user_id, role = body.get("token"), body.get("id"), body.get("role")
        if body.get("next_step") == "pending":  # what 0.12.4 answers a pending user under MFA
            role, token, user_id = "pending", "", ""
        if not isinstance(token, str) or not isinstance(user_id, str) or not isinstance(role, str):
            raise ApiError(
                "POST",
                "/api/v1/auths/signin",
                response.status_code,
                "the answer holds no session token (is multi-factor sign-in required?)",
            )
        return UserSession(self.transport, email=email, user_id=user_id, role=role, token=token)


# What OpenWebUI 0.12.4 answers (400, inside "[ERROR: ...]") to a folder name already taken.
_FOLDER_TAKEN = "Folder already exists"
# The start of OpenWebUI's ``ERROR_MESSAGES.INVALID_CRED``.
_CREDENTIALS_REFUSED = "The email or password provided is incorrect"


def _dict(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except UNREADABLE:
        body = None
    if not isinstance(body, dict):
        raise Unavailable(
            f"{response.request.method} {response.request.url.path}: answer is not a JSON object"
        )
    return body


def _json_lines_or_list(response: httpx.Response) -> list[dict[str, Any]]:
    """A JSON list, or JSON Lines (one object a line, as 0.12.4 streams ``/chats/all``).

    Lines end at LF only: 0.12.4 writes each chat with pydantic's ``model_dump_json``, which
    leaves U+2028 and U+0085 in a title unescaped, and ``splitlines()`` would cut there.
    """
    text = response.text
    try:
        body = json.loads(text) if text.lstrip().startswith("[") else None
        if body is None:
            body = [json.loads(line) for line in text.split("\n") if line.strip()]
    except UNREADABLE:
        body = None
    if not isinstance(body, list):
        raise Unavailable(
            f"{response.request.method} {response.request.url.path}: answer is neither a JSON "
            "list nor JSON Lines"
        )
    return [item for item in body if isinstance(item, dict)]


def _list_of_dicts(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except UNREADABLE:
        body = None
    if not isinstance(body, list):
        raise Unavailable(
            f"{response.request.method} {response.request.url.path}: answer is not a JSON list"
        )
    return [item for item in body if isinstance(item, dict)]
