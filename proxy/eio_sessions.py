"""Engine.IO sessions bound to the person who opened them: HMAC-sealed session ids.

python-engineio names each session by an id (``sid``) that the client repeats in the query
string of every later long-polling read and write and of the WebSocket upgrade. The id alone
is the session: whoever presents a live one reads its events and writes into it, as the
user who opened it (it sits in every polling URL, hence in access logs). OpenWebUI never
checks who presents it.

So the proxy hands the browser a *sealed* id instead: in the answer to a long-polling
handshake (``0{"sid": "S", ...}``) it writes ``S.<mac>``, where ``mac`` is an HMAC-SHA256 of
(S, the person's email) under a secret; every later request naming a session must carry a
seal made for its own person, which the proxy checks and takes off again (OpenWebUI sees
``S``). A request naming a session with no valid seal (someone else's id, a bare ``S``, a
forged mac) is refused before OpenWebUI sees it, on both transports. Sessions opened
straight over a WebSocket never name their id again; a bare id of one is refused like any.

Why a seal and not a table: the binding must hold where one browser's requests land on
different processes (``SO_REUSEPORT`` spreads one polling session's requests over every
worker; several proxies behind one name may each get some). A seal needs nothing shared
but the secret: the workers of one proxy share a random one made before they fork, and
proxies behind one name share ``session_secret_file``. A table would need shared state
(Redis, say) on every request of a polling session. The cost: the id in the browser's URLs
is 23 characters longer, and rotating the secret ends open polling sessions (the client
opens new ones).

The query string is read as python-engineio reads it (``urllib.parse.parse_qs``: ``&``
separates, names are percent-decoded with ``+`` as a space, the first ``sid`` wins); a
query naming ``sid`` more than once is refused, so the id the proxy checked is the only one
OpenWebUI can read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from urllib.parse import quote, unquote

from proxy.secretfile import SecretFileError, first_secret_line

MIN_SECRET_CHARS = 32
# Made when this module is first imported, in the parent before it forks workers: every
# worker of one proxy shares it (proxy/server.py forks; nothing re-imports this module).
_PROCESS_SECRET = secrets.token_bytes(32)
_MAC_BYTES = 16


class SessionSecretError(Exception):
    """The session secret file cannot be used (names the file and line, never the secret)."""


def read_session_secret(path: Path) -> bytes:
    """The first secret line of ``path``: at least 32 visible ASCII characters."""
    try:
        number, secret = first_secret_line(path)
    except SecretFileError as exc:
        raise SessionSecretError(str(exc)) from exc
    if len(secret) < MIN_SECRET_CHARS or not all("!" <= ch <= "~" for ch in secret):
        raise SessionSecretError(
            f"{path}:{number}: the secret must be at least {MIN_SECRET_CHARS} visible ASCII "
            "characters (e.g. the output of: openssl rand -hex 32)"
        )
    return secret.encode("ascii")


class SessionSeals:
    """Seals Engine.IO session ids to a person, and checks and removes the seals."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret if secret is not None else _PROCESS_SECRET

    @classmethod
    def from_file(cls, path: Path | None) -> SessionSeals:
        return cls(read_session_secret(path) if path is not None else None)

    def _mac(self, sid: str, email: str) -> str:
        raw = sid.encode("utf-8", "surrogatepass")
        digest = hmac.new(
            self.secret,
            len(raw).to_bytes(8, "big") + raw + email.encode("ascii"),
            hashlib.sha256,
        ).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def seal(self, sid: str, email: str) -> str:
        return f"{sid}.{self._mac(sid, email)}"

    def unseal(self, sealed: str, email: str) -> str | None:
        """The session id ``sealed`` carries, if it was sealed for ``email``; else None."""
        sid, dot, mac = sealed.rpartition(".")
        if not dot or not sid:
            return None
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(sid, email).encode()):
            return None
        return sid

    def unsealed_query(self, query: str, email: str) -> str | None:
        """``query`` with its session id's seal checked and taken off; ``query`` itself when
        it names no session (a handshake); None when it must be refused."""
        segments = query.split("&")
        named = [i for i, segment in enumerate(segments) if _name(segment) == "sid"]
        if not named:
            return query
        if len(named) > 1:
            return None
        index = named[0]
        value = segments[index].partition("=")[2]
        sid = self.unseal(unquote(value.replace("+", " ")), email)
        if sid is None:
            return None
        segments[index] = "sid=" + quote(sid, safe="")
        return "&".join(segments)

    def sealed_handshake(self, body: bytes, email: str) -> bytes:
        """A long-polling handshake answer with its session id sealed for ``email``.

        Anything but the expected ``0{"sid": ...}`` first packet is returned as it is: the
        client then holds no seal, and every later request of that session is refused.
        """
        first, separator, rest = body.partition(b"\x1e")
        if not first.startswith(b"0{"):
            return body
        try:
            opened = json.loads(first[1:])
        except (ValueError, RecursionError):
            return body
        if not isinstance(opened, dict) or not isinstance(opened.get("sid"), str):
            return body
        opened["sid"] = self.seal(opened["sid"], email)
        packet = b"0" + json.dumps(opened, separators=(",", ":")).encode()
        return packet + separator + rest


def _name(segment: str) -> str:
    """A query segment's name as ``parse_qs`` reads it."""
    return unquote(segment.partition("=")[0].replace("+", " "))


def is_handshake(query: str) -> bool:
    """A long-polling request naming no session (python-engineio opens one for a GET)."""
    return not any(_name(segment) == "sid" for segment in query.split("&"))
