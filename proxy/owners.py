"""Whose is an OpenWebUI credential? OpenWebUI is asked, and its answer's email is compared.

A credential is a session JWT or an API key (``sk-...``), from an HTTP request
(``proxy/credentials.py``) or inside Socket.IO messages (``proxy/socketio.py``). OpenWebUI
0.12.4 answers whose it is in two places, asked in this order with the credential as
``Authorization: Bearer``:

1. ``GET /api/v1/auths/``: a session JWT's user (and, with the verified identity's email
   header sent along, ``401 User mismatch`` for someone else's JWT, from 0.6.14 on);
2. when that answers 403 ("A human session is required": API keys and non-session JWTs),
   ``GET /api/v1/users/user/status``: the caller's account, for any credential
   ``get_verified_user`` accepts. It answers only while OpenWebUI's user status feature is
   on (``ENABLE_USER_STATUS``, the default) and, with API-key endpoint restrictions, only
   if ``/api/v1/users/user/status`` is among the allowed endpoints; otherwise nobody can
   be told whose a key is, and the key is refused (fail closed).

The answer's ``email`` decides, never the status alone (releases before 0.6.14 answer with
another user's account whatever header came along), compared with ASCII case folding only
(:func:`same_email`). Named owners are cached per (credential, email) for ``ttl_s``, keyed
by an injective BLAKE2b-256 digest (no credential is kept), at most ``size`` of them; a credential's
owner never changes, and OpenWebUI still checks the credential itself on every request.
Concurrent questions about one credential share one lookup. What OpenWebUI refuses is
returned as its answer (:class:`Refused`), never cached. A credential that is not ASCII
(read from the bytes as OpenWebUI reads them: ``proxy/credentials.py``) is refused without
asking: OpenWebUI issues none (JWTs, ``sk-`` keys), and the question could not carry its
bytes as they came (aiohttp's client sends text as UTF-8, and drops lone surrogates).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b

import aiohttp
from multidict import CIMultiDict

from proxy.auth.forward import DecisionCache
from proxy.errors import UpstreamTimeout, UpstreamUnavailable, drop_frames
from proxy.headers import HeaderPolicy, identity_headers
from proxy.identity import Identity, InvalidIdentity, make_identity
from proxy.upstream import SIDE_ANSWER_MAX_BYTES, Upstream, read_capped
from proxy.upstream_errors import Stage, translate

SESSION_PATH = "/api/v1/auths/"
STATUS_PATH = "/api/v1/users/user/status"
# Marks the proxy's own questions in OpenWebUI's logs (and lets test fakes tell them apart).
USER_AGENT = "owui-gate-credential-check"


@dataclass(frozen=True, slots=True)
class Refused:
    """OpenWebUI did not name an owner: its answer, to pass on as it is (``own`` false: the
    proxy's own refusal, because OpenWebUI would not say whose the credential is)."""

    status: int
    body: bytes
    content_type: str
    own: bool = False


def same_email(owner: str, email: str) -> bool:
    """Whether OpenWebUI's ``owner`` is the verified ``email`` (validated, lower-case ASCII).

    OpenWebUI stores emails lower-cased, but an account made another way may not be; only
    ASCII case is folded, and only on an ASCII owner: ``str.lower()`` maps some non-ASCII
    letters onto ASCII ones (KELVIN SIGN U+212A to "k"), which would make another account's
    ``\\u212aate@school.edu`` Kate's.
    """
    return bool(owner) and owner.isascii() and owner.lower() == email


def owner_in(body: bytes) -> str | None:
    """The account email in OpenWebUI's answer (``{"email": ...}``), if it names one."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        return None
    owner = answer.get("email") if isinstance(answer, dict) else None
    return owner if isinstance(owner, str) and owner else None


def cache_key(credential: str, email: str) -> bytes:
    """The cache key of (credential, email): injective, so no two pairs share an answer.

    The text is the credential's length in code points, a colon, the credential, the email
    (decodable one way only), encoded with ``surrogatepass`` (injective on every ``str``,
    lone surrogates included); BLAKE2b-256 of it, CPython's own (about half the instructions
    of OpenSSL's SHA-256 for one short text), is as collision-resistant.
    """
    text = f"{len(credential)}:{credential}{email}"
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32).digest()


# The most of OpenWebUI's answer that is read: a longer one is cut, so it names nobody.
_MAX_ANSWER_BYTES = SIDE_ANSWER_MAX_BYTES

# The answer to a credential that is not ASCII (see the module docstring).
NOT_ISSUED = Refused(
    401,
    b"a credential that is not ASCII: OpenWebUI issues none",
    "text/plain",
    own=True,
)


class Owners:
    """Asks OpenWebUI whose a credential is; caches the owners it names."""

    def __init__(
        self,
        upstream: Upstream,
        policy: HeaderPolicy,
        ttl_s: float = 60,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self.cache = DecisionCache(ttl_s, size, clock)
        self._asking: dict[bytes, asyncio.Task[Identity | Refused]] = {}

    def cached(self, credential: str, identity: Identity) -> bool:
        """Whether ``identity`` is already known to own ``credential`` (no question asked):
        the path almost every request takes, without a coroutine."""
        email = identity.email
        key = cache_key(credential, email)
        owner = self.cache.get(key)
        return owner is not None and owner.email == email

    async def owner(self, credential: str, identity: Identity | None = None) -> Identity | Refused:
        """The credential's owner, asked with ``identity``'s headers when given (so OpenWebUI
        can refuse someone else's session JWT outright); raises ``UpstreamError`` if
        OpenWebUI cannot be asked."""
        if not credential.isascii():
            return NOT_ISSUED  # never asked about as other bytes than the ones that came
        key = cache_key(credential, identity.email if identity is not None else "")
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._asking.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(credential, identity))
            self._asking[key] = task

            def done(finished: asyncio.Task[Identity | Refused]) -> None:
                # Cached as the lookup ends, before its askers resume: a request arriving
                # in between finds the answer, not an empty cache and no lookup running.
                self._asking.pop(key, None)
                if finished.cancelled() or finished.exception() is not None:
                    return  # the exception is retrieved: its askers may all have left
                answer = finished.result()
                if isinstance(answer, Identity):
                    self.cache.put(key, answer)

            task.add_done_callback(done)
        # Shielded: one asker's cancellation (its client left) must not fail the others.
        return await asyncio.shield(task)

    async def belongs(self, credential: str, identity: Identity) -> bool:
        """Whether OpenWebUI names ``identity`` as the credential's owner (False when it
        names someone else, refuses the credential, or cannot be asked)."""
        try:
            answer = await self.owner(credential, identity)
        except (UpstreamTimeout, UpstreamUnavailable):
            return False
        return isinstance(answer, Identity) and answer.email == identity.email

    async def _ask(self, credential: str, identity: Identity | None) -> Identity | Refused:
        headers: CIMultiDict[str] = CIMultiDict(
            identity_headers(identity, self.policy) if identity is not None else ()
        )
        headers["Authorization"] = f"Bearer {credential}"
        headers["Accept"] = "application/json"
        headers["Accept-Encoding"] = "identity"
        headers["User-Agent"] = USER_AGENT
        status, body, content_type = await self._get(SESSION_PATH, headers)
        if status == 403:  # not a human session: an API key, or another kind of JWT
            status, body, content_type = await self._get(STATUS_PATH, headers)
            if status == 403:
                reason = (
                    "OpenWebUI will not say whose this credential is: "
                    f"GET {STATUS_PATH} is refused (user status off, or not among the "
                    "endpoints API keys may use)"
                )
                return Refused(403, reason.encode(), "text/plain", own=True)
        if status != 200:
            return Refused(status, body, content_type)
        owner = owner_in(body)
        if owner is None:
            return Refused(502, b"OpenWebUI's answer named no account", "text/plain", own=True)
        if identity is not None and same_email(owner, identity.email):
            return identity
        try:
            # As an identity (validated like any): the access rules can then judge the owner
            # of an API key. A non-ASCII owner is refused there, never folded into another.
            return make_identity(owner)
        except InvalidIdentity:
            return Refused(
                403, b"the credential's account has no usable email", "text/plain", own=True
            )

    async def _get(self, path: str, headers: CIMultiDict[str]) -> tuple[int, bytes, str]:
        upstream = self.upstream
        try:
            async with upstream.session.get(
                upstream.base + path,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=upstream.connect_timeout_s + upstream.response_timeout_s
                ),
            ) as response:
                body = await read_capped(response.content, _MAX_ANSWER_BYTES)
                return response.status, body, response.content_type
        except (TimeoutError, aiohttp.ClientError) as exc:
            drop_frames(exc)
            # Answered as the upstream-failure table says: a timeout is a 504.
            raise translate(exc, Stage.SIDE_REQUEST) from exc
