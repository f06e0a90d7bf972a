"""Standard Webhooks signing (https://www.standardwebhooks.com), sender side. Pure functions.

Used by the proxy's first-sign-in hook and by the demo IdP.

The signed content is ``{msg_id}.{timestamp}.{body}``; the signature is
``v1,<base64 HMAC-SHA256>`` keyed with the base64-decoded part of a ``whsec_...`` secret.
The same ``msg_id`` is kept across retries (receivers use it to deduplicate); the timestamp
is the attempt's, so every retry is signed afresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's marker for a secret, not a secret
MIN_KEY_BYTES = 24  # the spec: at least 24 bytes (192 bits) of key


class BadSecret(ValueError):
    """The webhook secret is not ``whsec_`` + base64 of at least 24 bytes."""


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_...`` secret."""
    secret = secret.strip()
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise BadSecret("the part after whsec_ is not base64") from exc
    if len(key) < MIN_KEY_BYTES:
        raise BadSecret(f"the key must be at least {MIN_KEY_BYTES} bytes")
    return key


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of '{msg_id}.{timestamp}.{body}'>``."""
    if "." in msg_id:
        raise ValueError("a message id must not contain '.'")  # it delimits the signed content
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt of ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret_key(secret), msg_id, timestamp, body),
    }
