"""The public listener's handler: named stages over one per-request scope.

No identity, no upstream request: every path below either has a verified identity, or an
API key whose owner OpenWebUI named and the access rules admit (only when
``allow_api_keys``), or answers without touching the upstream.

The stages run in the order of :attr:`PublicHandler.stages`, and that order is the
security argument (oauth2-proxy's named chains are the model): what answers everyone alike
runs before anything is asked of the auth service; the person is known before any rule is
applied to them; every credential is bound to that person before the outbound header set
is built; only then is anything relayed. Each stage reads the request through the
:class:`~proxy.scope.Scope` only, so no stage can read the target (or the person) its own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any, NoReturn

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import browser, credentials, h1, logs, owners, socketio
from proxy.access import AccessRules, Refusal
from proxy.auth.base import Authenticator, Denied
from proxy.eio_sessions import SessionSeals, is_handshake
from proxy.errors import AccessDenied, BadRequest, Forbidden, SignedInSomeoneElse
from proxy.headers import Forwarded, HeaderPolicy, forwarded_view, request_headers_upstream
from proxy.identity import Identity
from proxy.metrics import Metrics
from proxy.pseudonym import Pseudonyms, person
from proxy.relay import read_body, read_whole, send, stream_back, whole_response
from proxy.release_watch import ReleaseWatch
from proxy.respond import error_response, request_id
from proxy.scope import NOTES_KEY, Notes, Scope
from proxy.settings import Settings
from proxy.signin_hook import SigninHook
from proxy.socketio import TokenGuard
from proxy.target import read_target
from proxy.upstream import Upstream
from proxy.websocket import OpenLinks, is_websocket, relay_websocket

# A 401 body worth reading to recognise "User mismatch"; OpenWebUI's is ~50 bytes.
_MISMATCH_401_MAX_BYTES = 4096

# A stage answers the request (a response; an error it raises is answered the same way)
# or returns None to let the next stage run. A stage that may have to wait (an auth-service
# call, the relay) returns a coroutine giving the same, awaited before the next stage runs;
# one that never waits on its common path is a plain function (no coroutine per request).
Answer = web.StreamResponse | None
Stage = Callable[[Scope], Answer | Coroutine[Any, Any, Answer]]


def _own_origin(forwarded: Forwarded) -> str:
    """The origin the client says it reached (no public URL configured): the scheme and host
    of the forwarded view, so a trusted front proxy's ``X-Forwarded-Proto``/``-Host`` count
    (behind one that terminates TLS the browser's origin is ``https``, the proxy's own
    scheme ``http``); 400 for a host that is no ``host[:port]`` (a port that is not a
    number, an unclosed IPv6 bracket), which would otherwise end the request in a 500."""
    try:
        return browser.origin_of(f"{forwarded.proto}://{forwarded.host}")
    except ValueError as exc:
        raise BadRequest("the Host header is not a host[:port]") from exc


class PublicHandler:
    """Everything the public listener needs, resolved once at start."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        upstream: Upstream,
        metrics: Metrics,
        release: ReleaseWatch,
        signin_hook: SigninHook | None = None,
    ) -> None:
        self.policy = HeaderPolicy.from_settings(settings)
        self.access = AccessRules.public(settings)
        # Rules equal to the empty ones pass everyone, so admit need not ask them. Compared
        # whole (frozen, every field): a kind of rule added later counts without an edit here.
        self.any_rules = self.access != AccessRules()
        self.signin_hook = signin_hook
        self.authenticator = authenticator
        # A source that can answer from a cache without a coroutine (forward-auth's decided)
        # is asked that way: a coroutine made and run costs more than the cache hit itself.
        self.decided: Callable[..., Any] = getattr(
            authenticator, "decided", authenticator.authenticate
        )
        self.upstream = upstream
        self.metrics = metrics
        self.release = release
        self.public_url = settings.public_url
        self.public_origin = browser.origin_of(settings.public_url) if settings.public_url else None
        self.login_url = settings.login_url
        self.logout_url = settings.logout_url
        self.allow_api_keys = settings.allow_api_keys
        self.log = logs.get()
        self.pseudonyms = Pseudonyms.from_file(settings.log_pseudonym_key_file)
        self.websockets = OpenLinks()
        self.websocket_lifetime_s = settings.websocket_max_lifetime_s
        self.api_key_header = settings.openwebui_api_key_header
        self.owners = owners.Owners(upstream, self.policy)
        self.seals = SessionSeals.from_file(settings.session_secret_file)
        self.token_guard = TokenGuard(self.owners)
        # The public listener, in order (see the module docstring for why this order).
        self.stages: tuple[Stage, ...] = (
            # 1. Never relay to an OpenWebUI release the proxy would fail open against (503).
            self.release_gate,
            # 2. Answers that are the same for everyone, before any auth-service call: a
            #    target servers may read differently (400), account creation (403), a
            #    cross-origin WebSocket or long-poll and a cross-site sign-out (403).
            self.edge_refusals,
            # 3. Who is it: the identity source, or an API key (allow_api_keys).
            self.identify,
            # 4. May they use OpenWebUI at all (access rules)? Is every credential the request
            #    carries theirs, and an Engine.IO session it names one they opened?
            self.admit,
            # 5. The header set OpenWebUI gets: built from scratch, the identity injected last.
            self.outbound,
            # 6. Sign-out (answered here), WebSocket, or the HTTP relay.
            self.dispatch,
        )
        self.log.info("public_listener_access", rules=self.access.describe())
        if self.allow_api_keys and self.access.groups:
            self.log.warning(
                "api_keys_with_group_rules",
                detail="OWUI_PROXY_ALLOWED_GROUPS is set: requests with an API key and no SSO "
                "session are refused, as the identity provider's groups are unknown for them",
            )

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        scope = self.scope(request)
        for stage in self.stages:
            answer = stage(scope)
            if answer is None:
                continue
            if type(answer) is CoroutineType:  # a stage that may wait: its answer awaited
                answer = await answer
                if answer is None:
                    continue
            return answer  # type: ignore[return-value]  # not a coroutine: a response
        raise RuntimeError("no stage answered")  # dispatch always does

    def scope(self, request: web.Request) -> Scope:
        """The facts every stage decides on, each read from ``request`` once; its notes
        kept on ``request`` for its answer and its access line (``proxy/scope.py``)."""
        raw_path = request.raw_path
        target = read_target(raw_path)
        notes = request[NOTES_KEY] = Notes(request_id(request), target)
        policy = self.policy
        if policy.public is None:
            scheme, host = request.scheme, request.host
        else:  # the view is the public URL's scheme and host: the request's go unread
            scheme = host = ""
        # Positional, in Scope's field order (request, target, websocket, forwarded,
        # relayed, notes, socketio): keywords would cost a dict per request.
        return Scope(
            request,
            target,
            is_websocket(request),
            forwarded_view(
                request.headers, peer=request.remote, scheme=scheme, host=host, policy=policy
            ),
            raw_path,
            notes,
            # The server's reading, dot segments unresolved: python-engineio serves
            # /ws/socket.io/../../x as its own, whose fold (route) is /x.
            socketio.is_socketio_path(target.path),
        )

    # --- 1. release gate ------------------------------------------------------------------

    def release_gate(self, scope: Scope) -> Coroutine[Any, Any, None] | None:
        # Known safe (almost always): no coroutine. Otherwise permit() looks again or raises.
        return None if self.release.permitted() else self.release.permit()

    # --- 2. edge refusals -----------------------------------------------------------------

    def edge_refusals(self, scope: Scope) -> None:
        target, request = scope.target, scope.request
        problem = target.problem  # None for almost every request: one test, not three
        if problem is not None and target.raw[:1] != "/":
            raise BadRequest(problem)  # absolute-form, "*": before anything else
        creates = browser.account_creation(target)
        if creates is not None:
            # Users exist only through the trusted sign-in. On the fold of the target: any
            # spelling that could reach one of them is refused, whatever else is wrong with it.
            self.metrics.count_decision("account_creation_refused")
            raise Forbidden(f"{creates} is not available behind owui-gate")
        if problem is not None:
            raise BadRequest(f"refused: {problem}")
        if self.public_origin is not None:
            if scope.websocket:
                if not browser.origin_allowed(request.headers.get("Origin"), self.public_origin):
                    self.metrics.count_decision("cross_origin_websocket")
                    raise Forbidden("cross-origin WebSocket refused")
            elif scope.socketio and not socketio.polling_origin_allowed(
                request.method,
                request.headers.getall("Origin", []),
                target.query,
                self.public_origin,
            ):
                self.metrics.count_decision("cross_origin_socketio_polling")
                raise Forbidden("cross-origin Socket.IO long-polling refused")
        if target.route == browser.SIGNOUT_PATH and browser.cross_site(
            request.headers.get("Sec-Fetch-Site"),
            request.headers.get("Origin"),
            self.public_origin or _own_origin(scope.forwarded),
        ):
            self.metrics.count_decision("cross_site_signout")
            raise Forbidden("cross-site sign-out refused")

    # --- 3. identify ----------------------------------------------------------------------

    async def identify(self, scope: Scope) -> web.StreamResponse | None:
        request = scope.request
        if (
            self.allow_api_keys
            and not scope.websocket
            and browser.api_key_allowed(
                request.headers.getall("Authorization", []), scope.target, scope.socketio
            )
        ):
            self.metrics.count_decision("api_key")
            return None
        result = self.decided(request, scope.forwarded)
        if type(result) is CoroutineType:  # not decided from a cache: the source is asked
            result = await result
        if isinstance(result, Denied):
            self.metrics.count_decision("denied")
            return self._deny(scope, result)
        if not isinstance(result, Identity):  # fail closed: any other answer lets nothing through
            raise TypeError(f"identity source answered {type(result).__name__}")
        scope.identity = scope.notes.identity = result
        return None

    def _deny(self, scope: Scope, denied: Denied) -> web.StreamResponse:
        request = scope.request
        self.log.info("auth_denied", reason=denied.reason, status=denied.status)
        if (
            self.login_url is not None
            and self.public_url is not None
            and browser.is_browser_navigation(
                request.method, request.headers.get("Accept"), scope.websocket
            )
        ):
            location = browser.login_redirect(self.login_url, self.public_url, scope.target.raw)
            raise web.HTTPFound(location, headers={"Cache-Control": "no-store"})
        message = "forbidden" if denied.status == 403 else "authentication required"
        return error_response(request, denied.status, message, denied.headers)

    # --- 4. admit -------------------------------------------------------------------------

    def admit(self, scope: Scope) -> Coroutine[Any, Any, Answer] | None:
        # A plain function: a request that carries no credential is admitted without a
        # coroutine; one that does gets _bind_credentials' (an owner may have to be asked).
        identity = scope.identity
        if identity is None:
            return self._admit_api_key(scope)
        # No rules configured: check would pass everyone; not asked (a call fewer).
        refusal = self.access.check(identity) if self.any_rules else None
        if refusal is not None:
            if browser.is_signout(scope.request.method, scope.target):
                # The refusal page's own way out: answered here, OpenWebUI never sees them.
                return self._signout(scope, relay=False)
            self.metrics.count_decision("access_denied")
            self._access_denied(identity, refusal)
        self.metrics.count_decision("identity")
        carried = credentials.carried(scope.request.headers, self.api_key_header)
        if carried is credentials.NONE:
            if scope.socketio:
                self._bind_engineio_session(scope, identity)
            return None
        # Every credential already known to be theirs (almost every request that carries
        # one): admitted here, without the coroutine that could ask OpenWebUI whose one is.
        # What the loops decide is what _bind_credentials decides when nothing is asked.
        cached = self.owners.cached
        for credential in carried.headers:
            if not cached(credential, identity):
                break
        else:
            for credential in carried.cookies:
                if credential not in carried.headers and not cached(credential, identity):
                    break
            else:
                if scope.socketio:
                    self._bind_engineio_session(scope, identity)
                return None
        # The Engine.IO session is bound there too, once every credential is.
        return self._bind_credentials(scope, identity, carried, session=True)

    async def _admit_api_key(self, scope: Scope) -> web.StreamResponse | None:
        """An API key without SSO: OpenWebUI names its owner, who must pass the access rules
        (a group rule never: the IdP's groups are unknown here) and own every other
        credential the request carries."""
        key = scope.request.headers["Authorization"].partition(" ")[2]
        owner = await self.owners.owner(key)
        if not isinstance(owner, Identity):
            return self._credential_refused(scope, None, owner, cookie=False)
        refusal = self.access.check(owner)
        if refusal is not None:
            if refusal.rule == "allowed_groups":
                refusal = Refusal(
                    refusal.rule,
                    "an API key cannot pass a group rule: the identity provider's groups "
                    "are only known with an SSO session",
                )
            self.metrics.count_decision("access_denied")
            self._access_denied(owner, refusal)
        carried = credentials.carried(scope.request.headers, self.api_key_header)
        # The cookie is never relayed with a key (outbound stage): only headers count.
        others = credentials.Carried(tuple(c for c in carried.headers if c != key), ())
        return await self._bind_credentials(scope, owner, others)

    async def _bind_credentials(
        self, scope: Scope, who: Identity, carried: credentials.Carried, session: bool = False
    ) -> web.StreamResponse | None:
        """Every OpenWebUI credential the request carries must be ``who``'s own.

        One in a header that is not refuses the request (401 when it is someone else's,
        else OpenWebUI's own refusal of it). A ``token`` cookie that is not is refused the
        same way, except on a page load: there it is left out of the relayed request and
        the browser told to delete it (a stale cookie must not cost the page). Sign-out
        always works: what is not the person's is left out of it (OpenWebUI revokes the
        token a sign-out carries, whoever's it is). With ``session``, an Engine.IO session
        the target names is then bound to ``who`` (:meth:`_bind_engineio_session`).
        """
        if carried is credentials.NONE or not carried:  # NONE first: no __bool__ call
            if session and scope.socketio:
                self._bind_engineio_session(scope, who)
            return None
        request = scope.request
        signout = browser.is_signout(request.method, scope.target)
        for credential in carried.headers:
            if self.owners.cached(credential, who):
                continue
            owner = await self.owners.owner(credential, who)
            if isinstance(owner, Identity) and owner.email == who.email:
                continue
            if not signout:
                return self._credential_refused(scope, who, owner, cookie=False)
            scope.drop_header_credentials = True
        for credential in carried.cookies:
            if credential in carried.headers and not scope.drop_header_credentials:
                continue  # the UI sends its token both ways: checked above
            if self.owners.cached(credential, who):
                continue
            owner = await self.owners.owner(credential, who)
            if isinstance(owner, Identity) and owner.email == who.email:
                continue
            if not signout and not browser.is_browser_navigation(
                request.method, request.headers.get("Accept"), scope.websocket
            ):
                return self._credential_refused(scope, who, owner, cookie=True)
            self.log.info("foreign_token_cookie_dropped", **person(who.email, self.pseudonyms))
            scope.drop_token_cookie = True
        if session and scope.socketio:
            self._bind_engineio_session(scope, who)
        return None

    def _bind_engineio_session(self, scope: Scope, who: Identity) -> None:
        """An Engine.IO session id in the target must carry a seal made for ``who``
        (``proxy/eio_sessions.py``); OpenWebUI is sent the id without it."""
        target = scope.target
        query = self.seals.unsealed_query(target.query, who.email)
        if query is None:
            self.metrics.count_decision("engineio_session_refused")
            self.log.warning("engineio_session_refused", **person(who.email, self.pseudonyms))
            raise Forbidden("this Socket.IO session was not opened by you")
        if query != target.query:
            scope.relayed = target.raw.partition("?")[0] + "?" + query

    def _credential_refused(
        self,
        scope: Scope,
        who: Identity | None,
        owner: Identity | owners.Refused,
        cookie: bool,
    ) -> web.StreamResponse:
        """The answer to a credential that is not ``who``'s (None: an API key alone)."""
        self.metrics.count_decision("credential_refused")
        request = scope.request
        extra = {"Cache-Control": "no-store"}
        if isinstance(owner, Identity):
            self.log.warning(
                "credential_not_theirs",
                **person(who.email if who is not None else None, self.pseudonyms),
                # Whose it was, named as people are in this log (owner_email/owner_pseudonym).
                **{f"owner_{k}": v for k, v in person(owner.email, self.pseudonyms).items()},
                carrier="cookie" if cookie else "header",
            )
            extra["Set-Cookie"] = browser.CLEAR_TOKEN_COOKIE
            return error_response(
                request,
                401,
                "an OpenWebUI credential of another person; sign in again",
                extra,
                code="credential_mismatch",
            )
        self.log.info(
            "credential_refused_by_openwebui",
            **person(who.email if who is not None else None, self.pseudonyms),
            status=owner.status,
            carrier="cookie" if cookie else "header",
        )
        if cookie or browser.is_user_mismatch(owner.status, owner.body):
            extra["Set-Cookie"] = browser.CLEAR_TOKEN_COOKIE
        if owner.own:
            return error_response(
                request,
                owner.status,
                owner.body.decode("utf-8", "replace"),
                extra,
                code="credential_owner_unknown",
            )
        # OpenWebUI's own refusal of the credential, as it gave it (status and body).
        response = web.Response(status=owner.status, body=owner.body, headers=extra)
        response.content_type = owner.content_type
        return response

    def _access_denied(self, identity: Identity, refusal: Refusal) -> NoReturn:
        """403: a page saying who is signed in and how to sign out (proxy/pages.py), or JSON."""
        self.log.info("access_denied", **person(identity.email, self.pseudonyms), rule=refusal.rule)
        raise AccessDenied(refusal.reason, email=identity.email)

    # --- 5. outbound ----------------------------------------------------------------------

    def outbound(self, scope: Scope) -> None:
        # One pass over the client's names: the header set and the names stripped from it.
        headers, stripped = request_headers_upstream(
            scope.request.headers,
            identity=scope.identity,
            policy=self.policy,
            request_id=scope.notes.request_id,
            forwarded=scope.forwarded,
        )
        if stripped:
            # Names only: the values are exactly what an attacker wants to see echoed.
            self.log.warning("identity_headers_stripped", names=stripped)
        if scope.identity is None:
            # API-key pass-through: the key is the only credential OpenWebUI may see; a
            # session cookie riding along must not authenticate anything.
            headers.popall("Cookie", None)
        else:
            if scope.drop_token_cookie:
                kept = credentials.without_token_cookie(headers.popall("Cookie", []))
                for cookie in kept:
                    headers.add("Cookie", cookie)
            if scope.drop_header_credentials:
                headers.popall("Authorization", None)
                headers.popall(self.api_key_header, None)
            if self._opens_engineio_session(scope):
                headers["Accept-Encoding"] = "identity"  # its answer is read and sealed
        scope.headers = headers

    # --- 6. dispatch ----------------------------------------------------------------------

    async def dispatch(self, scope: Scope) -> web.StreamResponse:
        if scope.websocket:
            return await self._websocket(scope)
        if scope.identity is not None and browser.is_signout(scope.request.method, scope.target):
            return await self._signout(scope)
        return await self._relay(scope)

    async def _websocket(self, scope: Scope) -> web.StreamResponse:
        assert scope.headers is not None
        self.metrics.open_websockets.inc()
        checked = scope.identity  # narrowed for the closure
        on_socketio_path = scope.socketio
        check = None
        if checked is not None:

            async def check(frame: str) -> bool:
                allowed = await self.token_guard.frame_allowed(frame, checked, on_socketio_path)
                if not allowed:
                    self._socketio_refused(checked)
                return allowed

        try:
            return await relay_websocket(
                self._relayed_request(scope),
                scope.headers,
                self.upstream,
                open_links=self.websockets,
                check=check,
                lifetime_s=self.websocket_lifetime_s,
            )
        finally:
            self.metrics.open_websockets.dec()

    def _socketio_refused(self, identity: Identity) -> None:
        self.metrics.count_decision("socketio_token_refused")
        self.log.warning("socketio_token_refused", **person(identity.email, self.pseudonyms))

    @staticmethod
    def _relayed_request(scope: Scope, target: str | None = None) -> web.Request:
        """The request as it goes upstream: the raw one, or a copy aimed at ``target``."""
        target = scope.relayed if target is None else target
        if target == scope.request.raw_path:
            return scope.request
        return scope.request.clone(rel_url=URL(target, encoded=True))

    async def _send(
        self,
        scope: Scope,
        relayed: web.Request,
        method: str | None = None,
        with_body: bool = True,
        buffered: bytes | None = None,
    ) -> h1.Response:
        assert scope.headers is not None
        started = time.perf_counter()
        response = await send(
            relayed,
            scope.headers,
            self.upstream,
            method=method,
            with_body=with_body,
            buffered=buffered,
        )
        elapsed = time.perf_counter() - started
        scope.notes.upstream_s = elapsed
        self.metrics.upstream_latency.observe(elapsed)
        return response

    @staticmethod
    def _opens_engineio_session(scope: Scope) -> bool:
        """A long-polling handshake: its answer names the new session's id."""
        return (
            scope.socketio  # first: false for almost every request
            and not scope.websocket
            and scope.request.method == "GET"
            and is_handshake(scope.target.query)
            # Only python-engineio's own path: any other answer a person controls (a file
            # downloaded as .../content/socket.io) would have them a seal for any id.
            and socketio.serves_engineio(scope.target.path)
        )

    async def _relay(self, scope: Scope) -> web.StreamResponse:
        request, headers, identity = scope.request, scope.headers, scope.identity
        assert headers is not None
        buffered = None
        if identity is not None and request.method == "POST" and scope.socketio:  # polling
            limit = min(socketio.POLLING_BODY_LIMIT, self.upstream.max_body_bytes)
            buffered = await read_body(request, limit, self.upstream.body_timeout_s)
            if not await self.token_guard.polling_payload_allowed(buffered, identity):
                self._socketio_refused(identity)
                raise Forbidden("token does not belong to the signed-in user")
        relayed = self._relayed_request(scope)
        signin = identity is not None and browser.may_start_a_session(request.method, scope.target)
        if signin:  # its answer is read here (whose session it is): asked for uncompressed
            headers["Accept-Encoding"] = "identity"
        response = await self._send(scope, relayed, buffered=buffered)
        extra: CIMultiDict[str] = CIMultiDict()
        if scope.drop_token_cookie:
            extra.add("Set-Cookie", browser.CLEAR_TOKEN_COOKIE)
        if signin and identity is not None and response.status == 200:
            body = await read_whole(response)
            self._signed_in(scope, identity, response.header_list, body)
            return whole_response(response, body, extra)
        if identity is not None and response.status == 200 and self._opens_engineio_session(scope):
            body = await read_whole(response)
            return whole_response(
                response, self.seals.sealed_handshake(body, identity.email), extra
            )
        length = response.content_length
        if (
            identity is not None
            and response.status == 401
            and length is not None
            and length <= _MISMATCH_401_MAX_BYTES
        ):
            body = await read_whole(response)
            if browser.is_user_mismatch(response.status, body) and not extra:
                # The browser holds a previous user's OpenWebUI token: drop the cookie so
                # its next sign-in (the UI does one on any 401) starts clean as the new user.
                self.log.info("stale_openwebui_token_dropped")
                extra.add("Set-Cookie", browser.CLEAR_TOKEN_COOKIE)
            return whole_response(response, body, extra)
        return await stream_back(relayed, response, extra_headers=extra or None)

    def _signed_in(
        self, scope: Scope, identity: Identity, header_list: list[tuple[str, str]], body: bytes
    ) -> None:
        """OpenWebUI answered a sign-in (or its second factor): a session it starts must be
        the person the proxy verified.

        Another account's (OpenWebUI reads another header than the one the proxy injects, a
        typo in either's settings, so a header the client sent chose the account) is never
        relayed: its token would sign the client in as someone else. Once the trusted
        sign-in is the person's, the first sign-in hook hears of them: their account exists
        now (a provisioner signing in as them at the same moment as their own first sign-in
        could otherwise make OpenWebUI create the account twice, unusable after)."""
        if browser.starts_a_session_for_someone_else(body, header_list, identity.email):
            self.metrics.count_decision("signin_identity_mismatch")
            self.log.error(
                "signin_identity_mismatch",
                why="OpenWebUI signed in another account than the verified person: does its "
                "WEBUI_AUTH_TRUSTED_EMAIL_HEADER equal OWUI_PROXY_EMAIL_HEADER?",
                **person(identity.email, self.pseudonyms),
            )
            raise SignedInSomeoneElse("OpenWebUI's sign-in answer is another account")
        if self.signin_hook is not None and browser.is_signin(scope.request.method, scope.target):
            self.signin_hook.seen(identity)

    async def _signout(self, scope: Scope, relay: bool = True) -> web.StreamResponse:
        """Sign-out, in any spelling: relayed as OpenWebUI's own ``POST`` (0.12.4 knows no
        GET; a link or a typed URL signs out the same), or with ``relay`` false (a person the
        access rules refuse) answered here alone. Either way the ``token`` cookie goes."""
        request = scope.request
        cookies: list[str] = []
        upstream_status = None
        if relay:
            response = await self._send(
                scope,
                self._relayed_request(scope, browser.SIGNOUT_PATH),
                method="POST",
                with_body=False,
            )
            await read_whole(response)
            cookies = response.headers.getall("Set-Cookie", [])
            upstream_status = response.status
        if not any(c.lstrip().startswith("token=") for c in cookies):
            cookies.append(browser.CLEAR_TOKEN_COOKIE)
        if self.logout_url is not None and browser.is_browser_navigation(
            request.method, request.headers.get("Accept"), websocket=False
        ):
            out = web.Response(status=302, headers={"Location": self.logout_url})
        else:
            out = web.json_response({"status": True, "redirect_url": self.logout_url})
        out.headers["Cache-Control"] = "no-store"
        for cookie in cookies:
            out.headers.add("Set-Cookie", cookie)
        self.log.info("signed_out", upstream_status=upstream_status)
        return out
