"""JWKS, round 4: a ``kid`` published more than once, and junk kids around a key rotation.

Before: the JWKS was kept by ``kid`` alone, the last entry winning, silently. An IdP that
publishes one RSA key for RS256 and PS256 under one ``kid`` had every token of the other
algorithm refused ("alg does not match"); two different keys under one ``kid`` and
algorithm were resolved by the order of the document, so tokens signed by the other key
were refused as "bad signature", with nothing logged to say why.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from structlog.testing import capture_logs

from tests.proxy import test_jwt as base
from tests.proxy.test_jwt import NOW, JwksEndpoint, Keys, Make, SigningKey, claims_with

keys = base.keys  # the fixtures of test_jwt, shared
make_gate = base.make_gate


async def test_one_key_for_two_algorithms_under_one_kid(make_gate: Make, keys: Keys) -> None:
    rs = keys.rsa
    ps = SigningKey(rs.kid, "PS256", rs.private)  # the same key, published again for PS256
    for published in ([rs, ps], [ps, rs]):
        gate = await make_gate(JwksEndpoint(published), jwt_algorithms="RS256,PS256")
        assert gate.auth.jwks_keys == 2
        for signer in (rs, ps):
            status, body = await gate.ask(signer.mint())
            assert (status, body.get("email")) == (200, "ada@example.edu"), (signer.alg, body)


async def test_two_keys_under_one_kid_and_alg_are_neither_used(
    make_gate: Make,
    keys: Keys,
) -> None:
    other = SigningKey(keys.rsa.kid, "RS256", keys.impostor.private)  # a second key, same kid
    for published in ([keys.rsa, other, keys.ec], [other, keys.rsa, keys.ec]):
        with capture_logs() as logs:
            gate = await make_gate(JwksEndpoint(published), jwt_jwks_min_refetch_s=0.1)
        warned = [e for e in logs if e["event"] == "jwks_duplicate_kid"]
        assert [(e["kid"], e["alg"]) for e in warned] == [("rsa-1", "RS256")]
        for signer in (keys.rsa, other):
            status, body = await gate.ask(signer.mint())
            assert status == 401, body  # not a guess by the order of the document
        status, _ = await gate.ask(keys.ec.mint())  # the other keys are unaffected
        assert status == 200
        assert gate.auth.jwks_keys == 1


async def test_the_same_key_listed_twice_is_one_key(make_gate: Make, keys: Keys) -> None:
    with capture_logs() as logs:
        gate = await make_gate(JwksEndpoint([keys.rsa, keys.rsa]))
    assert not [e for e in logs if e["event"] == "jwks_duplicate_kid"]
    assert gate.auth.jwks_keys == 1
    status, _ = await gate.ask(keys.rsa.mint())
    assert status == 200
    status, _ = await gate.ask(
        jwt.encode(claims_with(), keys.rsa.private, algorithm="RS256")
    )  # one key: a token without kid is fine
    assert status == 200


JUNK = [
    pytest.param({"aud": "another-app"}, id="wrong-aud"),
    pytest.param({"iss": "https://evil.test"}, id="wrong-iss"),
    pytest.param({"aud": None}, id="no-aud"),
    pytest.param({"exp": NOW - 3600}, id="expired"),
    pytest.param({"nbf": NOW + 3600}, id="not-yet-valid"),
    pytest.param({"email": None}, id="no-email"),
    pytest.param({"email": ["a@example.edu"]}, id="email-not-a-string"),
]


@pytest.mark.parametrize("claims", JUNK)
async def test_junk_kids_cannot_spend_the_refetch_a_rotated_key_needs(
    make_gate: Make, keys: Keys, claims: dict[str, Any]
) -> None:
    """Before: any junk token with an unknown kid spent the window's one refetch, so a
    token signed with a key the IdP published a moment later got 401 until the window
    ended. Only a token passing every check but the signature's may spend it now."""
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_min_refetch_s=1.0)
    await asyncio.sleep(1.1)  # the window after the start's fetch is over
    for i in range(20):  # a flood, from anyone: nothing to sign with, nothing to know
        junk = SigningKey(f"junk-{i}", "RS256", keys.impostor.private).mint(claims)
        status, body = await gate.ask(junk)
        assert status == 401
        assert "not refetched" in body["denied"]
    assert endpoint.fetches == 1
    endpoint.keys = [keys.rsa, keys.rotated]  # the IdP rotates
    status, body = await gate.ask(keys.rotated.mint())
    assert (status, body.get("email")) == (200, "ada@example.edu"), body
    assert endpoint.fetches == 2


async def test_plausible_junk_cannot_starve_a_freshly_rotated_key(
    make_gate: Make, keys: Keys
) -> None:
    endpoint = JwksEndpoint([keys.rsa])
    gate = await make_gate(endpoint, jwt_jwks_min_refetch_s=1.0, auth_timeout_s=5)
    await asyncio.sleep(1.1)  # the window after the start's fetch is over
    junk = SigningKey("junk-1", "RS256", keys.impostor.private).mint()
    status, _ = await gate.ask(junk)  # the claims pass: it spends the refetch...
    assert (status, endpoint.fetches) == (401, 2)
    endpoint.keys = [keys.rsa, keys.rotated]  # ...and the IdP then rotates
    status, body = await gate.ask(keys.rotated.mint())
    assert status == 200, body  # got 401 "unknown signing key" until the window ended
    # (now: it waits for the window to end, at most the auth timeout, and a fetch newer
    # than itself answers it)
    assert endpoint.fetches <= 3  # one refetch per window, still
