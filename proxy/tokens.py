"""The internal listener's service tokens: loading, constant-time checking, reloading.

The token file holds one token a line; blank lines and ``#`` comments are ignored, and
several tokens may be valid at once so a caller can rotate without downtime (add the new
token, SIGHUP, move the caller, remove the old one, SIGHUP). A token is never logged or
put in an error message: logs carry :func:`fingerprint`, which identifies a token to
someone who has it and reveals nothing to someone who has not.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import structlog

from proxy.secretfile import SecretFileError, read_secret_lines

MIN_TOKEN_CHARS = 32

log = structlog.get_logger(__name__)


class TokenFileError(Exception):
    """The token file cannot be used. The message names the file (and line); never a token."""


def fingerprint(token: str) -> str:
    """A short, stable, non-reversible label for a token, for logs."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def load_tokens(path: Path) -> tuple[str, ...]:
    """Read and validate the token file; raise :class:`TokenFileError` listing every problem."""
    try:
        lines = read_secret_lines(path)
    except SecretFileError as exc:
        raise TokenFileError(str(exc)) from exc
    tokens: list[str] = []
    problems: list[str] = []
    for number, token in lines:
        if len(token) < MIN_TOKEN_CHARS:
            problems.append(
                f"{path}:{number}: token has {len(token)} characters, "
                f"at least {MIN_TOKEN_CHARS} are required"
            )
        elif not all("!" <= ch <= "~" for ch in token):
            problems.append(
                f"{path}:{number}: a token must be visible ASCII without spaces "
                "(comments go on their own '#' line)"
            )
        elif token not in tokens:
            tokens.append(token)
    if problems:
        raise TokenFileError("\n".join(problems))
    if not tokens:
        raise TokenFileError(f"{path}: no tokens (every line is blank or a comment)")
    return tuple(tokens)


class TokenStore:
    """The accepted tokens, loaded at construction (raising :class:`TokenFileError`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens = self._prepare(load_tokens(path))

    @staticmethod
    def _prepare(tokens: tuple[str, ...]) -> tuple[tuple[bytes, str], ...]:
        return tuple((token.encode("ascii"), fingerprint(token)) for token in tokens)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fp for _, fp in self._tokens)

    def check(self, presented: str) -> str | None:
        """The fingerprint of the accepted token equal to ``presented``, else None.

        Every token is compared, in constant time, whatever matched before: the time taken
        says nothing about which token or how much of it the caller got right.
        """
        usable = presented.isascii()
        candidate = presented.encode("ascii", "replace")
        found: str | None = None
        for token, fp in self._tokens:
            if hmac.compare_digest(candidate, token) and usable:
                found = fp
        return found

    def reload(self) -> bool:
        """Re-read the file (on SIGHUP). An unusable file keeps the current tokens."""
        try:
            tokens = self._prepare(load_tokens(self.path))
        except TokenFileError as exc:
            log.error(
                "internal_tokens_reload_failed",
                error=str(exc),
                kept=len(self._tokens),
                path=str(self.path),
            )
            return False
        self._tokens = tokens
        log.info(
            "internal_tokens_reloaded",
            count=len(tokens),
            fingerprints=list(self.fingerprints),
            path=str(self.path),
        )
        return True
