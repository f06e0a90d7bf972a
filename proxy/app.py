"""Wiring: the shared runtime, the public app and the admin app, assembled in one place.

The public app has one route, which every target reaches (``proxy/catchall.py``), and no
middleware: the route runs ``proxy/observe.py``'s
observation (shared with the internal listener) around the handler: request id, the JSON
answer to a ``ProxyError``, 499 and mid-body cuts, request metrics, and then
:func:`access_line`, so the access line records the final status of everything, errors
included. The answers aiohttp makes before the route (a refused ``Expect``) are observed by
the app's response hook, so they get an id, an access line and a count too.

Then the handler (``proxy/public.py``): authenticate, build headers, relay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import aiohttp
from aiohttp import web
from multidict import istr

from proxy import logs
from proxy.auth.base import Authenticator
from proxy.auth.cookies import add_to, kept
from proxy.auth.forward import AUTH_MAX_FIELD_BYTES, ForwardAuthenticator
from proxy.browser import SIGNOUT_PATH
from proxy.catchall import EveryTarget
from proxy.headers import REQUEST_ID_HEADER
from proxy.metrics import Metrics
from proxy.observe import Observation, Seen
from proxy.pages import PAGES_KEY, Pages
from proxy.pseudonym import Pseudonyms
from proxy.public import PublicHandler
from proxy.readiness import CHECK_EVERY_S, UpstreamReadiness
from proxy.relay import no_early_continue
from proxy.release_watch import RefusalSignal, ReleaseWatch
from proxy.respond import REQUEST_ID_KEY
from proxy.scope import NOTES_KEY
from proxy.settings import Settings
from proxy.signin_hook import SigninHook
from proxy.upstream import Upstream

# The answer's request id header, case-folded once (a str name is folded on every set).
_REQUEST_ID = istr(REQUEST_ID_HEADER)

# How long an idle connection to the forward-auth service is kept for reuse (aiohttp's
# default, made explicit: the fd count after a burst depends on it).
AUTH_KEEPALIVE_S = 15.0


@dataclass
class Runtime:
    """What every listener of one process shares: upstream pool, auth, metrics."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    upstream: Upstream | None = None
    auth_session: aiohttp.ClientSession | None = None
    authenticator: Authenticator | None = None
    signin_hook: SigninHook | None = None
    release: ReleaseWatch | None = None  # the OpenWebUI release; refused ones stop the start
    # Shared by the workers of one proxy: a refused release one of them finds stops them all.
    refusals: RefusalSignal | None = None
    draining: bool = False  # set on SIGTERM: /readyz turns 503 while requests finish

    async def start(self) -> None:
        # First, before anything is opened: its secret file may be unusable (exit 2).
        hook_session = None
        if self.settings.signin_hook_url is not None:
            hook_session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
            try:
                self.signin_hook = SigninHook(self.settings, hook_session, self.metrics)
            except BaseException:
                await hook_session.close()
                raise
        self.upstream = Upstream.open(self.settings)
        self.release = ReleaseWatch(self.upstream, refusals=self.refusals)
        try:
            await self.release.start()
        except BaseException:
            await self.close()
            raise
        # Its own session: the auth service is not OpenWebUI, and no cookie jar is shared.
        self.auth_session = aiohttp.ClientSession(
            max_field_size=AUTH_MAX_FIELD_BYTES,  # identities in thousands of groups
            # No pool limit (aiohttp's default is 100): an auth call must never queue here
            # behind others; the auth service sets its own limits. Idle connections stay
            # AUTH_KEEPALIVE_S: a burst of N concurrent sign-ins leaves N sockets open that
            # long (not a leak; docs/proxy.md, "Limits").
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=AUTH_KEEPALIVE_S),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self.settings.auth_timeout_s),
        )
        self.authenticator = make_authenticator(self.settings, self.auth_session, self.metrics)
        await self.authenticator.start()
        if self.signin_hook is not None:
            await self.signin_hook.start()

    async def close(self) -> None:
        if self.release is not None:
            await self.release.close()
        if self.signin_hook is not None:
            await self.signin_hook.close()
            await self.signin_hook.session.close()
        if self.authenticator is not None:
            await self.authenticator.close()
        if self.auth_session is not None:
            await self.auth_session.close()
        if self.upstream is not None:
            await self.upstream.close()


def make_authenticator(
    settings: Settings, session: aiohttp.ClientSession, metrics: Metrics
) -> Authenticator:
    if settings.auth == "jwt":
        # Imported here: PyJWT and cryptography cost ~9 MiB a process that does not verify JWTs.
        from proxy.auth.jwt import JwtAuthenticator

        jwt_source = JwtAuthenticator(settings, session)
        metrics.watch_jwks(jwt_source)
        return jwt_source
    return ForwardAuthenticator(settings, session, metrics)


def access_line(request: web.Request, seen: Seen, pseudonyms: Pseudonyms | None = None) -> None:
    """The public listener's record of a request: its one ``access`` line (the person by
    ``pseudonym`` instead of ``email`` when there is a key: ``proxy/pseudonym.py``)."""
    # notes_of(request), without its two Python calls (the function, the request's
    # __getitem__). None: the handler never ran.
    notes = request._state.get(NOTES_KEY)
    if notes is None:
        identity = upstream_s = None
        path = request.path
    else:
        identity, upstream_s, target = notes.identity, notes.upstream_s, notes.target
        # The path without its query string (it may carry secrets): ``request.path``, yarl's
        # decoding of the target, is the target's own path when the target was read without
        # a problem and holds no escape at all (tests/proxy/test_logs.py checks it against
        # aiohttp's parser), and that needs no decoding (~2k instructions).
        plain = target.problem is None and "%" not in target.raw
        path = target.path if plain else request.path
    email = identity.email if identity is not None else None
    # What ``person()`` names them by, without its dict and ``**`` (one per request).
    pseudonym: str | logs.Absent | None = logs.ABSENT
    if pseudonyms is not None:
        pseudonym, email = (pseudonyms.of(email) if email is not None else None), None
    # The request's headers and method from the fields its cached properties return (a
    # property look-up each, ~250 instructions).
    client_request_id = request._headers.get(_REQUEST_ID)
    # By position, in logs.access's order (each field named alongside): matching twelve
    # keywords costs ~800 instructions a line.
    logs.access(
        seen.request_id,  # request_id
        "public",  # listener
        request._method,  # method
        path,  # path
        seen.status,  # status
        body_bytes(seen.response),  # body_bytes
        # duration_ms: rounded to a tenth where the line is written, in one conversion.
        (time.perf_counter() - seen.started) * 1000,
        upstream_s * 1000 if upstream_s is not None else None,  # upstream_ms
        email,  # email
        pseudonym,  # pseudonym
        request.remote,  # peer
        None if client_request_id is None else logs.sanitise(client_request_id),  # client's id
    )


def body_bytes(response: web.StreamResponse | None) -> int:
    """The body bytes this response sends the client.

    A streamed response has been sent by now, so aiohttp counts what went out. A response the
    handler only built (errors, refusals, small relayed bodies) is sent after this middleware
    returns: its whole body will be.
    """
    if response is None:
        return 0
    # .prepared and .body_length, read from the fields they return (two Python calls fewer).
    if response._eof_sent or response._payload_writer is not None:
        return response._body_length
    if isinstance(response, web.Response) and isinstance(response.body, bytes | bytearray):
        return len(response.body)
    return 0


class _Public:
    """The public app's route: the observation around the handler, which is made once the
    runtime exists (after the app is frozen); and the app's one response hook."""

    def __init__(self, observation: Observation) -> None:
        self.observation = observation
        self.handler: PublicHandler | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.observation.around(request, self.handler or _not_started)

    async def answer_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """The one ``on_response_prepare`` hook, for every answer: ``X-Request-ID``, then the
        auth service's cookies (``proxy/auth/cookies.py``). One hook, both read from the
        request's notes (``proxy/scope.py``): each hook is a coroutine per answer, and each
        value kept under a key of its own a look-up (a missed one, with no cookies, ~4k
        instructions). An answer no route gave is observed here (:meth:`Observation.unrouted`)."""
        # The answer's headers and the request's storage read from their fields: the
        # ``headers`` property and the request's __getitem__ are a Python call each.
        headers = response._headers
        try:
            notes = request._state[NOTES_KEY]
        except KeyError:  # the handler never ran: the route's 503 before start-up, or no route
            try:
                rid = request[REQUEST_ID_KEY]
            except KeyError:
                rid = self.observation.unrouted(request, response)
            headers[_REQUEST_ID] = rid
            cookies = kept(request, None)
        else:
            headers[_REQUEST_ID] = notes.request_id
            cookies = notes.auth_cookies
        if cookies:
            add_to(headers, cookies)


async def _not_started(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPServiceUnavailable()  # a request beat start-up


PUBLIC_KEY = web.AppKey("owui_public", _Public)


def create_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    """The public listener's app. Without ``runtime`` it starts and closes its own."""
    owned = runtime is None
    rt = runtime if runtime is not None else Runtime(settings)
    pseudonyms = Pseudonyms.from_file(settings.log_pseudonym_key_file)
    # Without a key, the line itself: a partial with a keyword builds a dict on every call.
    record = access_line if pseudonyms is None else partial(access_line, pseudonyms=pseudonyms)
    public = _Public(Observation("public", rt.metrics, record))
    app = web.Application(
        # Bodies are streamed, never read whole; the relay enforces max_body_bytes itself.
        client_max_size=settings.max_body_bytes,
        # A body goes upstream as the client sent it: aiohttp would inflate a gzip or
        # deflate body, which the head's Content-Length and Content-Encoding no longer
        # describe (and what a guard checked would not be what OpenWebUI reads).
        handler_args={"max_field_size": 65536, "auto_decompress": False},
    )

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        if owned:
            await rt.start()
        assert rt.upstream is not None
        assert rt.authenticator is not None
        assert rt.release is not None
        public.handler = PublicHandler(
            settings, rt.authenticator, rt.upstream, rt.metrics, rt.release, rt.signin_hook
        )
        yield
        if owned:
            await rt.close()

    async def close_websockets(_app: web.Application) -> None:
        if public.handler is not None:
            await public.handler.websockets.going_away()

    # Read here, before any port opens: a template that cannot be used stops the start.
    app[PAGES_KEY] = Pages(settings.logout_url or SIGNOUT_PATH, settings.pages_dir)
    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_websockets)
    # The request id and the auth service's renewed or cleared session cookie, on any answer.
    # Observes the answers no route gave, too.
    app.on_response_prepare.append(public.answer_headers)
    app[PUBLIC_KEY] = public
    # No early 100 Continue: the relay sends it once the caller is authenticated.
    # Every target, line breaks and `*` included: the handler reads it itself (400).
    app.router.register_resource(EveryTarget(public.handle, no_early_continue))
    return app


def create_admin_app(
    settings: Settings, runtime: Runtime, *, check_every_s: float = CHECK_EVERY_S
) -> web.Application:
    """``/healthz``, ``/readyz`` and ``/metrics``, and nothing else.

    ``/readyz`` does no I/O: OpenWebUI is checked every ``check_every_s`` in the background
    (``proxy/readiness.py``), so it answers within ``READYZ_TIMEOUT_S`` whatever OpenWebUI does.
    """
    upstream_ready: list[UpstreamReadiness] = []

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def readiness() -> list[str]:
        """What keeps the proxy from being ready; no I/O (see the docstring above)."""
        problems: list[str] = []
        if runtime.draining:
            problems.append("shutting down")
        if runtime.authenticator is not None and (p := runtime.authenticator.problem()):
            problems.append(f"auth: {p}")
        if not upstream_ready:
            problems.append("starting")
        else:
            problems += upstream_ready[0].problems()
        return problems

    async def readyz(_request: web.Request) -> web.Response:
        problems = readiness()
        # Shown, ready or not: trouble of some identities, not of the proxy.
        notices = runtime.authenticator.notices() if runtime.authenticator is not None else []
        noted = {"notices": notices} if notices else {}
        if problems:
            return web.json_response({"ready": False, "problems": problems, **noted}, status=503)
        return web.json_response({"ready": True, **noted})

    async def metrics(_request: web.Request) -> web.Response:
        # The same checks as /readyz, at each scrape: readiness alerts need no other prober.
        runtime.metrics.ready.set(0 if readiness() else 1)
        assessment = runtime.release.assessment if runtime.release is not None else None
        refused = assessment is not None and assessment.refusal is not None
        runtime.metrics.openwebui_release_refused.set(1 if refused else 0)
        return web.Response(
            body=runtime.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def check_upstream(_app: web.Application) -> AsyncIterator[None]:
        if runtime.upstream is None or runtime.release is None:  # pragma: no cover
            raise RuntimeError("the admin app needs a started runtime")
        checker = UpstreamReadiness(runtime.upstream, runtime.release, check_every_s)
        await checker.start()
        upstream_ready.append(checker)
        yield
        await checker.close()

    app = web.Application()
    app.cleanup_ctx.append(check_upstream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
