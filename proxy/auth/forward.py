"""Forward-auth identity: ask an auth service (oauth2-proxy, Authelia, authentik) per request.

The service gets a GET with the client's ``Cookie`` and ``X-Forwarded-*`` /
``X-Original-URL`` describing the original request — never the client's
``Authorization``, which carries OpenWebUI's own token. 2xx: the identity is read from the
configured response headers. 401/403: the client gets that status with the service's
``Location``/``WWW-Authenticate``. Anything else, or no answer in time: 503. The service's
``Set-Cookie`` (a refreshed session with a 2xx, a cleared one with a denial) goes to the
client with whatever answer it gets (``proxy/auth/cookies.py``).

With ``forward_auth_cache_s`` > 0, 2xx decisions are cached in a bounded LRU, for at most
that long, keyed by a BLAKE2b-256 digest of *everything the service is shown*: the credentials (the
``Cookie`` header) and the request it is asked about (method, host, URI, client address).
Services such as Authelia decide by path, method and network as well as by session, so a
key of the cookie alone would let an answer for one request stand in for another. Denials
and failures are never cached, so a signed-out session is refused on its next request.
Neither is an answer that sets a cookie: the cache holds identities only, so it could not
give the cookie to the next request, and that request must reach the service to get one
(a renewed session cookie reaches the browser once, from the answer that made it).

Calls carrying the same session cookie take turns, and a renewed session stands in for the
cookie it replaced for a short while (``proxy/auth/renewal.py``): a page's parallel requests
must not each refresh one session, which identity providers that rotate refresh tokens
punish by revoking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from hashlib import blake2b
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDictProxy

from proxy import logs
from proxy.auth.base import Denied
from proxy.auth.cookies import keep_more
from proxy.auth.renewal import Renewals
from proxy.errors import (
    AuthServiceUnavailable,
    BadIdentity,
    BadRequest,
    IdentityTooLarge,
    drop_frames,
)
from proxy.headers import Forwarded, HeaderPolicy, forwarded_view
from proxy.identity import Identity, InvalidIdentity, make_identity
from proxy.metrics import Metrics
from proxy.settings import Settings

# How often /readyz's view of the auth service is refreshed (a GET naming nobody).
PROBE_INTERVAL_S = 10.0
# Marks the probe, so an auth service's logs (and our test fakes) can tell it from users.
PROBE_HEADER = "X-Owui-Proxy-Probe"
# Headers of a denial worth passing to the client: where to log in, and how.
_PASS_ON = ("Location", "WWW-Authenticate")
# The longest header line read from the auth service (the session's ``max_field_size``).
# aiohttp's default, 8,190 bytes, locked out people in many groups: 2,000 group names are
# about 14 KB, 2,000 Entra group object ids about 74 KB. 256 KiB holds several thousand
# ids; a longer answer is refused as that person's identity problem (IdentityTooLarge),
# not taken for an auth service that failed.
AUTH_MAX_FIELD_BYTES = 256 * 1024
# The most of an answer's body read: nothing in it is used, and a small one read to its end
# lets the connection be used again; a larger one is left unread and its connection closed,
# never held in memory.
MAX_ANSWER_BODY = 64 * 1024
# How long /readyz mentions the last answer refused as too large.
NOTICE_WINDOW_S = 600.0
# What the decision cache may hold, in (estimated) bytes: a person in thousands of groups
# costs ~150 KB an entry, and one such person browsing fills many entries.
CACHE_MAX_BYTES = 64 * 1024 * 1024


class DecisionCache:
    """A bounded LRU of identities with a time-to-live. ``clock`` is injectable for tests.

    Bounded twice: at most ``size`` entries and at most ``max_bytes`` of identities (by
    :func:`identity_bytes`), so people in thousands of groups cannot make it huge.
    """

    def __init__(
        self,
        ttl_s: float,
        size: int,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = CACHE_MAX_BYTES,
    ) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self.clock = clock
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, Identity, int]] = OrderedDict()

    def get(self, key: bytes) -> Identity | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, identity, _weight = entry
        if self.clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return identity

    def put(self, key: bytes, identity: Identity) -> None:
        if key in self._entries:
            self._drop(key)
        weight = identity_bytes(identity)
        self._entries[key] = (self.clock() + self.ttl_s, identity, weight)
        self.bytes += weight
        while self._entries and (len(self._entries) > self.size or self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key)[2]

    def __len__(self) -> int:
        return len(self._entries)


def identity_bytes(identity: Identity) -> int:
    """About what an identity costs in memory: its strings, the groups header value, and
    an object (~60 bytes) and a tuple slot for each group. An estimate that grows as the
    identity does, which is what bounding the cache needs."""
    groups = identity.groups_header_value() or ""
    return (
        200
        + len(identity.email)
        + len(identity.name or "")
        + 2 * len(groups)
        + 64 * len(identity.groups)
    )


class Asked(NamedTuple):
    """What the auth service is asked about one request: every value its headers are built
    from (:meth:`headers`), so its decision can depend on these and nothing else."""

    method: str
    proto: str
    host: str
    uri: str
    for_: str
    accept: str
    cookie: str  # "" for none

    def headers(self) -> dict[str, str]:
        """The header set the auth service is sent."""
        headers = {
            "X-Forwarded-Method": self.method,
            "X-Forwarded-Proto": self.proto,
            "X-Forwarded-Host": self.host,
            "X-Forwarded-Uri": self.uri,
            "X-Forwarded-For": self.for_,
            "X-Original-URL": f"{self.proto}://{self.host}{self.uri}",
            "Accept": self.accept,
        }
        if self.cookie:
            headers["Cookie"] = self.cookie
        return headers


_made = tuple.__new__


# The decimal text of the lengths values usually have: formatting an int costs more than
# finding its text here, and this runs for every value of every request.
_LENGTHS = tuple(str(n) for n in range(1024))


def _checked(asked: Asked) -> bytes:
    """``asked``'s values, each behind its length and a colon (``3:GET5:https...``), the
    last (the cookie) behind nothing, as UTF-8: the text splits back into exactly one tuple
    of values (no separator a value could contain; the last value is whatever follows the
    others), and its UTF-8 is exact (no character folded into another). A value UTF-8
    cannot carry exactly is refused (BadRequest), naming its header: :func:`_exact` says
    why. One f-string and one encode: this runs on every request."""
    m, p, h, u, f, a, c = asked
    n = _LENGTHS
    try:
        text = (
            f"{n[len(m)]}:{m}{n[len(p)]}:{p}{n[len(h)]}:{h}"
            f"{n[len(u)]}:{u}{n[len(f)]}:{f}{n[len(a)]}:{a}{c}"
        )
    except IndexError:  # a value longer than the table: the same text, formatted
        text = f"{len(m)}:{m}{len(p)}:{p}{len(h)}:{h}{len(u)}:{u}{len(f)}:{f}{len(a)}:{a}{c}"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Every header value is made of these values alone: one of them is not exact.
        name = next(name for name, value in asked.headers().items() if not _exact(value))
        raise BadRequest(f"{name} holds bytes that are not UTF-8; refused, not guessed") from None


def decision_key(asked: Asked) -> bytes:
    """What the cache is keyed by: a digest of every value the auth service's headers are
    built from (so no session cookie sits in memory twice).

    Injective over what the service is sent: :meth:`Asked.headers` is a function of these
    values, and :func:`_checked`'s text is an injective encoding of them. Built from the
    values, not from the header set, so a cache hit never builds the header set.

    CPython's own BLAKE2b (32 bytes), not OpenSSL's SHA-256: as collision-resistant, and
    about half the instructions for a session cookie's few hundred bytes (no EVP context
    made and freed per call); the owner cache's key is made the same way."""
    return blake2b(_checked(asked), digest_size=32).digest()


def _exact(value: str) -> bool:
    """Whether ``value`` goes on the wire as exactly the bytes it came in as.

    aiohttp's server decodes header bytes that are not UTF-8 into lone surrogates, and its
    client then drops them: the auth service would judge other bytes than the ones that
    reach OpenWebUI (and a decision cache keyed on either would confuse two requests).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ForwardAuthenticator:
    """The ``auth=forward`` identity source (implements ``proxy.auth.base.Authenticator``)."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.forward_auth_url is None:  # the settings model already refuses this
            raise ValueError("forward_auth_url is required for auth=forward")
        self.url = settings.forward_auth_url
        self.session = session
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=settings.auth_timeout_s)
        self.email_header = settings.forward_auth_email_header
        self.name_header = settings.forward_auth_name_header
        self.groups_header = settings.forward_auth_groups_header
        self.policy = HeaderPolicy.from_settings(settings)
        self.public_url = settings.public_url
        self.cache = (
            DecisionCache(settings.forward_auth_cache_s, settings.forward_auth_cache_size, clock)
            if settings.forward_auth_cache_s > 0
            else None
        )
        self.clock = clock
        self.renewals = Renewals(clock=clock)
        self._problem: str | None = None
        self._prober: asyncio.Task[None] | None = None
        self._too_large = 0  # answers refused as too large, since start
        self._too_large_at: float | None = None  # when the last one was (clock)

    async def start(self) -> None:
        if self.public_url is None:
            logs.get().warning(
                "public_url_unset",
                detail="OWUI_PROXY_PUBLIC_URL is unset: the auth service is told the client's "
                "Host; services that pick rules by domain (Authelia) can then be steered",
            )
        await self.probe()
        self._prober = asyncio.create_task(self._probe_forever(), name="forward-auth-probe")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    def problem(self) -> str | None:
        """What the last probe found wrong with the auth service (None: it answers)."""
        return self._problem

    def notices(self) -> list[str]:
        """Answers refused as too large lately: some people cannot sign in, the rest can."""
        if self._too_large_at is None:
            return []
        ago = self.clock() - self._too_large_at
        if ago > NOTICE_WINDOW_S:
            return []
        return [
            f"auth service answers with a header over {AUTH_MAX_FIELD_BYTES} bytes refused "
            f"(identity_too_large): {self._too_large} since start, the last {ago:.0f} s ago; "
            "those people cannot sign in (too many groups?)"
        ]

    async def probe(self) -> None:
        """Ask the auth service about nobody: any answer below 500 means it is up.

        A cheap readiness signal for ``/readyz``: without it, a proxy whose auth service is
        down stays "ready" while every request gets 503.
        """
        try:
            async with self.session.get(
                self.url,
                headers={"Accept": "application/json", PROBE_HEADER: "readiness"},
                allow_redirects=False,
                timeout=self.timeout,
            ) as response:
                await _drain(response)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            drop_frames(exc)
            self._problem = f"auth service unreachable ({type(exc).__name__})"
            return
        self._problem = None if status < 500 else f"auth service answered {status}"

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            await self.probe()

    def _asked(self, request: web.Request, cookie: str, fwd: Forwarded | None) -> Asked:
        if fwd is None:
            fwd = forwarded_view(
                request.headers,
                peer=request.remote,
                scheme=request.scheme,
                host=request.host,
                policy=self.policy,
            )
        # With a public URL, our own name (the policy's), not whatever Host the client typed:
        # auth services (Authelia) pick their access rules and cookie domain by it.
        # tuple.__new__: the named tuple's own __new__ is a Python frame per request.
        return _made(
            Asked,
            (
                request.method,
                fwd.proto,
                fwd.host,
                request.raw_path,
                fwd.for_,
                request.headers.get("Accept", "*/*"),
                cookie,
            ),
        )

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.count_cache(what)

    async def authenticate(
        self, request: web.Request, forwarded: Forwarded | None = None
    ) -> Identity | Denied:
        decided = self.decided(request, forwarded)
        if isinstance(decided, Identity):
            return decided
        return await decided

    def decided(
        self, request: web.Request, forwarded: Forwarded | None = None
    ) -> Identity | Coroutine[Any, Any, Identity | Denied]:
        """:meth:`authenticate`'s answer when the decision cache has it (an identity, no
        coroutine made: almost every request), else the coroutine that finds it out (the
        auth service asked), given what was worked out here so nothing is done twice."""
        cookie = "; ".join(request.headers.getall("Cookie", ()))
        asked = self._asked(request, cookie, forwarded)
        checked = _checked(asked)  # first: refuses bytes not UTF-8
        if not cookie:
            return self._ask(request, asked, None)
        # A session the service renewed a moment ago is asked about as renewed (renewal.py);
        # nothing renewed lately (the usual case) is seen without a call.
        renewals = self.renewals
        current = cookie
        if renewals.recent:
            current, renewal = renewals.follow(cookie)
            if current != cookie:
                # Sent after the renewal was made, with the session it replaced: its browser
                # may never have had the renewal's answer (a request it abandoned). This
                # answer, whatever it is (a cached decision too), carries it (renewal.py).
                keep_more(request, renewal)
                asked = asked._replace(cookie=current)
                checked = _checked(asked)
        key = None
        if self.cache is not None:
            key = blake2b(checked, digest_size=32).digest()  # decision_key(asked), encoded once
            cached = self.cache.get(key)
            if self.metrics is not None:  # self._count, inlined: one call less per request
                self.metrics.count_cache("hit" if cached is not None else "miss")
            if cached is not None:
                return cached
        return self._in_turn(request, asked, current, key)

    async def _in_turn(
        self, request: web.Request, asked: Asked, current: str, key: bytes | None
    ) -> Identity | Denied:
        """The auth service asked about a session cookie, in that session's turn.

        The call, once made, runs to its end even when ``request`` is given up on (its client
        went away, which cancels the handler), and holds the turn until then: the service
        may be refreshing the session, spending a refresh token that works once, and the
        renewal it answers with must be learned (and handed to the session's next request)
        before anyone asks about the old cookie again, or the identity provider takes that
        second refresh for theft and revokes the session.
        """
        async with self.renewals.turn(current) as sent:
            if sent != current:  # renewed while this call waited for its turn
                # Its browser sent it before the renewal was made: the renewal's own answer
                # tells it (or, if that never arrived, the answer to its next request).
                asked = asked._replace(cookie=sent)
                key = decision_key(asked) if self.cache is not None else None
            call = asyncio.ensure_future(self._ask(request, asked, key))
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                if not call.done():
                    # The request is gone; its call is not (bounded by auth_timeout_s).
                    with contextlib.suppress(Exception):
                        await call
                raise
            finally:
                # An error raised here passes through this frame: its traceback would hold
                # the task that holds the error (a cycle only the collector frees).
                del call

    async def _ask(
        self, request: web.Request, asked: Asked, key: bytes | None
    ) -> Identity | Denied:
        """One call to the auth service about ``request``, as ``asked``."""
        cookie = asked.cookie
        if self.metrics is not None:
            self.metrics.forward_auth_calls.inc()
        started = time.perf_counter()
        try:
            async with self.session.get(
                self.url,
                headers=asked.headers(),
                allow_redirects=False,
                timeout=self.timeout,
            ) as response:
                status = response.status
                headers = response.headers
                await _drain(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            drop_frames(exc)
            if _too_large(exc):
                raise self._refuse_too_large() from exc
            self._count_error("timeout" if isinstance(exc, TimeoutError) else "unreachable")
            raise AuthServiceUnavailable(f"auth service failed ({type(exc).__name__})") from exc
        if self.metrics is not None:
            self.metrics.auth_service_latency.observe(time.perf_counter() - started)
        decided = 200 <= status < 300
        # Authelia answers a browser with 302 to its portal instead of 401: same meaning.
        denied = status in (401, 403) or (300 <= status < 400 and "Location" in headers)
        cookies = self._cookies(headers) if decided or denied else ()
        if cookies:
            keep_more(request, cookies)
            if cookie:
                self.renewals.renewed(cookie, cookies, admitted=decided)
        if decided:
            try:
                identity = make_identity(
                    _one(headers, self.email_header),
                    _one(headers, self.name_header),
                    _one(headers, self.groups_header),
                )
            except InvalidIdentity as exc:
                raise BadIdentity(exc.reason) from exc
            if key is not None and self.cache is not None and not cookies:
                self.cache.put(key, identity)
            return identity
        if denied:
            passed = {name: headers[name] for name in _PASS_ON if name in headers}
            return Denied(
                status=403 if status == 403 else 401,
                reason=f"auth service answered {status}",
                headers=passed,
            )
        self._count_error("status")
        raise AuthServiceUnavailable(f"auth service answered {status}")

    def _refuse_too_large(self) -> IdentityTooLarge:
        """Count, log and describe an answer over the header limit (its values stay unread:
        they may hold a session cookie)."""
        self._too_large += 1
        self._too_large_at = self.clock()
        self._count_error("too_large")
        logs.get().warning("auth_answer_too_large", limit_bytes=AUTH_MAX_FIELD_BYTES)
        return IdentityTooLarge(
            f"the auth service's answer has a header over {AUTH_MAX_FIELD_BYTES} bytes, "
            "more than the proxy reads (an identity in too many groups?)"
        )

    def _cookies(self, headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
        """The answer's ``Set-Cookie`` values that go to the client byte for byte.

        One that is not (bytes that are not UTF-8, which aiohttp could only mangle) is left
        out and logged by its count, never its value: a session cookie is a credential.
        """
        values = headers.getall("Set-Cookie", [])
        kept = tuple(value for value in values if _exact(value))
        if len(kept) != len(values):
            logs.get().warning("auth_cookie_dropped", count=len(values) - len(kept))
        return kept

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_service_errors.labels(kind).inc()


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read ``response``'s body to its end if that is within :data:`MAX_ANSWER_BODY`, else
    stop there (leaving the rest unread closes the connection on release)."""
    left = MAX_ANSWER_BODY
    while left > 0:
        chunk = await response.content.read(left)
        if not chunk:
            return
        left -= len(chunk)


def _too_large(exc: BaseException) -> bool:
    """Whether aiohttp refused the answer for a header line over ``max_field_size``: its
    parser's ``LineTooLong``, which the client re-raises wrapped (as the cause's cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, LineTooLong):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _one(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """The single value of an identity header; two copies are ambiguous, never "first wins"."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise BadIdentity(f"auth service sent {len(values)} {name} headers")
    return values[0] if values else None
