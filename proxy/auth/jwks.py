"""Verification keys for signed JWTs: a JWKS fetched and cached, or one PEM public key.

The JWKS cache is what stands between the proxy and its identity provider:

- fetched once at start, then refreshed in the background every ``refresh_s``;
- a token whose ``kid`` is unknown triggers one refetch (key rotation without restart), but
  at most one per ``min_refetch_s`` whatever the reason, so a flood of junk ``kid`` values
  cannot turn the proxy into a hammer against the provider; concurrent requests for the
  same unknown ``kid`` share that one fetch;
- an unknown ``kid`` is refused only on the word of a fetch that started after its request
  arrived: inside the window the request waits for the window to end (at most
  ``max_wait_s``; longer is :class:`NotYet`, "cannot tell yet"), so whoever spends the
  window, a key the provider publishes a moment later is never refused for it;
- a failed fetch never discards the keys already held: an outage of the provider keeps the
  proxy serving with the last good keys, and says so through :meth:`JwksCache.problem` and
  the status attributes the metrics read (``last_success``, ``fetches``, ``fetch_failures``).

Only asymmetric keys are kept, and only those whose algorithm is accepted: an ``oct``
(HMAC) key published by mistake, or an encryption key, can never verify a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK

log = structlog.get_logger(__name__)

# A JWKS is a few kilobytes; anything much larger is not one.
MAX_JWKS_BYTES = 1024 * 1024

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class NotYet(Exception):
    """An unknown ``kid``, and no fetch newer than its request can be made in time."""

    def __init__(self, after_s: float) -> None:
        super().__init__(f"the JWKS may be refetched in {after_s:.1f} s")
        self.after_s = after_s


class JwksError(Exception):
    """A JWKS could not be fetched or parsed. The message is safe to log."""


# The JWK members that make the key itself (RFC 7638's thumbprint members): two entries that
# agree on these are the same key, whatever else they say.
_KEY_MEMBERS = ("kty", "crv", "n", "e", "x", "y")

Keys = dict[str | None, dict[str, PyJWK]]


def parse_jwks(document: Any, algorithms: Collection[str]) -> Keys:
    """The usable signing keys of a JWKS document, by ``kid`` (``None`` for a key without one),
    then by algorithm.

    A ``kid`` may name one key per algorithm (the same RSA key published for RS256 and
    PS256): the token's ``alg``, covered by its signature, says which. Two *different* keys
    published under the same ``kid`` and algorithm make "which one" a guess: neither is
    used (``jwks_duplicate_kid`` is logged), so tokens naming them are refused, never
    checked against a key picked by the order of the document.

    Raises :class:`JwksError` when nothing usable is left, so that a broken document never
    replaces a good key set.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWKS document (no 'keys' list)")
    keys: Keys = {}
    material: dict[tuple[str | None, str], dict[str, Any]] = {}
    ambiguous: set[tuple[str | None, str]] = set()
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        if entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue  # symmetric or encryption keys must never verify a signature
        if not isinstance(entry.get("kid", ""), str):
            continue
        try:
            key = PyJWK(entry)
        except Exception as exc:  # PyJWT raises many kinds for odd entries
            # A key we cannot use; the others may still be fine.
            log.warning("jwks_key_skipped", kid=entry.get("kid"), error=type(exc).__name__)
            continue
        if key.algorithm_name not in algorithms:
            continue
        slot = (key.key_id, key.algorithm_name)
        members = {name: entry.get(name) for name in _KEY_MEMBERS}
        if slot in material:
            if material[slot] != members:
                ambiguous.add(slot)
            continue  # the same key listed twice: one is enough
        material[slot] = members
        keys.setdefault(key.key_id, {})[key.algorithm_name] = key
    for kid, alg in sorted(ambiguous, key=str):
        log.warning("jwks_duplicate_kid", kid=kid, alg=alg, used=False)
        del keys[kid][alg]
        if not keys[kid]:
            del keys[kid]
    if not keys:
        raise JwksError("the JWKS holds no usable signing key for the accepted algorithms")
    return keys


def load_pem_key(path: Path) -> PublicKey:
    """Read a PEM public key; raises :class:`JwksError` for anything else (e.g. a private key)."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise JwksError(f"{path}: not a readable PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise JwksError(f"{path}: unsupported public key type {type(key).__name__}")
    return key


class JwksCache:
    """The JWKS of one issuer, kept fresh. Status attributes are read by the metrics."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        algorithms: Collection[str],
        timeout_s: float,
        refresh_s: float,
        min_refetch_s: float,
        max_wait_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session
        self._algorithms = frozenset(algorithms)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._max_wait_s = max_wait_s
        self._monotonic = monotonic
        self._keys: Keys = {}
        self._lock = asyncio.Lock()
        self._last_attempt: float | None = None  # monotonic time the latest fetch started
        self._last_error: str | None = None  # None once the latest fetch succeeded
        self._refresher: asyncio.Task[None] | None = None
        # Status for /metrics: wall-clock time of the latest successful fetch and counters.
        self.last_success: float | None = None
        self.fetches = 0
        self.fetch_failures = 0

    @property
    def key_count(self) -> int:
        return sum(len(by_alg) for by_alg in self._keys.values())

    async def start(self) -> None:
        """Fetch once, then keep refreshing in the background.

        A failure here does not stop the proxy from starting: it is logged and reported by
        :meth:`problem` (so /readyz stays red) and the background task keeps trying.
        """
        await self._fetch()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    def problem(self) -> str | None:
        if not self._keys:
            return f"no JWKS keys yet: {self._last_error or 'not fetched'}"
        if self._last_error is not None:
            held = len(self._keys)
            return f"JWKS refresh failing ({self._last_error}); serving {held} cached key(s)"
        return None

    @property
    def failing(self) -> bool:
        """True when the latest fetch failed (the cached keys may be out of date)."""
        return self._last_error is not None

    async def key_for(self, kid: str | None, alg: str | None = None) -> PyJWK | None:
        """The key a token names, refetching the JWKS once (rate-limited) when it is unknown.

        A token without ``kid`` is accepted only while the issuer publishes exactly one key:
        otherwise which key it means would be a guess. Of the keys a ``kid`` names, the one
        for ``alg``; a known ``kid`` without a key for ``alg`` answers one of its keys, which
        the verification then refuses as a mismatch (no refetch: the ``kid`` is known).
        Raises :class:`NotYet` when only a fetch further away than ``max_wait_s`` could tell.
        """
        by_alg = self._lookup(kid)
        if by_alg is None:
            by_alg = await self._refetched(kid)
        if by_alg is None:
            return None
        if alg is not None and alg in by_alg:
            return by_alg[alg]
        return next(iter(by_alg.values()))

    async def _refetched(self, kid: str | None) -> dict[str, PyJWK] | None:
        """``kid``'s keys as told by a fetch that started after this call did.

        The one refetch per window is kept, but nobody's request is refused on the word of a
        fetch older than itself: a junk token that spends the window just before the provider
        publishes a new key would otherwise have the new key's tokens refused until the window
        ended. Waiters queue on the lock, so one fetch answers every request that arrived
        before it started; those that arrived later wait for the next window.
        """
        arrived = self._monotonic()
        async with self._lock:
            by_alg = self._lookup(kid)  # a fetch while this request queued may have told
            last = self._last_attempt
            if by_alg is not None or (last is not None and last >= arrived):
                return by_alg
            wait_s = 0.0 if last is None else last + self._min_refetch_s - self._monotonic()
            if wait_s > 0:
                if wait_s > self._max_wait_s:
                    raise NotYet(wait_s)
                await asyncio.sleep(wait_s)
            await self._fetch()
            return self._lookup(kid)

    def knows(self, kid: str | None) -> bool:
        """Whether :meth:`key_for` would answer ``kid`` without a fetch."""
        return self._lookup(kid) is not None

    def _lookup(self, kid: str | None) -> dict[str, PyJWK] | None:
        if kid is None:
            if self.key_count != 1:
                return None
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh_forever(self) -> None:
        while True:
            # After a failure, try again sooner than the regular period, but never faster
            # than the refetch rate limit allows.
            delay = self._refresh_s
            if self._last_error is not None:
                delay = min(self._refresh_s, self._min_refetch_s)
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._fetch()
            except Exception:  # the refresher must outlive any surprise; it is the boundary
                log.exception("jwks_refresh_crashed", url=self._url)

    async def _fetch(self) -> None:
        """One fetch. On failure the keys held so far are kept; nothing is raised."""
        self._last_attempt = self._monotonic()
        self.fetches += 1
        try:
            keys = parse_jwks(await self._download(), self._algorithms)
        except JwksError as exc:
            self.fetch_failures += 1
            self._last_error = str(exc)
            log.warning(
                "jwks_fetch_failed", url=self._url, error=str(exc), keys_kept=len(self._keys)
            )
            return
        if set(keys) != set(self._keys):
            log.info("jwks_keys_changed", url=self._url, kids=sorted(str(k) for k in keys))
        self._keys = keys
        self._last_error = None
        self.last_success = time.time()

    async def _download(self) -> Any:
        """GET the JWKS; every transport or format problem becomes :class:`JwksError`."""
        try:
            async with self._session.get(
                self._url,
                timeout=self._timeout,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise JwksError(f"HTTP {response.status}")
                body = await _read_limited(response, MAX_JWKS_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"cannot fetch: {type(exc).__name__}") from exc
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            # RecursionError: a document nested deeper than the parser goes, no ValueError.
            raise JwksError("response is not JSON") from exc


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise JwksError("response larger than a JWKS can be")
    return bytes(body)
