"""One browser session's forward-auth calls take turns; a renewed session replaces the old.

A browser loads a page with many requests at once, all carrying the same session cookie.
When that session is due for a refresh, each of those calls would make the auth service
refresh it (oauth2-proxy's cookie store, mod_auth_openidc's client-cookie sessions): with
refresh tokens that work once, the first refresh succeeds and every other one presents a
used token, which the identity provider takes for theft and answers by revoking the whole
session. The user is signed out in the middle of a page load. oauth2-proxy documents this
for its cookie store ("conflicts which force users to re-authenticate").

So calls carrying the same ``Cookie`` take turns (one at a time, in arrival order), and
when an answer renews the session (``Set-Cookie``), the cookie header that call sent is
remembered with its renewal for :data:`HOLD_S` seconds: a later call still carrying the old
header, sent before the browser saw the answer, asks about the renewed one instead. The
browser gets the renewal with the answer to the call that made it.

What is remembered is a cookie (a credential), so briefly: a digest of the old header, the
new header, at most :data:`SIZE` of them. Within that window whoever presents the old
cookie is judged as the renewed session, which is what the old cookie was worth a moment
earlier anyway; after it the auth service judges the old cookie itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime

# How long a renewal stands in for the cookie it replaced: longer than a page load takes to
# send its requests, far shorter than any session lives.
HOLD_S = 30.0
# Renewals remembered at most (the oldest go first).
SIZE = 4096
# Renewals of renewals followed at most when looking a cookie up.
_CHAIN = 16


class Renewals:
    """The turns and the recent renewals of one process. ``clock`` is injectable for tests."""

    def __init__(
        self, hold_s: float = HOLD_S, size: int = SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s = hold_s
        self.size = size
        self.clock = clock
        self._renewed: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._turns: dict[bytes, _Turn] = {}

    def current(self, cookie: str) -> str:
        """``cookie`` as the auth service last renewed it (itself if it was not)."""
        now = self.clock()
        for _ in range(_CHAIN):
            key = _digest(cookie)
            entry = self._renewed.get(key)
            if entry is None:
                break
            expires, renewal = entry
            if now >= expires:
                del self._renewed[key]
                break
            cookie = renewal
        return cookie

    @asynccontextmanager
    async def turn(self, cookie: str) -> AsyncIterator[str]:
        """Wait until no call with this session is under way; yield the cookie to send.

        A session renewed while this call waited is followed to its renewal (and to that
        one's turn). Turns are dropped once nobody holds or waits for them.
        """
        while True:
            sent = self.current(cookie)
            key = _digest(sent)
            turn = self._turns.setdefault(key, _Turn())
            turn.users += 1
            try:
                async with turn.lock:
                    if self.current(cookie) == sent:
                        yield sent
                        return
            finally:
                turn.users -= 1
                if turn.users == 0:
                    del self._turns[key]

    def renewed(self, sent: str, set_cookies: Sequence[str]) -> None:
        """The auth service answered a call that sent ``sent`` with ``set_cookies``."""
        renewal = apply_set_cookies(sent, set_cookies)
        if renewal == sent:
            return
        key = _digest(sent)
        self._renewed[key] = (self.clock() + self.hold_s, renewal)
        self._renewed.move_to_end(key)
        while len(self._renewed) > self.size:
            self._renewed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._renewed)

    @property
    def turns(self) -> int:
        """Sessions with a call under way or waiting (0 when idle: nothing leaks)."""
        return len(self._turns)


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode("utf-8")).digest()


def apply_set_cookies(cookie: str, set_cookies: Sequence[str]) -> str:
    """The ``Cookie`` header a browser would send next, given the one it sent and the
    ``Set-Cookie`` headers of the answer: values replaced, new cookies added at the end,
    deleted ones (``Max-Age`` of 0 or less, ``Expires`` in the past) removed.

    Only name and value matter here: the auth service's cookies belong to the chat host
    (the auth prefix is on it), so path and domain select them for every request.
    """
    pairs = [part.strip() for part in cookie.split(";") if part.strip()]
    jar: dict[str, str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        jar.setdefault(name.strip(), value)
    for header in set_cookies:
        first, *attributes = header.split(";")
        name, sep, value = first.partition("=")
        name = name.strip()
        if not sep or not name:
            continue  # not a cookie a browser would keep
        if _deletes(attributes):
            jar.pop(name, None)
        else:
            jar[name] = value.strip()  # a replaced cookie keeps its place, a new one goes last
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def _deletes(attributes: Sequence[str]) -> bool:
    """Whether a ``Set-Cookie``'s attributes tell the browser to drop the cookie now
    (``Max-Age`` wins over ``Expires``, as in RFC 6265; unreadable values are ignored)."""
    max_age: int | None = None
    expires: float | None = None
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        try:
            if key == "max-age":
                max_age = int(value)
            elif key == "expires":
                expires = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            continue
    if max_age is not None:
        return max_age <= 0
    return expires is not None and expires <= time.time()
