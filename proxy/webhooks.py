"""Standard Webhooks (https://www.standardwebhooks.com): signing and verifying. Pure functions.

The one implementation for every side: the proxy's first-sign-in hook and the demo IdP sign,
the provisioner's webhook receiver verifies.

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
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from proxy.secretfile import SecretFileError, first_secret_line

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's marker for a secret, not a secret
MIN_KEY_BYTES = 24  # the spec: at least 24 bytes (192 bits) of key


class BadSecret(ValueError):
    """The webhook secret is not ``whsec_`` + base64 of at least 24 bytes."""


def secret_key(secret: str, min_bytes: int = MIN_KEY_BYTES) -> bytes:
    """The HMAC key inside a ``whsec_...`` secret."""
    secret = secret.strip()
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise BadSecret("the part after whsec_ is not base64") from exc
    if len(key) < min_bytes:
        raise BadSecret(f"the key is shorter than {min_bytes} bytes once decoded")
    return key


def read_secret_file(path: Path) -> str:
    """The first ``whsec_`` secret in ``path`` (checked); raises :class:`BadSecret` naming
    the file and line, never the secret."""
    try:
        number, secret = first_secret_line(path)
    except SecretFileError as exc:
        raise BadSecret(str(exc)) from exc
    try:
        secret_key(secret)
    except BadSecret as exc:
        raise BadSecret(f"{path}:{number}: {exc}") from exc
    return secret


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


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt got: the receiver's status (and its ``Retry-After``), or
    the name of the failure (``TimeoutError``, ``ClientConnectorError``, ...) when there was
    no answer."""

    status: int | str
    retry_after: str | None = None


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    timestamp: int,
    timeout: aiohttp.ClientTimeout,
) -> Attempt:
    """One signed delivery attempt."""
    headers = sign(secret, msg_id, timestamp, body)
    headers["Content-Type"] = "application/json"
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            await response.read()
            return Attempt(response.status, response.headers.get("Retry-After"))
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Attempt(type(exc).__name__)


# A receiver accepts a delivery signed at most this far from its own clock, either way.
TOLERANCE_S = 5 * 60
# Bounds checked before anything is parsed: ids are short (Svix: "msg_" and 27 characters),
# a timestamp is seconds (ten digits until the year 2286), and a signature header holds a
# few "v1,<44 characters>" during a secret rotation.
MAX_ID_CHARS = 256
MAX_TIMESTAMP_DIGITS = 12
MAX_SIGNATURES_CHARS = 4096
_VISIBLE_ASCII = re.compile(r"[!-~]+")


class BadSignature(Exception):
    """The delivery is not authentic or not fresh; ``str()`` says which check failed."""


class BadHeaders(BadSignature):
    """A webhook header is malformed (too long, not ASCII, not a number): bad input (400)
    rather than a failed signature (401); ``str()`` says which."""


def verify(
    keys: tuple[bytes, ...], headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> None:
    """Raise :class:`BadSignature` unless some ``v1`` signature matches some key, in time."""
    msg_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not raw_timestamp or not signatures:
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    # Each bounded before it is parsed: int() of 5,000 digits raises, and an id that is not
    # ASCII cannot be signed content at all.
    if len(msg_id) > MAX_ID_CHARS or not _VISIBLE_ASCII.fullmatch(msg_id):
        raise BadHeaders(f"webhook-id must be 1 to {MAX_ID_CHARS} visible ASCII characters")
    if "." in msg_id:
        raise BadHeaders("webhook-id must not contain '.'")  # it delimits the signed content
    # ASCII digits only: str.isdigit() also takes other scripts' digits, which int() reads.
    if not (
        len(raw_timestamp) <= MAX_TIMESTAMP_DIGITS
        and raw_timestamp.isascii()
        and raw_timestamp.isdigit()
    ):
        raise BadHeaders("webhook-timestamp is not a number of seconds")
    if len(signatures) > MAX_SIGNATURES_CHARS or not signatures.isascii():
        raise BadHeaders(
            f"webhook-signature must be at most {MAX_SIGNATURES_CHARS} ASCII characters"
        )
    timestamp = int(raw_timestamp)
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_S:
        raise BadSignature("webhook-timestamp is more than five minutes away from now")
    offered = [
        item.partition(",")[2].encode()
        for item in signatures.split(" ")
        if item.partition(",")[0] == "v1"
    ]
    matched = False
    for key in keys:
        expected = signature(key, msg_id, timestamp, body).partition(",")[2].encode()
        for candidate in offered:
            # Every pair is compared, so the time taken says nothing about which matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadSignature("no signature matches")
