"""Identity from a signed JWT placed by a front proxy or an OIDC provider (``auth=jwt``).

Cloudflare Access, Google IAP and Pomerium put a signed assertion in a request header; OIDC
providers such as Clerk keep a session JWT in a cookie. Either way the token is only
trusted after PyJWT has checked, in this order: an accepted asymmetric ``alg`` (never
``none`` or HMAC, so a token "signed" with the public key as an HMAC secret is refused
before any key is looked at), the signature with the issuer's key, ``exp``/``nbf`` with
``jwt_leeway_s``, and the required ``iss`` and ``aud``. Only then are the identity claims read
and validated through :func:`proxy.identity.make_identity`.

Every refusal is a :class:`Denied` (401) whose reason is logged; the token itself never is.
A *valid* token whose email (or name, or groups) claim is unusable is also a 401, not a 502:
the client presented a credential that cannot identify a user here, and the fix belongs to
the IdP's claim configuration, not to an outage. Not being able to decide at all (no keys
could ever be fetched, or an unknown key while the JWKS is failing) raises
``AuthServiceUnavailable`` (503), so an IdP outage never reads as "you are logged out".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options

from proxy.auth.base import Denied
from proxy.auth.jwks import JwksCache, JwksError, NotYet, PublicKey, load_pem_key
from proxy.errors import AuthServiceUnavailable
from proxy.headers import Forwarded
from proxy.identity import OWS, Identity, InvalidIdentity, make_identity
from proxy.settings import Settings

log = structlog.get_logger(__name__)

# Real assertions are 1-3 KB; a bigger "token" is refused before any parsing.
MAX_TOKEN_BYTES = 16 * 1024
_REQUIRED_CLAIMS = ["exp", "iss", "aud"]
# Every claim check, without the signature: what a token must pass before its unknown kid
# may make the proxy refetch the JWKS (PyJWT turns the claim checks off with the signature's
# unless they are asked for).
_SIGNED: Options = {"require": _REQUIRED_CLAIMS, "enforce_minimum_key_length": True}
_UNSIGNED: Options = {
    **_SIGNED,
    "verify_signature": False,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": True,
    "verify_iss": True,
}


class JwtAuthenticator:
    """Verifies the JWT at ``settings.jwt_source``; see the module docstring.

    Status for the metrics (JWKS mode; ``None``/0 with a PEM key file):
    ``jwks_last_success`` (Unix time of the latest good fetch), ``jwks_fetches`` and
    ``jwks_fetch_failures`` (counters since start), ``jwks_keys`` (keys held now).
    """

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        if settings.jwt_source is None or settings.jwt_issuer is None:
            raise ValueError("JwtAuthenticator needs jwt_source and jwt_issuer")  # settings check
        kind, _, name = settings.jwt_source.partition(":")
        self._from_cookie = kind == "cookie"
        self._source_name = name
        self._source_label = f"{kind} {name}"
        self._issuer = settings.jwt_issuer
        self._audience = list(settings.jwt_audience)
        self._algorithms = list(settings.jwt_algorithms)
        self._leeway = settings.jwt_leeway_s
        self._email_claim = settings.jwt_email_claim
        self._name_claim = settings.jwt_name_claim
        self._groups_claim = settings.jwt_groups_claim
        self._require_email_verified = settings.jwt_require_email_verified
        self._key_file = settings.jwt_key_file
        self._pem_key: PublicKey | None = None
        self._pem_algorithms: list[str] = []
        self._jwks: JwksCache | None = None
        if settings.jwt_jwks_url is not None:
            self._jwks = JwksCache(
                settings.jwt_jwks_url,
                session,
                algorithms=settings.jwt_algorithms,
                timeout_s=settings.auth_timeout_s,
                refresh_s=settings.jwt_jwks_refresh_s,
                min_refetch_s=settings.jwt_jwks_min_refetch_s,
                max_wait_s=settings.auth_timeout_s,
            )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the JWKS (an outage is reported, not fatal) or load the PEM key (fatal)."""
        if self._jwks is not None:
            await self._jwks.start()
            return
        assert self._key_file is not None  # settings guarantee exactly one key source
        key = load_pem_key(self._key_file)
        fitting = algorithms_for_key(key, self._algorithms)
        if not fitting:
            raise JwksError(
                f"{self._key_file}: a {type(key).__name__} cannot verify any of "
                f"the accepted algorithms {', '.join(self._algorithms)}"
            )
        self._pem_key, self._pem_algorithms = key, fitting

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    def problem(self) -> str | None:
        if self._jwks is not None:
            return self._jwks.problem()
        return None if self._pem_key is not None else "JWT public key not loaded"

    def notices(self) -> list[str]:
        return []

    # --- status for the metrics -----------------------------------------------------------------

    @property
    def jwks_last_success(self) -> float | None:
        return None if self._jwks is None else self._jwks.last_success

    @property
    def jwks_fetches(self) -> int:
        return 0 if self._jwks is None else self._jwks.fetches

    @property
    def jwks_fetch_failures(self) -> int:
        return 0 if self._jwks is None else self._jwks.fetch_failures

    @property
    def jwks_keys(self) -> int:
        return 0 if self._jwks is None else self._jwks.key_count

    # --- per request ---------------------------------------------------------------------------

    async def authenticate(
        self, request: web.Request, forwarded: Forwarded | None = None
    ) -> Identity | Denied:
        # ``forwarded`` is not needed: a signed token says who it is, wherever it came from.
        outcome = await self._decide(request)
        if isinstance(outcome, Denied):
            log.info("jwt_denied", reason=outcome.reason, source=self._source_label)
        return outcome

    async def _decide(self, request: web.Request) -> Identity | Denied:
        token = self._token(request)
        if isinstance(token, Denied):
            return token
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            return _deny("token is not a well-formed JWT")
        alg = header.get("alg")
        # Checked before any key is chosen: 'none' and HMAC never get near a key.
        if not isinstance(alg, str) or alg not in self._algorithms:
            return _deny(f"alg {_short(alg)} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return _deny("kid is not a string")
        key = await self._key(token, kid, alg)
        if isinstance(key, Denied):
            return key
        return self._verified(token, key)

    def _verified(self, token: str, key: PyJWK | PublicKey) -> Identity | Denied:
        """The identity of a token whose signature ``key`` verifies, or why not."""
        return self._checked(token, key, _SIGNED)

    def _refused_unsigned(self, token: str) -> Denied | None:
        """Why the token fails a check other than its signature's, or None. Never an
        identity: nothing here has verified who signed it."""
        outcome = self._checked(token, "", _UNSIGNED)
        return outcome if isinstance(outcome, Denied) else None

    def _checked(
        self, token: str, key: PyJWK | PublicKey | str, options: Options
    ) -> Identity | Denied:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._pem_algorithms if self._pem_key is not None else self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=options,
            )
        except PyJWTError as exc:
            return _deny(rejection_reason(exc))
        try:
            return identity_from_claims(
                claims,
                email_claim=self._email_claim,
                name_claim=self._name_claim,
                groups_claim=self._groups_claim,
                require_email_verified=self._require_email_verified,
            )
        except InvalidIdentity as exc:
            return _deny(f"valid token, unusable identity: {exc.reason}")

    def _token(self, request: web.Request) -> str | Denied:
        if self._from_cookie:
            # Several cookies of the same name (e.g. one per path) make "which one" a guess.
            values = [v for k, v in _cookie_pairs(request) if k == self._source_name]
        else:
            values = request.headers.getall(self._source_name, [])
        if not values:
            return _deny(f"no token in {self._source_label}")
        if len(values) > 1:
            return _deny(f"several tokens in {self._source_label}")
        token = values[0].strip(OWS)  # ASCII blanks only: nothing Unicode is trimmed
        if not token:
            return _deny(f"no token in {self._source_label}")
        if len(token) > MAX_TOKEN_BYTES:
            return _deny("token too large")
        # A compact JWT is base64url and dots. Header bytes that are not UTF-8 arrive as lone
        # surrogates, which PyJWT cannot encode (UnicodeEncodeError, no PyJWTError): refused
        # here, with any other character no JWT has.
        if not token.isascii():
            return _deny("token is not a well-formed JWT")
        return token

    async def _key(self, token: str, kid: str | None, alg: str) -> PyJWK | PublicKey | Denied:
        if self._pem_key is not None:
            if alg not in self._pem_algorithms:
                return _deny(f"alg {alg} does not fit the configured key")
            return self._pem_key
        if self._jwks is None:  # start() failed or was not called: fail closed
            raise AuthServiceUnavailable("JWT verification keys not loaded")
        if not self._jwks.knows(kid):
            # An unknown kid may spend the JWKS refetch (one per window, for everyone): only a
            # token that passes every check but its signature's may. Without this, anyone's
            # junk token spent it just before a key rotation, and the new key's tokens were
            # refused until the window ended. The claims decide nothing else: unsigned.
            refused = self._refused_unsigned(token)
            if refused is not None:
                return _deny(
                    f"unknown signing key kid={_short(kid)}, not refetched: {refused.reason}"
                )
        try:
            key = await self._jwks.key_for(kid, alg)
        except NotYet as exc:  # a key published a moment ago is not refused: "cannot tell yet"
            raise AuthServiceUnavailable(
                f"token names an unknown key kid={_short(kid)}: {exc}"
            ) from None
        if key is not None:
            return key
        if self._jwks.key_count == 0:
            raise AuthServiceUnavailable("no JWKS keys: the identity provider is unreachable")
        if self._jwks.failing:
            # Perhaps a key rotated in during the outage: "cannot tell" is honest, "logged
            # out" would send the browser round the login loop for nothing.
            raise AuthServiceUnavailable("token names an unknown key while the JWKS is failing")
        if kid is None:
            return _deny("token has no kid and the JWKS holds several keys")
        return _deny(f"unknown signing key kid={_short(kid)}")


def _deny(reason: str) -> Denied:
    return Denied(401, reason)


def _short(value: object) -> str:
    """Attacker-controlled values shown in reasons: repr'd and cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cookie_pairs(request: web.Request) -> list[tuple[str, str]]:
    """Every name=value pair of every Cookie header (``request.cookies`` keeps only one)."""
    pairs = []
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            name, sep, value = part.strip(OWS).partition("=")
            if sep:
                pairs.append((name.strip(OWS), value.strip(OWS).strip('"')))
    return pairs


def algorithms_for_key(key: PublicKey, accepted: list[str]) -> list[str]:
    """The accepted algorithms a PEM key can verify, so its type pins the algorithm family."""
    if isinstance(key, rsa.RSAPublicKey):
        fitting = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        fitting = {"secp256r1": {"ES256"}, "secp384r1": {"ES384"}, "secp521r1": {"ES512"}}.get(
            key.curve.name, set()
        )
    elif isinstance(key, ed25519.Ed25519PublicKey):
        fitting = {"EdDSA"}
    else:  # pragma: no cover - load_pem_key admits only the three types above
        fitting = set()
    return [alg for alg in accepted if alg in fitting]


# PyJWT rejections to loggable reasons, most specific class first (subclasses before bases).
_REASONS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ExpiredSignatureError, "token expired"),
    (ImmatureSignatureError, "token not yet valid (nbf)"),
    (InvalidIssuedAtError, "token issued in the future (iat)"),
    (InvalidIssuerError, "wrong issuer"),
    (InvalidAudienceError, "wrong audience"),
    (InvalidAlgorithmError, "alg does not match the signing key"),
    (InvalidSignatureError, "bad signature"),
    (InvalidKeyError, "signing key unusable for this token"),
    (DecodeError, "token is not a well-formed JWT"),
)


def rejection_reason(exc: PyJWTError) -> str:
    """A short, loggable reason for a PyJWT rejection."""
    if isinstance(exc, MissingRequiredClaimError):
        return f"required claim {exc.claim!r} missing"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"invalid token ({type(exc).__name__})"


def identity_from_claims(
    claims: Mapping[str, Any],
    *,
    email_claim: str,
    name_claim: str,
    groups_claim: str,
    require_email_verified: bool,
) -> Identity:
    """Verified claims to an :class:`Identity`; raises :class:`InvalidIdentity` when unusable.

    A claim that is present but of the wrong type is refused rather than ignored: it means
    the IdP is configured differently from what the proxy was told.
    """
    email = claims.get(email_claim)
    if email is not None and not isinstance(email, str):
        raise InvalidIdentity(f"claim {email_claim!r} is not a string")
    if require_email_verified and claims.get("email_verified") is not True:
        raise InvalidIdentity("email_verified is not true")
    name = claims.get(name_claim)
    if name is not None and not isinstance(name, str):
        raise InvalidIdentity(f"claim {name_claim!r} is not a string")
    groups = claims.get(groups_claim)
    if groups is not None and not isinstance(groups, str | list):
        raise InvalidIdentity(f"claim {groups_claim!r} is neither a list nor a comma string")
    return make_identity(email, name, groups)
