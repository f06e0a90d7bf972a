"""JWT identity (``auth=jwt``): locally minted RS256/ES256 tokens against an in-process JWKS.

The authenticator runs behind a tiny real aiohttp app whose handler answers with what
``authenticate`` decided, so every request goes over a socket the way the proxy's would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning
from structlog.testing import capture_logs

from proxy.auth.base import Denied
from proxy.auth.jwks import JwksError, NotYet, parse_jwks
from proxy.auth.jwt import JwtAuthenticator
from proxy.errors import AuthServiceUnavailable
from proxy.settings import Settings
from tests.proxy.jwks_cache import answering, started_cache

ISSUER = "https://idp.test"
AUDIENCE = "owui-gate-test"
CF_HEADER = "Cf-Access-Jwt-Assertion"


# --- keys, tokens and a JWKS endpoint -------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.public, as_dict=True)
        data.update(kid=self.kid, alg=self.alg, use="sig")
        return data

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def mint(self, claims: dict[str, Any] | None = None, alg: str | None = None, **header) -> str:
        headers = {"kid": self.kid, **header}
        return jwt.encode(
            claims_with(claims), self.private, algorithm=alg or self.alg, headers=headers
        )


@dataclass(frozen=True)
class Keys:
    rsa: SigningKey  # published as kid rsa-1
    ec: SigningKey  # published as kid ec-1
    impostor: SigningKey  # claims kid rsa-1, but is another key
    rotated: SigningKey  # kid rsa-2, published only after a "rotation"
    weak: SigningKey  # a 1024-bit RSA key, published as kid weak-1


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new_rsa(kid: str) -> SigningKey:
        return SigningKey(
            kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )

    return Keys(
        rsa=new_rsa("rsa-1"),
        ec=SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        impostor=new_rsa("rsa-1"),
        rotated=new_rsa("rsa-2"),
        # A deliberately weak key: the row checks that it is refused.
        weak=SigningKey(
            "weak-1",
            "RS256",
            rsa.generate_private_key(65537, key_size=1024),  # noqa: S505
        ),
    )


def claims_with(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A claim set the test settings accept; an override of ``None`` removes the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "email": "Ada@Example.edu",
        "name": "Ada Lovelace",
        "groups": ["students", "cs101"],
    }
    for name, value in (overrides or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = None) -> str:
    """A token assembled by hand, as an attacker would (PyJWT refuses to make these):
    HS256 with ``secret`` as the HMAC key, or no signature at all."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b""
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class JwksEndpoint:
    """Serves ``keys`` (plus ``extra`` raw entries) at /jwks; a ``status`` other than 200
    simulates an outage. ``fetches`` counts every request it got."""

    keys: list[SigningKey]
    extra: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    fetches: int = 0

    def app(self) -> web.Application:
        async def jwks(_: web.Request) -> web.Response:
            self.fetches += 1
            if self.status != 200:
                return web.Response(status=self.status, text="down")
            return web.json_response({"keys": [k.jwk() for k in self.keys] + self.extra})

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        return app


# --- the authenticator behind a real server ------------------------------------------------------


@dataclass
class Gate:
    client: Any
    auth: JwtAuthenticator

    async def ask(
        self, token: str | list[str] | None, *, header: str = CF_HEADER
    ) -> tuple[int, dict[str, Any]]:
        tokens = [] if token is None else [token] if isinstance(token, str) else token
        headers = [(header, t) for t in tokens]
        async with self.client.get("/", headers=headers) as response:
            return response.status, await response.json()


Make = Callable[..., Awaitable[Gate]]


@pytest.fixture
async def make_gate(aiohttp_client, aiohttp_server) -> AsyncIterator[Make]:
    """Build a JwtAuthenticator from settings (JWKS endpoint or PEM file) and serve it."""
    opened: list[tuple[JwtAuthenticator, aiohttp.ClientSession]] = []

    async def make(jwks: JwksEndpoint | None = None, **overrides: Any) -> Gate:
        values: dict[str, Any] = {
            "upstream": "http://127.0.0.1:9",
            "auth": "jwt",
            "jwt_source": f"header:{CF_HEADER}",
            "jwt_issuer": ISSUER,
            "jwt_audience": (AUDIENCE,),
        }
        if jwks is not None:
            server = await aiohttp_server(jwks.app())
            values["jwt_jwks_url"] = str(server.make_url("/jwks"))
        values.update(overrides)
        session = aiohttp.ClientSession()
        auth = JwtAuthenticator(Settings(**values), session)
        opened.append((auth, session))
        await auth.start()

        async def handler(request: web.Request) -> web.Response:
            try:
                outcome = await auth.authenticate(request)
            except AuthServiceUnavailable as exc:
                return web.json_response({"unavailable": exc.reason}, status=503)
            if isinstance(outcome, Denied):
                return web.json_response({"denied": outcome.reason}, status=outcome.status)
            return web.json_response(
                {"email": outcome.email, "name": outcome.name, "groups": list(outcome.groups)}
            )

        app = web.Application()
        app.router.add_get("/", handler)
        # Room for the oversized-token row: the proxy's own header limit is not what is tested.
        client = await aiohttp_client(await aiohttp_server(app, max_field_size=64 * 1024))
        return Gate(client, auth)

    yield make
    for auth, session in opened:
        await auth.close()
        await session.close()


def pem_file(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / f"{key.kid}.pem"
    path.write_bytes(key.public_pem())
    return path


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a background effect; generous, since the test machine is shared and slow."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- every rejection, one table --------------------------------------------------------------

Token = Callable[[Keys], str | list[str] | None]
NOW = int(time.time())


def _tampered(k: Keys) -> str:
    head, _, sig = k.rsa.mint().split(".")
    other = k.rsa.mint({"email": "eve@example.edu"}).split(".")[1]
    return f"{head}.{other}.{sig}"


def _mint_weak(k: Keys) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # minting is not under test
        return k.weak.mint()


REJECTIONS = [
    # (token, expected reason fragment, settings overrides, key mode)
    pytest.param(lambda k: None, "no token in header", {}, "jwks", id="missing-token"),
    pytest.param(lambda k: "", "no token in header", {}, "jwks", id="empty-token"),
    pytest.param(
        lambda k: [k.rsa.mint(), k.rsa.mint()], "several tokens", {}, "jwks", id="two-tokens"
    ),
    pytest.param(lambda k: "not.a.jwt", "well-formed", {}, "jwks", id="not-a-jwt"),
    pytest.param(
        lambda k: k.rsa.mint({"pad": "x" * 20_000}), "too large", {}, "jwks", id="oversized"
    ),
    pytest.param(lambda k: k.impostor.mint(), "bad signature", {}, "jwks", id="bad-signature"),
    pytest.param(_tampered, "bad signature", {}, "jwks", id="payload-swapped"),
    pytest.param(
        lambda k: k.rsa.mint({"iss": "https://evil.test"}),
        "wrong issuer",
        {},
        "jwks",
        id="wrong-iss",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"aud": "another-app"}), "wrong audience", {}, "jwks", id="wrong-aud"
    ),
    pytest.param(lambda k: k.rsa.mint({"exp": NOW - 3600}), "expired", {}, "jwks", id="expired"),
    pytest.param(
        lambda k: k.rsa.mint({"exp": int(time.time()) - 60}),
        "expired",
        {"jwt_leeway_s": 30},
        "jwks",
        id="expired-beyond-leeway",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"nbf": int(time.time()) + 3600}),
        "not yet valid",
        {},
        "jwks",
        id="not-yet-valid",
    ),
    pytest.param(lambda k: k.rsa.mint({"exp": None}), "'exp' missing", {}, "jwks", id="no-exp"),
    pytest.param(lambda k: k.rsa.mint({"iss": None}), "'iss' missing", {}, "jwks", id="no-iss"),
    pytest.param(lambda k: k.rsa.mint({"aud": None}), "'aud' missing", {}, "jwks", id="no-aud"),
    pytest.param(
        lambda k: forge({"alg": "none", "kid": "rsa-1"}, claims_with()),
        "alg 'none' is not accepted",
        {},
        "jwks",
        id="alg-none",
    ),
    pytest.param(
        lambda k: forge({"alg": "NONE", "kid": "rsa-1"}, claims_with()),
        "alg 'NONE' is not accepted",
        {},
        "jwks",
        id="alg-NONE",
    ),
    pytest.param(
        lambda k: forge({"kid": "rsa-1"}, claims_with(), secret=b"x"),
        "alg None is not accepted",
        {},
        "jwks",
        id="alg-absent",
    ),
    pytest.param(
        # The classic: HS256 "signed" with the issuer's public key (PEM) as the HMAC secret.
        lambda k: forge({"alg": "HS256", "kid": "rsa-1"}, claims_with(), k.rsa.public_pem()),
        "alg 'HS256' is not accepted",
        {},
        "jwks",
        id="hs256-public-pem-as-secret",
    ),
    pytest.param(
        lambda k: forge(
            {"alg": "HS256", "kid": "rsa-1"}, claims_with(), json.dumps(k.rsa.jwk()).encode()
        ),
        "alg 'HS256' is not accepted",
        {},
        "jwks",
        id="hs256-public-jwk-as-secret",
    ),
    pytest.param(
        lambda k: forge({"alg": "HS256"}, claims_with(), k.rsa.public_pem()),
        "alg 'HS256' is not accepted",
        {},
        "pem",
        id="pem-mode-hs256-public-pem-as-secret",
    ),
    pytest.param(
        # The JWKS also (wrongly) publishes an HMAC key; it must never verify anything.
        lambda k: forge({"alg": "HS256", "kid": "oct-1"}, claims_with(), b"shared-secret-1234"),
        "alg 'HS256' is not accepted",
        {"jwt_algorithms": "RS256,ES256"},
        "jwks",
        id="hs256-with-published-oct-key",
    ),
    pytest.param(
        lambda k: k.rsa.mint(alg="RS384"),
        "alg 'RS384' is not accepted",
        {},
        "jwks",
        id="rs384-not-listed",
    ),
    pytest.param(
        # An EC signature presented under the RSA key's kid.
        lambda k: SigningKey("rsa-1", "ES256", k.ec.private).mint(),
        "alg does not match the signing key",
        {},
        "jwks",
        id="alg-differs-from-jwk",
    ),
    pytest.param(
        lambda k: k.ec.mint(),
        "does not fit the configured key",
        {},
        "pem",
        id="pem-mode-es256-vs-rsa-key",
    ),
    # A short window: an unknown kid is refused only once a fetch newer than its request says so.
    pytest.param(
        lambda k: k.rotated.mint(),
        "unknown signing key",
        {"jwt_jwks_min_refetch_s": 0.1},
        "jwks",
        id="unknown-kid",
    ),
    pytest.param(_mint_weak, "key unusable", {}, "jwks", id="rsa-1024-key"),
    pytest.param(
        lambda k: jwt.encode(claims_with(), k.rsa.private, algorithm="RS256"),
        "no kid",
        {"jwt_jwks_min_refetch_s": 0.1},
        "jwks",
        id="no-kid-several-keys",
    ),
    pytest.param(lambda k: k.rsa.mint({"email": None}), "email missing", {}, "jwks", id="no-email"),
    pytest.param(
        lambda k: k.rsa.mint({"email": "not-an-email"}),
        "plausible",
        {},
        "jwks",
        id="email-malformed",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"email": 42}),
        "'email' is not a string",
        {},
        "jwks",
        id="email-number",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"email": "ada@example.edu\r\nX-User-Role: admin"}),
        "CR, LF or NUL",
        {},
        "jwks",
        id="email-header-injection",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"upn": "ada@example.edu"}),
        "email missing",
        {"jwt_email_claim": "preferred_email"},
        "jwks",
        id="configured-email-claim-absent",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"name": "x" * 300}), "name too long", {}, "jwks", id="name-too-long"
    ),
    pytest.param(
        lambda k: k.rsa.mint({"groups": {"a": 1}}), "neither a list", {}, "jwks", id="groups-object"
    ),
    pytest.param(
        lambda k: k.rsa.mint({"groups": ["ok", 7]}),
        "groups must be strings",
        {},
        "jwks",
        id="groups-number",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"email_verified": False}),
        "email_verified",
        {"jwt_require_email_verified": True},
        "jwks",
        id="email-not-verified",
    ),
    pytest.param(
        lambda k: k.rsa.mint(),
        "email_verified",
        {"jwt_require_email_verified": True},
        "jwks",
        id="email-verified-absent",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"email_verified": "true"}),
        "email_verified",
        {"jwt_require_email_verified": True},
        "jwks",
        id="email-verified-string",
    ),
    # Valid signatures over identities the proxy refuses: a 401, never a 500 or a folded email.
    pytest.param(
        lambda k: k.rsa.mint({"email": "\u212aate@example.edu"}),
        "non-ASCII",
        {},
        "jwks",
        id="kelvin-sign-email",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"name": "Kate \ud800"}),
        "not valid UTF-8",
        {},
        "jwks",
        id="lone-surrogate-name",
    ),
    pytest.param(
        lambda k: k.rsa.mint({"groups": ["staff", "\udcff"]}),
        "not valid UTF-8",
        {},
        "jwks",
        id="lone-surrogate-group",
    ),
]


@pytest.mark.parametrize(("token", "reason", "overrides", "mode"), REJECTIONS)
async def test_rejection(
    make_gate: Make,
    keys: Keys,
    tmp_path: Path,
    token: Token,
    reason: str,
    overrides: dict[str, Any],
    mode: str,
) -> None:
    """Each bad token is a 401 whose reason names what was wrong."""
    if mode == "pem":
        gate = await make_gate(jwt_key_file=pem_file(tmp_path, keys.rsa), **overrides)
    else:
        oct_key = {"kty": "oct", "kid": "oct-1", "alg": "HS256", "k": _b64(b"shared-secret-1234")}
        jwks = JwksEndpoint([keys.rsa, keys.ec, keys.weak], extra=[oct_key])
        gate = await make_gate(jwks, **overrides)
    status, body = await gate.ask(token(keys))
    assert status == 401
    assert reason in body["denied"]


# --- what is accepted -----------------------------------------------------------------------


async def test_rs256_from_cloudflare_style_header(make_gate: Make, keys: Keys) -> None:
    """A valid RS256 assertion gives the validated identity: email lower-cased, name, groups."""
    gate = await make_gate(JwksEndpoint([keys.rsa, keys.ec]))
    status, body = await gate.ask(keys.rsa.mint())
    assert status == 200
    assert body == {
        "email": "ada@example.edu",
        "name": "Ada Lovelace",
        "groups": ["students", "cs101"],
    }


async def test_es256_from_iap_style_header(make_gate: Make, keys: Keys) -> None:
    """Google IAP: ES256 in x-goog-iap-jwt-assertion, no name or groups claims."""
    gate = await make_gate(
        JwksEndpoint([keys.rsa, keys.ec]), jwt_source="header:x-goog-iap-jwt-assertion"
    )
    token = keys.ec.mint({"name": None, "groups": None, "email": "grace@example.edu"})
    status, body = await gate.ask(token, header="X-Goog-IAP-JWT-Assertion")
    assert (status, body) == (200, {"email": "grace@example.edu", "name": None, "groups": []})
    status, _ = await gate.ask(token, header=CF_HEADER)  # only the configured header counts
    assert status == 401


async def test_cookie_source(make_gate: Make, keys: Keys) -> None:
    """cookie:__session reads the token from that cookie only; two such cookies are refused."""
    gate = await make_gate(JwksEndpoint([keys.rsa]), jwt_source="cookie:__session")
    token = keys.rsa.mint()
    cookie = f"theme=dark; __session={token}; other=1"
    async with gate.client.get("/", headers={"Cookie": cookie}) as response:
        assert response.status == 200
        assert (await response.json())["email"] == "ada@example.edu"
    async with gate.client.get(
        "/", headers={"Cookie": "__session_x=1", CF_HEADER: token}
    ) as response:
        assert response.status == 401
    doubled = f"__session={token}; __session={keys.impostor.mint()}"
    async with gate.client.get("/", headers={"Cookie": doubled}) as response:
        assert response.status == 401
        assert "several tokens" in (await response.json())["denied"]


async def test_accepts_any_configured_audience_and_comma_groups(
    make_gate: Make, keys: Keys
) -> None:
    """aud may be a list matched against several accepted values; groups a comma string."""
    gate = await make_gate(JwksEndpoint([keys.rsa]), jwt_audience="first-app,owui-gate-test")
    token = keys.rsa.mint({"aud": ["unrelated", AUDIENCE], "groups": "staff, admins"})
    status, body = await gate.ask(token)
    assert (status, body["groups"]) == (200, ["staff", "admins"])


async def test_leeway_covers_small_clock_skew(make_gate: Make, keys: Keys) -> None:
    """Expired 5 s ago is still within the 30 s leeway; nbf 5 s ahead too."""
    gate = await make_gate(JwksEndpoint([keys.rsa]))
    now = int(time.time())
    status, _ = await gate.ask(keys.rsa.mint({"exp": now - 5, "nbf": now + 5}))
    assert status == 200


async def test_verified_email_when_required(make_gate: Make, keys: Keys) -> None:
    gate = await make_gate(JwksEndpoint([keys.rsa]), jwt_require_email_verified=True)
    status, _ = await gate.ask(keys.rsa.mint({"email_verified": True}))
    assert status == 200


async def test_token_without_kid_when_one_key_is_published(make_gate: Make, keys: Keys) -> None:
    gate = await make_gate(JwksEndpoint([keys.rsa]))
    status, _ = await gate.ask(jwt.encode(claims_with(), keys.rsa.private, algorithm="RS256"))
    assert status == 200


async def test_pem_key_file_mode(make_gate: Make, keys: Keys, tmp_path: Path) -> None:
    """With a PEM public key no JWKS is fetched; any kid (or none) is verified by that key."""
    gate = await make_gate(jwt_key_file=pem_file(tmp_path, keys.ec))
    assert gate.auth.problem() is None
    status, body = await gate.ask(keys.ec.mint())
    assert (status, body["email"]) == (200, "ada@example.edu")
    status, _ = await gate.ask(
        SigningKey("x", "ES256", ec.generate_private_key(ec.SECP256R1())).mint()
    )
    assert status == 401


async def test_pem_key_that_fits_no_accepted_algorithm_fails_start(
    keys: Keys, tmp_path: Path
) -> None:
    """An EC key with only RS256 accepted is a configuration error, refused at start."""
    settings = Settings(
        upstream="http://127.0.0.1:9",
        auth="jwt",
        jwt_source=f"header:{CF_HEADER}",
        jwt_issuer=ISSUER,
        jwt_audience=(AUDIENCE,),
        jwt_algorithms="RS256",
        jwt_key_file=pem_file(tmp_path, keys.ec),
    )
    async with aiohttp.ClientSession() as session:
        auth = JwtAuthenticator(settings, session)
        with pytest.raises(JwksError, match="cannot verify"):
            await auth.start()
        assert auth.problem() is not None


async def test_reason_is_logged_never_the_token(make_gate: Make, keys: Keys) -> None:
    gate = await make_gate(JwksEndpoint([keys.rsa]))
    token = keys.rsa.mint({"exp": NOW - 3600})
    with capture_logs() as logs:
        status, _ = await gate.ask(token)
    assert status == 401
    assert {"event": "jwt_denied", "reason": "token expired"}.items() <= logs[-1].items()
    signature = token.rsplit(".", 1)[1]
    assert signature not in repr(logs)


# --- the JWKS over time ----------------------------------------------------------------------


async def test_key_rotation_without_restart(make_gate: Make, keys: Keys) -> None:
    """A token with a new kid makes the proxy refetch the JWKS and accept it."""
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_min_refetch_s=0.05)
    status, _ = await gate.ask(keys.rotated.mint())
    assert status == 401  # not published yet
    endpoint.keys = [keys.rotated]  # the IdP rotates
    await asyncio.sleep(0.1)
    status, body = await gate.ask(keys.rotated.mint())
    assert (status, body["email"]) == (200, "ada@example.edu")
    status, body = await gate.ask(keys.rsa.mint())  # the retired key is gone
    assert status == 401


async def test_jwks_outage_keeps_serving_with_last_good_keys(make_gate: Make, keys: Keys) -> None:
    """The background refresh fails; known keys still verify, /readyz and metrics say why."""
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_refresh_s=0.05, jwt_jwks_min_refetch_s=0.05)
    assert gate.auth.problem() is None
    first_success = gate.auth.jwks_last_success
    assert first_success is not None
    endpoint.status = 500
    await eventually(lambda: gate.auth.jwks_fetch_failures >= 2)
    status, _ = await gate.ask(keys.rsa.mint())
    assert status == 200
    problem = gate.auth.problem()
    assert problem is not None
    assert "HTTP 500" in problem
    assert "1 cached key" in problem
    assert gate.auth.jwks_last_success == first_success
    assert gate.auth.jwks_keys == 1
    # A key that may have rotated in during the outage: "cannot tell", not "logged out".
    status, body = await gate.ask(keys.rotated.mint())
    assert status == 503
    assert "JWKS is failing" in body["unavailable"]
    endpoint.status = 200  # the IdP recovers; the refresher notices
    await eventually(lambda: gate.auth.problem() is None)


async def test_jwks_unreachable_at_start(make_gate: Make, keys: Keys) -> None:
    """No keys at all: not ready, and requests get 503 (never a guess); recovers by itself."""
    endpoint = JwksEndpoint([keys.rsa], status=503)
    gate = await make_gate(endpoint, jwt_jwks_refresh_s=0.05, jwt_jwks_min_refetch_s=0.05)
    assert "no JWKS keys" in (gate.auth.problem() or "")
    status, _ = await gate.ask(keys.rsa.mint())
    assert status == 503
    endpoint.status = 200
    await eventually(lambda: gate.auth.problem() is None)
    status, _ = await gate.ask(keys.rsa.mint())
    assert status == 200


async def test_junk_kids_cannot_hammer_the_jwks(make_gate: Make, keys: Keys) -> None:
    """A flood of unknown kids, in parallel and in sequence, costs no refetch inside the window:
    further than the auth timeout from its end, each is "cannot tell yet" (503) at once."""
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_min_refetch_s=60)
    assert endpoint.fetches == 1
    junk = [SigningKey(f"junk-{i}", "RS256", keys.impostor.private).mint() for i in range(40)]
    results = await asyncio.gather(*(gate.ask(t) for t in junk))
    for t in junk[:10]:
        results.append(await gate.ask(t))
    assert {status for status, _ in results} == {503}
    assert all("the JWKS may be refetched in" in body["unavailable"] for _, body in results)
    assert endpoint.fetches == 1
    assert gate.auth.jwks_fetches == 1


async def test_a_flood_near_the_window_s_end_shares_one_fetch(make_gate: Make, keys: Keys) -> None:
    """Within the auth timeout of the window's end, unknown kids wait for it, and the one fetch
    that starts then answers all of them (401: it did not know them either)."""
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_min_refetch_s=0.5)
    junk = [SigningKey(f"junk-{i}", "RS256", keys.impostor.private).mint() for i in range(40)]
    results = await asyncio.gather(*(gate.ask(t) for t in junk))
    assert {status for status, _ in results} == {401}
    assert endpoint.fetches == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kid_refetches_at_most_once_per_window(aiohttp_server, keys: Keys) -> None:
    """With a controlled clock: one refetch per window however many unknown kids arrive,
    and concurrent requests share it."""
    endpoint = JwksEndpoint([keys.rsa])
    server = await aiohttp_server(endpoint.app())
    clock = FakeClock()
    async with started_cache(str(server.make_url("/jwks")), monotonic=clock) as cache:
        assert endpoint.fetches == 1
        assert await cache.key_for("rsa-1") is not None
        clock.now += 5  # inside the window, further than max_wait_s from its end: no refetch
        with pytest.raises(NotYet):
            await cache.key_for("junk")
        assert endpoint.fetches == 1
        clock.now += 6  # window over: 30 concurrent unknown kids, one fetch between them
        found = await asyncio.gather(*(cache.key_for(f"junk-{i}") for i in range(30)))
        assert found == [None] * 30
        assert endpoint.fetches == 2
        endpoint.keys = [keys.rsa, keys.rotated]
        assert await cache.key_for("rsa-2") is None  # still rate-limited
        clock.now += 10
        assert await cache.key_for("rsa-2") is not None
        assert endpoint.fetches == 3
        assert cache.fetch_failures == 0


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({"keys": []}, "no usable signing key", id="empty"),
        pytest.param({"nope": 1}, "not a JWKS", id="no-keys-member"),
        pytest.param(
            {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, "no usable", id="only-hmac"
        ),
        pytest.param({"keys": [{"kty": "RSA", "kid": "x"}]}, "no usable", id="broken-rsa"),
        pytest.param([1, 2], "not a JWKS", id="a-list"),
    ],
)
async def test_unusable_jwks_documents(aiohttp_server, document: Any, problem: str) -> None:
    """A document with nothing usable is a failed fetch, reported, never an empty key set."""
    server = await aiohttp_server(answering(document))
    url = str(server.make_url("/jwks"))
    async with started_cache(url, algorithms=("RS256", "ES256")) as cache:
        pass
    assert problem in (cache.problem() or "")
    assert (cache.fetches, cache.fetch_failures, cache.key_count) == (1, 1, 0)


def test_odd_entries_are_skipped_and_good_keys_kept(keys: Keys) -> None:
    """One good key among oddities: the oddities go, the good key stays."""
    good = keys.rsa.jwk()
    odd = [
        {**keys.rotated.jwk(), "kid": ["list"]},
        {**keys.rotated.jwk(), "kid": "alg-none", "alg": "none"},
        {**keys.rotated.jwk(), "kid": "enc", "use": "enc"},
        {**keys.ec.jwk(), "kid": "not-accepted"},  # ES256 is not in the accepted list below
        "not an object",
    ]
    parsed = parse_jwks({"keys": [*odd, good]}, ("RS256",))
    assert list(parsed) == ["rsa-1"]
