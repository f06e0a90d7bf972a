"""The public listener's handler: authenticate, build the header set, relay.

No identity, no upstream request: every path below either has a verified identity, or an
API key OpenWebUI will check itself (only when ``allow_api_keys``), or answers without
touching the upstream.
"""

from __future__ import annotations

import time
from typing import NoReturn

from aiohttp import web
from multidict import CIMultiDict

from proxy import browser, h1, logs, socketio
from proxy.access import AccessRules, Refusal
from proxy.auth.base import Authenticator, Denied
from proxy.errors import AccessDenied, BadRequest, Forbidden
from proxy.headers import (
    HeaderPolicy,
    build_upstream_headers,
    stripped_names,
)
from proxy.identity import Identity
from proxy.metrics import Metrics
from proxy.pseudonym import Pseudonyms, person
from proxy.relay import read_body, read_whole, send, stream_back, whole_response
from proxy.respond import error_response, request_id
from proxy.settings import Settings
from proxy.signin_hook import SigninHook
from proxy.socketio import TokenGuard
from proxy.upstream import Upstream
from proxy.websocket import OpenLinks, is_websocket, relay_websocket

IDENTITY_KEY = web.RequestKey("owui_identity", Identity)
UPSTREAM_SECONDS_KEY = web.RequestKey("owui_upstream_s", float)
# A 401 body worth reading to recognise "User mismatch"; OpenWebUI's is ~50 bytes.
_MISMATCH_401_MAX_BYTES = 4096


class PublicHandler:
    """Everything the public listener needs, resolved once at start."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        upstream: Upstream,
        metrics: Metrics,
        signin_hook: SigninHook | None = None,
    ) -> None:
        self.policy = HeaderPolicy.from_settings(settings)
        self.access = AccessRules.public(settings)
        self.signin_hook = signin_hook
        self.authenticator = authenticator
        self.upstream = upstream
        self.metrics = metrics
        self.public_url = settings.public_url
        self.public_origin = browser.origin_of(settings.public_url) if settings.public_url else None
        self.login_url = settings.login_url
        self.logout_url = settings.logout_url
        self.allow_api_keys = settings.allow_api_keys
        self.log = logs.get()
        self.pseudonyms = Pseudonyms.from_file(settings.log_pseudonym_key_file)
        self.websockets = OpenLinks()
        self.token_guard = TokenGuard(upstream, self.policy)
        self.log.info("public_listener_access", rules=self.access.describe())

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if not request.raw_path.startswith("/"):
            raise BadRequest("request target must be a path")
        creates = browser.account_creation(request.raw_path.partition("?")[0])
        if creates is not None:
            # Before authentication: the answer is the same for everyone, and it costs no
            # auth-service call. Users exist only through the trusted sign-in.
            self.metrics.count_decision("account_creation_refused")
            raise Forbidden(f"{creates} is not available behind owui-gate")
        websocket = is_websocket(request)
        if (
            websocket
            and self.public_origin is not None
            and not browser.origin_allowed(request.headers.get("Origin"), self.public_origin)
        ):
            self.metrics.count_decision("cross_origin_websocket")
            raise Forbidden("cross-origin WebSocket refused")
        if (
            not websocket
            and self.public_origin is not None
            and socketio.is_socketio_path(request.path)
            and not socketio.polling_origin_allowed(
                request.method,
                request.headers.getall("Origin", []),
                request.rel_url.raw_query_string,
                self.public_origin,
            )
        ):
            self.metrics.count_decision("cross_origin_socketio_polling")
            raise Forbidden("cross-origin Socket.IO long-polling refused")
        stripped = stripped_names(request.headers.items(), self.policy)
        if stripped:
            # Names only: the values are exactly what an attacker wants to see echoed.
            self.log.warning("identity_headers_stripped", names=stripped)

        identity: Identity | None = None
        if (
            self.allow_api_keys
            and not websocket
            and browser.api_key_allowed(request.headers.getall("Authorization", []), request.path)
        ):
            self.metrics.count_decision("api_key")
        else:
            result = await self.authenticator.authenticate(request)
            if isinstance(result, Denied):
                self.metrics.count_decision("denied")
                return self._deny(request, result, websocket)
            identity = result
            request[IDENTITY_KEY] = identity
            refusal = self.access.check(identity)
            if refusal is not None:
                self.metrics.count_decision("access_denied")
                self._access_denied(identity, refusal)
            self.metrics.count_decision("identity")

        headers = build_upstream_headers(
            request.headers.items(),
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            identity=identity,
            policy=self.policy,
            request_id=request_id(request),
        )
        if identity is None:
            # API-key pass-through: the key is the only credential OpenWebUI may see; a
            # session cookie riding along must not authenticate anything.
            headers.popall("Cookie", None)
        if websocket:
            self.metrics.open_websockets.inc()
            checked = identity  # narrowed for the closure
            on_socketio_path = socketio.is_socketio_path(request.path)
            check = None
            if checked is not None:

                async def check(frame: str) -> bool:
                    allowed = await self.token_guard.frame_allowed(frame, checked, on_socketio_path)
                    if not allowed:
                        self._socketio_refused(checked)
                    return allowed

            try:
                return await relay_websocket(
                    request, headers, self.upstream, open_links=self.websockets, check=check
                )
            finally:
                self.metrics.open_websockets.dec()
        if browser.canonical_path(request.path) == browser.SIGNOUT_PATH and browser.cross_site(
            request.headers.get("Sec-Fetch-Site"),
            request.headers.get("Origin"),
            self.public_origin or browser.origin_of(f"{request.scheme}://{request.host}"),
        ):
            self.metrics.count_decision("cross_site_signout")
            raise Forbidden("cross-site sign-out refused")
        if identity is not None and browser.is_signout(request.method, request.path):
            return await self._signout(request, headers)
        return await self._relay(request, headers, identity)

    def _access_denied(self, identity: Identity, refusal: Refusal) -> NoReturn:
        """403: a page saying who is signed in and how to sign out (proxy/pages.py), or JSON."""
        self.log.info("access_denied", **person(identity.email, self.pseudonyms), rule=refusal.rule)
        raise AccessDenied(refusal.reason, email=identity.email)

    def _socketio_refused(self, identity: Identity) -> None:
        self.metrics.count_decision("socketio_token_refused")
        self.log.warning("socketio_token_refused", **person(identity.email, self.pseudonyms))

    def _deny(self, request: web.Request, denied: Denied, websocket: bool) -> web.StreamResponse:
        self.log.info("auth_denied", reason=denied.reason, status=denied.status)
        if (
            self.login_url is not None
            and self.public_url is not None
            and browser.is_browser_navigation(
                request.method, request.headers.get("Accept"), websocket
            )
        ):
            location = browser.login_redirect(self.login_url, self.public_url, request.raw_path)
            raise web.HTTPFound(location, headers={"Cache-Control": "no-store"})
        message = "forbidden" if denied.status == 403 else "authentication required"
        return error_response(request, denied.status, message, denied.headers)

    async def _send(
        self,
        request: web.Request,
        headers: CIMultiDict[str],
        method: str | None = None,
        with_body: bool = True,
        buffered: bytes | None = None,
    ) -> h1.Response:
        started = time.perf_counter()
        response = await send(
            request, headers, self.upstream, method=method, with_body=with_body, buffered=buffered
        )
        elapsed = time.perf_counter() - started
        request[UPSTREAM_SECONDS_KEY] = elapsed
        self.metrics.upstream_latency.observe(elapsed)
        return response

    async def _relay(
        self, request: web.Request, headers: CIMultiDict[str], identity: Identity | None
    ) -> web.StreamResponse:
        buffered = None
        if identity is not None and socketio.is_polling_post(request.method, request.path):
            limit = min(socketio.POLLING_BODY_LIMIT, self.upstream.max_body_bytes)
            buffered = await read_body(request, limit, self.upstream.body_timeout_s)
            if not await self.token_guard.polling_payload_allowed(buffered, identity):
                self._socketio_refused(identity)
                raise Forbidden("token does not belong to the signed-in user")
        response = await self._send(request, headers, buffered=buffered)
        if (
            self.signin_hook is not None
            and identity is not None
            and response.status == 200
            and browser.is_signin(request.method, request.path)
        ):
            # Announced once OpenWebUI has signed the person in, so their account exists:
            # a provisioner signing in as them at the same moment as their own first sign-in
            # could otherwise make OpenWebUI create the account twice (unusable after).
            self.signin_hook.seen(identity)
        length = response.content_length
        if (
            identity is not None
            and response.status == 401
            and length is not None
            and length <= _MISMATCH_401_MAX_BYTES
        ):
            body = await read_whole(response)
            extra: CIMultiDict[str] = CIMultiDict()
            if browser.is_user_mismatch(response.status, body):
                # The browser holds a previous user's OpenWebUI token: drop the cookie so
                # its next sign-in (the UI does one on any 401) starts clean as the new user.
                self.log.info("stale_openwebui_token_dropped")
                extra.add("Set-Cookie", browser.CLEAR_TOKEN_COOKIE)
            return whole_response(response, body, extra)
        return await stream_back(request, response)

    async def _signout(self, request: web.Request, headers: CIMultiDict[str]) -> web.StreamResponse:
        # OpenWebUI 0.12.4 only knows POST; GET (a link or a typed URL) signs out the same.
        response = await self._send(request, headers, method="POST", with_body=False)
        await read_whole(response)
        cookies = response.headers.getall("Set-Cookie", [])
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
        self.log.info("signed_out", upstream_status=response.status)
        return out
