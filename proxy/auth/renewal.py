"""One browser session's forward-auth calls take turns; a renewed session replaces the old.

A browser loads a page with many requests at once, all carrying the same session cookie.
When that session is due for a refresh, each of those calls would make the auth service
refresh it (oauth2-proxy's cookie store, mod_auth_openidc's client-cookie sessions): with
refresh tokens that work once, the first refresh succeeds and every other one presents a
used token, which the identity provider takes for theft and answers by revoking the whole
session. The user is signed out in the middle of a page load. oauth2-proxy documents this
for its cookie store ("conflicts which force users to re-authenticate").

So calls carrying the same session take turns (one at a time, in arrival order), and when
an answer renews the session (``Set-Cookie``), the session that call sent is remembered
with its renewal for :data:`HOLD_S` seconds: a later call still carrying the old one, sent
before the browser saw the answer (or given an older answer's cookie last), asks about the
renewed one instead. The browser gets the renewal with the answer to the call that made it,
and again with the answer to any call sent after it still carrying the old session (the first
answer may never have reached it: a request the browser abandoned mid-load).

The session is the part of the ``Cookie`` header the auth service owns: the cookies whose
names it has set on answers that admit (at most :data:`NAMES`), sorted by name, so
OpenWebUI's own cookies and the order a browser sends them in do not matter. A header
holding none of them carries no session: it takes its turn as a whole, and is never renewed
(the same plain header, ``lang=en``, can come from anyone's browser).

What is remembered is a cookie (a credential), so briefly: a digest of the old session, the
new one and the ``Set-Cookie`` headers that made it, at most :data:`SIZE` of them. Within
that window whoever presents the old cookie is judged as the renewed session, and given it,
which is what the old cookie was worth a moment earlier anyway (the auth service would have
refreshed it for them); after it the auth service judges the old cookie itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime

from proxy.browser import set_cookie_name

# How long a renewal stands in for the cookie it replaced: longer than a page load takes to
# send its requests, far shorter than any session lives.
HOLD_S = 30.0
# Renewals remembered at most (the oldest go first).
SIZE = 4096
# Cookie names of the auth service remembered at most (oauth2-proxy and mod_auth_openidc
# use a handful: the session, its chunks, a CSRF or state cookie).
NAMES = 256


class Renewals:
    """The turns and the recent renewals of one process. ``clock`` is injectable for tests."""

    def __init__(
        self, hold_s: float = HOLD_S, size: int = SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s = hold_s
        self.size = size
        self.clock = clock
        self._names: set[str] = set()
        # Read by the forward authenticator too: empty, no cookie can have been renewed.
        # old session's digest -> (until when, the session it became, the Set-Cookie headers
        # that made it, which a browser still sending the old one is given).
        self.recent: OrderedDict[bytes, tuple[float, str, tuple[str, ...]]] = OrderedDict()
        self._turns: dict[bytes, _Turn] = {}

    def current(self, cookie: str) -> str:
        """``cookie`` with its session as the auth service last renewed it (``cookie``
        itself if it was not)."""
        return self.follow(cookie)[0]

    def follow(self, cookie: str) -> tuple[str, tuple[str, ...]]:
        """:meth:`current`, and the ``Set-Cookie`` headers that take a browser holding
        ``cookie`` to it (none when it was not renewed).

        A request still carrying a session that was renewed gets those with its answer: the
        answer that made the renewal may never have reached the browser (its request was
        abandoned, a navigation), and after the hold the old cookie is judged as itself,
        which services that rotate refresh tokens answer by revoking the session.

        Renewals chain: services that renew on every answer (mod_auth_openidc's client-cookie
        sessions slide their timeout) renew a session once per request, dozens of times in
        one page load. The chain is followed to its end, and every session on the way is
        pointed at that end, so the next look-up takes one step.
        """
        if not self.recent:  # nothing renewed lately (the usual case): no digest to make
            return cookie, ()
        owned = self._owned(cookie)
        if not owned:  # none of the service's cookies: no session, nothing renewed
            return cookie, ()
        start = "; ".join(owned)
        session, key = start, _digest(start)
        passed: list[bytes] = []
        # The chain's Set-Cookie headers, the last for each name (the browser keeps that one).
        sets: dict[str, str] = {}
        now = self.clock()
        while (entry := self.recent.get(key)) is not None and key not in passed:
            expires, renewal, set_cookies = entry
            if now >= expires:
                del self.recent[key]
                break
            passed.append(key)
            for header in set_cookies:
                name = set_cookie_name(header)
                sets.pop(name, None)  # a replaced cookie's header goes after the rest
                sets[name] = header
            session, key = renewal, _digest(renewal)
        if session == start:
            return cookie, ()
        headers = tuple(sets.values())
        for earlier in passed[:-1]:
            # Every one on the way now leads to the end, with every header of the way: a
            # browser anywhere on it keeps, for each name, the last one (the end's cookies).
            self.recent[earlier] = (self.recent[earlier][0], session, headers)
        return self._with_session(cookie, session), headers

    def session(self, cookie: str) -> str:
        """The part of ``cookie`` the auth service owns, in a canonical order (``cookie``
        itself when it holds none of the service's cookies: what its turn is taken by)."""
        owned = self._owned(cookie)
        return "; ".join(owned) if owned else cookie

    def _owned(self, cookie: str) -> list[str]:
        """The pairs of ``cookie`` whose names the auth service has set, sorted."""
        if not self._names:
            return []
        return sorted(p for p in _pairs(cookie) if p.partition("=")[0].strip() in self._names)

    def _with_session(self, cookie: str, session: str) -> str:
        others = [p for p in _pairs(cookie) if p.partition("=")[0].strip() not in self._names]
        return "; ".join([*others, *_pairs(session)])

    @asynccontextmanager
    async def turn(self, cookie: str) -> AsyncIterator[str]:
        """Wait until no call with this session is under way; yield the cookie to send.

        A session renewed while this call waited is followed to its renewal (and to that
        one's turn). Turns are dropped once nobody holds or waits for them.
        """
        while True:
            sent = self.current(cookie)
            key = _digest(self.session(sent))
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

    def renewed(self, sent: str, set_cookies: Sequence[str], admitted: bool = True) -> None:
        """The auth service answered a call that sent ``sent`` with ``set_cookies``;
        ``admitted``: its answer admitted the request (2xx).

        The names of the service's cookies are learned from admitting answers only: the
        cookies a service sets as it vouches for a session are that session's. A login
        redirect's cookies are not (mod_auth_openidc names each login's state cookie anew,
        ``mod_auth_openidc_state_<state>``): learned, anyone's login redirects would fill
        the :data:`NAMES` first come, and the session's name, never learned, would leave
        every renewal unfollowed.
        """
        if admitted:
            for header in set_cookies:
                name = set_cookie_name(header)
                if name and len(self._names) < NAMES:
                    self._names.add(name)
        # Only a session is renewed: a ``Cookie`` header holding none of the service's
        # cookies (a browser not signed in) is no one's, and the cookie its answer set (a
        # login redirect's session id, authenticated once that person signs in) must never
        # be sent for whoever else sends the same header.
        owned = self._owned(sent)
        if not owned:
            return
        old = "; ".join(owned)
        # The session it became: the service's cookies only ("" when the answer deleted
        # them all), never the header's other cookies (OpenWebUI's token), which are this
        # request's and must not ride along with another carrying the same old session.
        new = "; ".join(self._owned(apply_set_cookies(sent, set_cookies)))
        if new == old:
            return
        key = _digest(old)
        self.recent[key] = (self.clock() + self.hold_s, new, tuple(set_cookies))
        self.recent.move_to_end(key)
        while len(self.recent) > self.size:
            self.recent.popitem(last=False)

    def __len__(self) -> int:
        return len(self.recent)

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


def _pairs(cookie: str) -> list[str]:
    return [part.strip() for part in cookie.split(";") if part.strip()]


def apply_set_cookies(cookie: str, set_cookies: Sequence[str]) -> str:
    """The ``Cookie`` header a browser would send next, given the one it sent and the
    ``Set-Cookie`` headers of the answer: values replaced, new cookies added at the end,
    deleted ones (``Max-Age`` of 0 or less, ``Expires`` in the past) removed.

    Only name and value matter here: the auth service's cookies belong to the chat host
    (the auth prefix is on it), so path and domain select them for every request.
    """
    jar: dict[str, str] = {}
    for pair in _pairs(cookie):
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
