"""The demo's session cookie: a JSON payload and an HMAC-SHA256 over it, both base64url.

``<payload>.<mac>``; the MAC is checked (constant time) before the payload is even parsed,
and an expired session is no session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

# Binds the MAC to this use, so the key could never be replayed against another format.
_CONTEXT = b"owui-demo-idp session v1\n"


@dataclass(frozen=True, slots=True)
class Session:
    email: str
    name: str | None
    groups: tuple[str, ...]
    expires: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, _CONTEXT + payload.encode(), hashlib.sha256).digest())


def encode(key: bytes, session: Session) -> str:
    body = {"e": session.email, "n": session.name, "g": list(session.groups), "x": session.expires}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}"


def decode(key: bytes, value: str | None, now: float) -> Session | None:
    """The session in a cookie value, or ``None`` if absent, forged, malformed or expired."""
    if not value:
        return None
    payload, sep, mac = value.partition(".")
    if not sep or not hmac.compare_digest(_mac(key, payload).encode(), mac.encode()):
        return None
    try:
        body = json.loads(_unb64(payload))
        session = Session(
            email=str(body["e"]),
            name=None if body["n"] is None else str(body["n"]),
            groups=tuple(str(g) for g in body["g"]),
            expires=int(body["x"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None  # only we can sign, so this is a bug or an old format: no session either way
    return session if session.expires > now else None
