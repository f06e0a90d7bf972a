"""Standard Webhooks signing, checked against the spec's own example and an independent
computation written from the spec's text (not from proxy/webhooks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from proxy.webhooks import BadSecret, new_message_id, new_secret, secret_key, sign

# The example used by the reference libraries of the spec (standard-webhooks, sign test).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The spec, step by step: drop whsec_, base64-decode the key, HMAC-SHA256 over
    '{id}.{timestamp}.{body}', base64 the digest, prefix 'v1,'."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def test_matches_the_spec_example() -> None:
    headers = sign(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert headers == {
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_matches_an_independent_computation() -> None:
    secret, msg_id = new_secret(), new_message_id()
    body = '{"type":"user.created","data":{"first_name":"Zoë"}}'.encode()
    headers = sign(secret, msg_id, 1_700_000_000, body)
    assert headers["webhook-signature"] == independent_signature(
        secret, headers["webhook-id"], headers["webhook-timestamp"], body
    )
    # Any change to what is signed changes the signature.
    assert (
        headers["webhook-signature"]
        != sign(secret, msg_id, 1_700_000_001, body)["webhook-signature"]
    )
    assert (
        headers["webhook-signature"]
        != sign(secret, msg_id, 1_700_000_000, body + b" ")["webhook-signature"]
    )


def test_fresh_values_have_the_spec_shape() -> None:
    assert len(secret_key(new_secret())) == 32
    msg_id = new_message_id()
    assert msg_id.startswith("msg_")
    assert "." not in msg_id
    assert new_message_id() != msg_id


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="no-prefix"),
        pytest.param("whsec_not base64!", id="not-base64"),
        pytest.param("whsec_" + base64.b64encode(b"short").decode(), id="too-short"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(BadSecret):
        sign(secret, "msg_1", 1, b"{}")


def test_a_dot_in_the_message_id_is_refused() -> None:
    """The dot delimits the signed content; an id with one could shift the boundaries."""
    with pytest.raises(ValueError, match="must not contain"):
        sign(SPEC_SECRET, "msg_1.2", 1, b"{}")
