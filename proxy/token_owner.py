"""Whose is a token? Read from OpenWebUI's own answer, never from its status alone.

``GET /api/v1/auths/`` with a token answers that token's user. OpenWebUI 0.6.14 and later
also refuse (401 "User mismatch") when the trusted email header names someone else, but a
check that only reads the status fails open on a release without that comparison (before
0.6.14: 200 with the *token's* user, whatever header came with it). So the answer's email is
compared with the verified identity here, whatever the release does.
"""

from __future__ import annotations

import json


def answered_for(body: bytes, email: str) -> bool:
    """True when ``body`` (OpenWebUI's ``/api/v1/auths/`` answer) is ``email``'s account."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    if not isinstance(answer, dict):
        return False
    owner = answer.get("email")
    return isinstance(owner, str) and same_email(owner, email)


def same_email(owner: str, email: str) -> bool:
    """Whether OpenWebUI's ``owner`` is the verified ``email`` (validated, lower-case ASCII).

    OpenWebUI stores emails lower-cased, but an account made another way may not be; only
    ASCII case is folded, and only on an ASCII owner: ``str.lower()`` maps some non-ASCII
    letters onto ASCII ones (KELVIN SIGN U+212A to "k"), which would make another account's
    ``\u212aate@school.edu`` Kate's.
    """
    return bool(owner) and owner.isascii() and owner.lower() == email
