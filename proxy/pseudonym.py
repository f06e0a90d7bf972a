"""Stable pseudonyms for people in the public listener's log lines.

With ``log_pseudonym_key_file`` set, the lines the public listener writes about a request (the
access line, ``access_denied``, ``socketio_token_refused``, ``signin_hook_dropped``) name the
person by a ``pseudonym`` instead of their ``email``: the first 16 hex digits of
HMAC-SHA-256 of the email under the key. The same person always gets the same pseudonym (so
support can follow one person's requests), nobody can compute it without the key (so the
log alone does not say who), and support with the key turns an email into its pseudonym:

    python -m proxy.pseudonym /etc/owui-gate/log-pseudonym-key alice@school.edu

Lines that record an action taken in someone's name keep the email: the internal listener's
audit line, the first-sign-in hook's deliveries, the webhook receiver's lines
(docs/operations.md, "Logs and privacy").
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.errors import ConfigProblems
from proxy.secretfile import SecretFileError, first_secret_line

MIN_KEY_CHARS = 32
# 64 bits: two of 100,000 people sharing one is a chance of about 1 in 4 billion.
DIGITS = 16
_REMEMBERED = 10_000


class PseudonymKeyError(ConfigProblems):
    """The key file cannot be used; the message says why and what to do."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


def load_key(path: Path) -> bytes:
    """The first line of ``path`` that is neither blank nor a comment, checked."""
    try:
        number, key = first_secret_line(path, "key")
    except SecretFileError as exc:
        raise PseudonymKeyError(str(exc)) from exc
    if len(key) < MIN_KEY_CHARS:
        raise PseudonymKeyError(
            f"{path}:{number}: the key is shorter than {MIN_KEY_CHARS} characters; make one "
            "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key.encode("ascii")


class Pseudonyms:
    """Email to pseudonym under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Every request of a signed-in person names them: an HMAC per request would cost
        # microseconds, a look-up nanoseconds. Bounded; emptied when full.
        self._known: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: Path | None) -> Pseudonyms | None:
        """The pseudonyms of the key in ``path``, or None (emails are logged) without one."""
        return None if path is None else cls(load_key(path))

    def of(self, email: str) -> str:
        known = self._known.get(email)
        if known is None:
            if len(self._known) >= _REMEMBERED:
                self._known.clear()
            digest = hmac.digest(self._key, email.encode("utf-8"), hashlib.sha256)
            known = self._known[email] = digest.hex()[:DIGITS]
        return known


def person(email: str | None, pseudonyms: Pseudonyms | None) -> dict[str, str | None]:
    """The log fields naming a person: ``email``, or ``pseudonym`` when there is a key."""
    if pseudonyms is None:
        return {"email": email}
    return {"pseudonym": pseudonyms.of(email) if email is not None else None}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m proxy.pseudonym KEY_FILE [EMAIL...]``: each email and its pseudonym (the
    emails from standard input, one a line, when none is given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__, file=sys.stderr)
        return 2 if not args else 0
    try:
        pseudonyms = Pseudonyms(load_key(Path(args[0])))
    except PseudonymKeyError as exc:
        print(f"proxy.pseudonym: {exc}", file=sys.stderr)
        return 2
    emails = args[1:] or [line.strip() for line in sys.stdin if line.strip()]
    for email in emails:
        # As the proxy logs them: validated identities are lower-case.
        print(f"{email.lower()} {pseudonyms.of(email.lower())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
