"""The internal act-as listener: a trusted service calls OpenWebUI as a user it names.

Each request passes four gates, in this order, and is relayed only if it passes all:

1. the service token (``Proxy-Authorization: Bearer``), first, so an unauthenticated caller
   learns nothing else (not even whether an endpoint is allowlisted): 407;
2. the allowlist (``proxy/allowlist.py``) on the raw request target: 403;
3. the act-as identity from the email header (and optional name header), validated like
   any identity: 400. A request naming nobody (the provisioner's ``GET /api/config``) is
   relayed with no identity at all: OpenWebUI then has only the ``Authorization`` token the
   caller holds, which it could only have got by naming that user here;
4. the outbound header set, built by the public listener's own policy
   (``proxy/headers.py``): every copy of every identity header and Proxy-Authorization the
   caller sent is dropped, then the email and name are injected. Groups and role are never
   injected: a service token lets its holder *be* a user, never change what a user is.

Sign-in is where a caller gets a user's OpenWebUI token, so it gets two more checks
(:class:`SigninGuard`): it is refused while OpenWebUI has no user yet (its first account
becomes admin: the service must not choose who that is), and an admin's token is never
handed out (403; the sign-in happened, the token is dropped). A service token therefore
acts as ordinary users only, whatever the allowlist says. Sign-ins of one email also reach
OpenWebUI one at a time, each from its request going out until OpenWebUI's answer is in,
whatever the caller does meanwhile (see :meth:`SigninGuard.sign_in`).

A chat update (``POST /api/v1/chats/{id}``) is relayed only when it is exactly the
provisioner's update of one of its own threads (``proxy/chat_update.py``): the listener
reads the chat first, as the same user, and refuses anything else (403
``chat_update_refused``).

Headers that ask a server or framework to act on another method or path than the one the
allowlist judged (``X-HTTP-Method-Override``, ``X-Original-URL``, ``X-Rewrite-URL``, ...)
are dropped in any spelling: what was checked is what OpenWebUI executes.

Exactly one ``internal_audit`` line is written per request, whatever the outcome. A
middleware runs every request through the gates itself, whatever the router would have
said, so targets no route matches (``OPTIONS *``, ``CONNECT host:port``) are audited and
refused like any other; requests aiohttp's parser rejects before any handler runs are
audited by the listener's access logger (:class:`AuditAccessLogger`, installed by
``proxy/server.py``). Around it, the observation middleware the public listener uses too
(``proxy/observe.py``) gives the request its id, turns errors into JSON and counts the
request, then has :meth:`InternalHandler.record` write the audit line, so it records the
status the caller actually got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from multidict import CIMultiDict
from yarl import URL

from proxy import browser, chat_update, h1, logs
from proxy.access import AccessRules
from proxy.allowlist import SIGNIN, Allowed, Allowlist
from proxy.catchall import EveryTarget
from proxy.errors import (
    AccessDenied,
    ActAsRefused,
    BadRequest,
    BodyTooLarge,
    ChatUpdateRefused,
    ConfigProblems,
    Forbidden,
    ProxyAuthRequired,
    ProxyError,
    SignedInSomeoneElse,
    UpstreamError,
)
from proxy.headers import REQUEST_ID_HEADER, HeaderPolicy, build_upstream_headers, normalise
from proxy.identity import OWS, Identity, InvalidIdentity, make_identity
from proxy.metrics import Metrics
from proxy.observe import Seen, observed
from proxy.relay import (
    no_early_continue,
    read_body,
    read_whole,
    send,
    stream_back,
    whole_response,
)
from proxy.respond import REQUEST_ID_KEY, new_request_id, request_id
from proxy.settings import Settings
from proxy.target import read_target
from proxy.tokens import TokenFileError, TokenStore
from proxy.upstream import Upstream

TOKENS_KEY = web.AppKey("internal_tokens", TokenStore)
# Marks an app whose listener must install AuditAccessLogger (read by proxy/server.py).
AUDIT_KEY = web.AppKey("internal_audit_parser_refusals", bool)
# Set once the middleware has written a request's audit line; the access logger skips those.
_AUDITED_KEY = web.RequestKey("owui_internal_audited", bool)
# Method- and path-override headers (normalised names): dropped, never relayed.
OVERRIDE_HEADERS = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-path",
    }
)
# A sign-in body is OpenWebUI's SigninForm, which trusted-header sign-in ignores: small.
SIGNIN_MAX_BODY_BYTES = 16 * 1024
# A chat update is read whole to be checked: one message of a course's first_message (at
# most 100,000 characters, JSON-escaped), twice.
CHAT_UPDATE_MAX_BODY_BYTES = 2 * 1024 * 1024
CONFIG_PATH = "/api/config"
# A refused target is logged as sent (minus the query); bounded so a caller cannot flood the log.
_MAX_LOGGED_PATH = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_OUTCOMES: tuple[tuple[type[ProxyError], str], ...] = (
    (ProxyAuthRequired, "proxy_auth_required"),
    (AccessDenied, "access_denied"),
    (Forbidden, "forbidden"),
    (BadRequest, "bad_request"),
    (BodyTooLarge, "body_too_large"),
    (UpstreamError, "upstream_error"),
)


class InternalConfigError(ConfigProblems):
    """The internal listener cannot start; ``problems`` lists every reason, one a line."""


@dataclass
class _Audit:
    """The fields of one ``internal_audit`` line, filled in as the request progresses."""

    method: str
    path: str
    request_id: str
    peer: str | None
    outcome: str = "error"
    status: int | None = 500
    service_fp: str | None = None
    act_as: str | None = None
    rule: str | None = None
    reason: str | None = None
    dropped: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "status": self.status,
            # Not "token_fp": the log redactor blanks any field named like a secret.
            "service_fp": self.service_fp,
            "act_as": self.act_as,
            "method": self.method,
            "path": self.path,
            "rule": self.rule,
            "reason": self.reason,
            "dropped_headers": self.dropped or None,
            "peer": self.peer,
            "request_id": self.request_id,
        }


# Upstream failures (the cause of the relay's UpstreamError) where no connection was made,
# so OpenWebUI cannot be at work on the request.
_NOTHING_SENT = (h1.ConnectFailed, h1.ConnectTimeout)

# The request's audit, filled in by the gates, written by InternalHandler.record.
_AUDIT_KEY = web.RequestKey("owui_internal_audit", _Audit)


class SigninGuard:
    """Sign-in through the internal listener yields ordinary users' tokens only."""

    def __init__(self, upstream: Upstream, unanswered_hold_s: float | None = None) -> None:
        self.upstream = upstream
        # How long an email stays held after its sign-in got no answer (see sign_in).
        self.unanswered_hold_s = (
            upstream.response_timeout_s if unanswered_hold_s is None else unanswered_hold_s
        )
        # Once OpenWebUI has a user it keeps having one; until then, ask every time.
        self.onboarded = False
        self._signing_in: dict[str, tuple[asyncio.Lock, int]] = {}
        # Sign-ins still running for callers that left, or holding an email after a lost
        # answer (the loop keeps only weak references).
        self._exchanges: set[asyncio.Task[None]] = set()

    async def sign_in(
        self, email: str, exchange: Callable[[], Awaitable[h1.Response]]
    ) -> tuple[h1.Response, bytes]:
        """Run ``exchange`` (the upstream sign-in, its body already read from the caller)
        under :meth:`one_at_a_time`; return OpenWebUI's answer, read whole.

        The lock covers the upstream exchange: the caller's body was read before it was
        taken (a caller trickling its body holds nothing), and it is released only once
        OpenWebUI has answered. The exchange runs as a task of its own, shielded, so a caller
        that times out or disconnects (which cancels its handler) does not cut it short:
        OpenWebUI would still be creating the account while the next sign-in of that email
        went ahead. When the request reached OpenWebUI but no answer came back (the proxy
        stopped waiting, the connection broke), OpenWebUI may still be creating the account,
        since its server does not stop a handler whose client left: the caller gets its
        error at once, and the email stays held for :attr:`unanswered_hold_s` (the upstream's
        response timeout) more before the next sign-in of it goes ahead. No connection at
        all holds nothing.
        """
        answer: asyncio.Future[tuple[h1.Response, bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        task = asyncio.create_task(self._exchange(email, exchange, answer))
        self._exchanges.add(task)
        task.add_done_callback(self._exchanges.discard)
        answer.add_done_callback(_retrieved)
        return await asyncio.shield(answer)

    async def _exchange(
        self,
        email: str,
        exchange: Callable[[], Awaitable[h1.Response]],
        answer: asyncio.Future[tuple[h1.Response, bytes]],
    ) -> None:
        try:
            async with self.one_at_a_time(email):
                try:
                    response = await exchange()
                except Exception as exc:  # no answer: OpenWebUI may still be at work
                    answer.set_exception(exc)
                    if not isinstance(exc.__cause__, _NOTHING_SENT):
                        await asyncio.sleep(self.unanswered_hold_s)
                    return
                try:
                    answer.set_result((response, await read_whole(response)))
                except Exception as exc:
                    answer.set_exception(exc)  # answered, body cut: the account exists
        finally:
            if not answer.done():  # cancelled (the process is stopping)
                answer.cancel()

    async def close(self) -> None:
        """Cancel the sign-ins of callers that left (the process is stopping)."""
        for task in list(self._exchanges):
            task.cancel()
        await asyncio.gather(*self._exchanges, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, email: str) -> AsyncIterator[None]:
        """Sign-ins of one email, one after the other.

        OpenWebUI 0.12.4 creates the account on a trusted sign-in without a unique email:
        several first sign-ins of a new email at the same moment (concurrent provisioners)
        can leave duplicate accounts whose sign-in answers 400 from then on. Serialising them
        here makes the second one find the account the first created. (Sign-ins through the
        public listener, in another worker, are not covered: see docs/internal-listener.md.)
        """
        lock, users = self._signing_in.get(email, (asyncio.Lock(), 0))
        self._signing_in[email] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._signing_in[email]
            if users == 1:
                del self._signing_in[email]
            else:
                self._signing_in[email] = (lock, users - 1)

    async def before(self, request: web.Request, request_id: str) -> None:
        """Refuse while OpenWebUI has no user: its first account becomes admin."""
        if self.onboarded:
            return
        probe = request.clone(method="GET", rel_url=URL(CONFIG_PATH))
        headers: CIMultiDict[str] = CIMultiDict(
            {"Accept": "application/json", REQUEST_ID_HEADER: request_id}
        )
        response = await send(probe, headers, self.upstream, with_body=False)
        body = await read_whole(response)
        config = _json_object(body) if response.status == 200 else None
        # A missing "onboarding" is a release without the field; no JSON object is no config.
        onboarding = config.get("onboarding") if config is not None else None
        if config is None or onboarding not in (True, False, None):
            raise UpstreamError(f"GET {CONFIG_PATH} answered {response.status}, not its config")
        if onboarding is True:
            raise ActAsRefused(
                "OpenWebUI has no users yet and its first account becomes admin: "
                "sign in as the operator through the public URL first",
                code="onboarding",
            )
        self.onboarded = True

    @staticmethod
    def after(response: h1.Response, body: bytes, email: str) -> web.Response:
        """The sign-in answer, unless it carries an admin's token or another account than
        ``email``'s (OpenWebUI reading another header than the proxy injects)."""
        if response.status == 200:
            if not browser.signs_in(body, email):
                raise SignedInSomeoneElse("OpenWebUI's sign-in answer is another account")
            role = _json_field(body, "role")
            if not isinstance(role, str):
                raise UpstreamError("sign-in answer without a role")
            if role == "admin":
                raise ActAsRefused(
                    "the internal listener does not act as admin accounts", code="admin_account"
                )
        return whole_response(response, body)


def _retrieved(answer: asyncio.Future[Any]) -> None:
    """A caller that left never reads its sign-in's outcome: retrieved here, not logged."""
    if not answer.cancelled():
        answer.exception()


def _json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, else None (not JSON, not an object, nested too deeply)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _json_field(body: bytes, name: str) -> object:
    """``body[name]`` if ``body`` is a JSON object, else None."""
    data = _json_object(body)
    return data.get(name) if data is not None else None


class InternalHandler:
    """Everything the internal listener needs, resolved once at start."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        tokens: TokenStore,
        allowlist: Allowlist,
        metrics: Metrics,
    ) -> None:
        self.metrics = metrics
        self.policy = HeaderPolicy.from_settings(settings)
        self.upstream = upstream
        self.tokens = tokens
        self.allowlist = allowlist
        self.email = normalise(settings.email_header)
        self.name = normalise(settings.name_header)
        self.never_injected = {normalise(settings.groups_header), normalise(settings.role_header)}
        self.signin = SigninGuard(upstream)
        self.access = AccessRules.internal(settings)
        self.log = logs.get()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request, routed or not (see :func:`_every_request`), inside the shared
        observation middleware (``proxy/observe.py``), which then calls :meth:`record`."""
        audit = request[_AUDIT_KEY] = _audit_of(request, request_id(request))
        return await self._handle(request, audit)

    def record(self, request: web.Request, seen: Seen) -> None:
        """The request's one ``internal_audit`` line, and its count by outcome and rule."""
        request[_AUDITED_KEY] = True
        audit = request.get(_AUDIT_KEY) or _audit_of(request, seen.request_id)
        if seen.error is not None:
            audit.outcome, audit.status = _outcome(seen.error), seen.error.status
            audit.reason = seen.error.reason
        elif seen.broke_off:
            # The upstream body broke off after its status was relayed (relay.stream_back):
            # the caller saw a cut connection, not a status we could name.
            audit.outcome, audit.status = "broken", None
        elif seen.client_left:
            audit.outcome, audit.status = "cancelled", seen.status
        elif seen.response is not None:
            audit.outcome, audit.status = "relayed", seen.status
        self.log.info("internal_audit", duration_ms=seen.duration_ms, **audit.fields())
        self.metrics.internal_calls.labels(audit.outcome, audit.rule or "none").inc()

    async def _handle(self, request: web.Request, audit: _Audit) -> web.StreamResponse:
        audit.service_fp = self._authenticate(request)
        decision = self.allowlist.check(request.method, read_target(request.raw_path))
        if not isinstance(decision, Allowed):
            raise Forbidden(f"refused by the internal allowlist: {decision.reason}")
        audit.rule, audit.path = str(decision.rule), decision.path

        identity = self._act_as(request)
        audit.act_as = identity.email if identity is not None else None
        audit.dropped = [
            name
            for name in request.headers
            if (normalised := normalise(name)) in self.never_injected
            or normalised in OVERRIDE_HEADERS
        ]
        headers = build_upstream_headers(
            request.headers.items(),
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            identity=identity,
            policy=self.policy,
            request_id=audit.request_id,
        )
        for name in [name for name in headers if normalise(name) in OVERRIDE_HEADERS]:
            headers.popall(name, None)
        # What was checked is what is sent: the canonical spelling of the matched path.
        # Plain HTTP only (send/stream_back, not relay): no endpoint here is a WebSocket.
        checked = request.clone(rel_url=URL(decision.target, encoded=True))
        if (request.method, decision.path) == SIGNIN:
            # Read whole before anything else: the per-email lock must never wait on a caller.
            body = await read_body(request, SIGNIN_MAX_BODY_BYTES, self.upstream.body_timeout_s)
            await self.signin.before(checked, audit.request_id)
            # The guard reads the answer, and the relay never decompresses: ask for it plain
            # (OpenWebUI compresses anything over 500 bytes the client says it accepts).
            headers["Accept-Encoding"] = "identity"
            response, answer = await self.signin.sign_in(
                identity.email if identity else "",
                lambda: send(checked, headers, self.upstream, buffered=body),
            )
            return self.signin.after(response, answer, identity.email if identity else "")
        if chat_update.is_update(request.method, decision.path):
            return await self._chat_update(checked, headers)
        response = await send(checked, headers, self.upstream)
        return await stream_back(checked, response)

    async def _chat_update(
        self, request: web.Request, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        """Relay ``request`` (a chat update) only if it is the provisioner's update of its own
        thread, read first as the same user; an unsuccessful read is the caller's answer."""
        body = await read_body(
            request,
            min(CHAT_UPDATE_MAX_BODY_BYTES, self.upstream.max_body_bytes),
            self.upstream.body_timeout_s,
        )
        read_headers = headers.copy()
        for name in ("Content-Length", "Content-Type", "Transfer-Encoding"):
            read_headers.popall(name, None)
        read_headers["Accept"] = "application/json"
        read_headers["Accept-Encoding"] = "identity"  # read here: never compressed
        read = await send(request, read_headers, self.upstream, method="GET", with_body=False)
        stored = await read_whole(read)
        if read.status != 200:
            return whole_response(read, stored)
        try:
            chat = json.loads(stored)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise UpstreamError("GET of the chat answered 200 without JSON it can read") from exc
        reason = chat_update.refusal(body, chat)
        if reason is not None:
            raise ChatUpdateRefused(f"chat update refused: {reason}")
        response = await send(request, headers, self.upstream, buffered=body)
        return await stream_back(request, response)

    def _authenticate(self, request: web.Request) -> str:
        """The accepted token's fingerprint, or :class:`ProxyAuthRequired`."""
        values = request.headers.getall("Proxy-Authorization", [])
        if not values:
            raise ProxyAuthRequired("a service token is required (Proxy-Authorization: Bearer)")
        if len(values) > 1:
            raise ProxyAuthRequired("exactly one Proxy-Authorization header is allowed")
        # ASCII only: Unicode spaces around a token are part of what was presented.
        scheme, _, token = values[0].strip(OWS).partition(" ")
        token = token.strip(OWS)
        if not scheme.isascii() or scheme.lower() != "bearer" or not token:
            raise ProxyAuthRequired("expected Proxy-Authorization: Bearer <token>")
        fingerprint = self.tokens.check(token)
        if fingerprint is None:
            raise ProxyAuthRequired("service token not accepted")
        return fingerprint

    def _act_as(self, request: web.Request) -> Identity | None:
        """The user named by the caller, validated (None: nobody); 400 naming the header."""
        emails = self._values(request, self.email)
        names = self._values(request, self.name)
        email_header, name_header = self.policy.email_header, self.policy.name_header
        if len(emails) > 1:
            raise BadRequest(f"at most one {email_header} header (the act-as user) is allowed")
        if len(names) > 1:
            raise BadRequest(f"at most one {name_header} header is allowed")
        if not emails:
            if names:
                raise BadRequest(f"{name_header} without {email_header}: name whom?")
            return None
        try:
            email = make_identity(emails[0]).email
        except InvalidIdentity as exc:
            raise BadRequest(f"{email_header}: {exc.reason}") from exc
        try:
            # Sent percent-encoded, as OpenWebUI reads it; validated decoded, so an encoded
            # CR/LF/NUL is refused too. Decoded strictly: bytes that are not UTF-8 are refused,
            # not replaced. The policy re-encodes it on the way out.
            decoded = unquote(names[0], errors="strict") if names else None
            name = make_identity(email, decoded).name
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{name_header}: percent-encoded bytes are not UTF-8") from exc
        except InvalidIdentity as exc:
            raise BadRequest(f"{name_header}: {exc.reason}") from exc
        identity = Identity(email=email, name=name)  # no groups: see the module docstring
        refusal = self.access.check(identity)
        if refusal is not None:
            raise AccessDenied(refusal.reason)
        return identity

    @staticmethod
    def _values(request: web.Request, normalised: str) -> list[str]:
        """Every value of a header in any spelling (case, ``_`` for ``-``): no ambiguity."""
        return [value for name, value in request.headers.items() if normalise(name) == normalised]


def _audit_of(request: web.Request, rid: str) -> _Audit:
    return _Audit(
        method=request.method,
        path=request.raw_path.partition("?")[0][:_MAX_LOGGED_PATH],
        request_id=rid,
        peer=request.remote or None,
    )


def _outcome(exc: ProxyError) -> str:
    for kind, outcome in _OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "error"


def reload_tokens(app: web.Application) -> bool:
    """Re-read the token file (what SIGHUP does); False, and the old tokens kept, if unusable."""
    return app[TOKENS_KEY].reload()


def create_internal_app(
    settings: Settings, upstream: Upstream, metrics: Metrics | None = None
) -> web.Application:
    """The internal listener's app. Raises :class:`InternalConfigError` listing every problem.

    While it runs, SIGHUP re-reads the token file (the handler is registered on start-up
    and removed on cleanup; the process must not install another SIGHUP handler).
    """
    problems: list[str] = []
    tokens: TokenStore | None = None
    if settings.internal_tokens_file is None:
        problems.append("OWUI_PROXY_INTERNAL_TOKENS_FILE: required for the internal listener")
    else:
        try:
            tokens = TokenStore(settings.internal_tokens_file)
        except TokenFileError as exc:
            problems.extend(f"OWUI_PROXY_INTERNAL_TOKENS_FILE: {p}" for p in str(exc).splitlines())
    if problems or tokens is None:
        raise InternalConfigError(problems)
    allowlist = settings.internal_allowlist  # parsed and checked when the settings loaded

    # Without ``metrics`` (tests) it counts into its own, which nobody scrapes.
    counted = metrics if metrics is not None else Metrics()
    handler = InternalHandler(settings, upstream, tokens, allowlist, counted)
    app = web.Application(
        middlewares=[observed("internal", counted, handler.record), _every_request(handler)],
        # Bodies as the caller sent them, never inflated: what the guards read (a sign-in,
        # a chat update) is what OpenWebUI reads (proxy/app.py).
        handler_args={"max_field_size": 65536, "auto_decompress": False},
    )
    app[TOKENS_KEY] = tokens
    app[AUDIT_KEY] = True
    app.cleanup_ctx.append(_reload_on_sighup)
    app.on_cleanup.append(lambda _app: handler.signin.close())
    app.on_response_prepare.append(_add_request_id)
    # Never called (the middleware answers everything); present so every target resolves,
    # with no early 100 Continue: the service token is checked before the caller may send a
    # body. Every target, not only those with a path (``proxy/catchall.py``).
    app.router.register_resource(EveryTarget(_unreachable, no_early_continue))
    logs.get().info(
        "internal_listener_ready",
        rules=[str(rule) for rule in allowlist.rules],
        access=handler.access.describe(),
        service_fps=list(tokens.fingerprints),
    )
    return app


def _every_request(internal: InternalHandler) -> Middleware:
    """Runs every request through ``internal``; the router's ``handler`` is never called."""

    @web.middleware
    async def gates(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await internal.handle(request)

    return gates


async def _unreachable(_request: web.Request) -> web.StreamResponse:  # pragma: no cover
    raise web.HTTPInternalServerError()


class AuditAccessLogger(AbstractAccessLogger):
    """The internal listener's access logger: audits what never reached the middleware.

    aiohttp answers a request its parser refuses (a malformed head, a bad header) with 400
    before any handler or middleware runs; its access logger is still called. Requests the
    middleware audited are skipped, so each request has exactly one audit line.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.get(_AUDITED_KEY):
            return
        audit = _Audit(
            method=request.method,  # "UNKNOWN" when the request line itself was refused
            path=request.raw_path.partition("?")[0][:_MAX_LOGGED_PATH],
            request_id=new_request_id(),
            peer=request.remote or None,
            outcome="bad_request",
            status=response.status,
            reason="refused by the HTTP parser",
        )
        logs.get().info("internal_audit", duration_ms=round(time * 1000, 1), **audit.fields())

    @property
    def enabled(self) -> bool:
        return True


async def _reload_on_sighup(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, app[TOKENS_KEY].reload)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
