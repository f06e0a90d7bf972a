"""The auth service's cookies, relayed to the client on whatever answer it gets.

A forward-auth service keeps its session in a cookie and renews it while it answers:
oauth2-proxy with ``--cookie-refresh`` answers ``202`` plus ``Set-Cookie`` with the
refreshed session, mod_auth_openidc's client-cookie sessions slide their inactivity timeout
the same way, and services clear their cookie with a ``401``. The browser learns of it only
if the answer it gets carries that ``Set-Cookie`` (nginx's ``auth_request_set`` +
``add_header``); otherwise it keeps the old cookie and the session dies with it.

The identity source hands them to :func:`keep`, which puts them in the request's notes
(``proxy/scope.py``); the public app's one ``on_response_prepare`` hook (``proxy/app.py``)
adds them with :func:`add_to`, after the upstream's own ``Set-Cookie``, to any answer:
relayed or streamed, a WebSocket's ``101``, the proxy's own pages and errors, a login
redirect. aiohttp runs that signal for every response it prepares, raised ``HTTPException``
answers included.

An answer that carries a session cookie belongs to one person: it is marked ``private``, so
that no shared cache (a CDN in front of nginx) keeps it for others.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from multidict import CIMultiDict

from proxy.auth.base import AUTH_COOKIES_KEY
from proxy.browser import set_cookie_name
from proxy.scope import Notes, notes_of


def keep(request: web.Request, cookies: tuple[str, ...]) -> None:
    """Hand ``cookies`` to whatever answer ``request`` gets: in its notes, or, for a request
    no public handler holds (an identity source used on its own), under ``AUTH_COOKIES_KEY``."""
    notes = notes_of(request)
    if notes is not None:
        notes.auth_cookies = cookies
    else:
        request[AUTH_COOKIES_KEY] = cookies


def keep_more(request: web.Request, cookies: tuple[str, ...]) -> None:
    """Hand ``cookies`` to ``request``'s answer too: those already kept for it stay, but
    for the names ``cookies`` set (which a browser would take from the later header)."""
    if not cookies:
        return
    names = {set_cookie_name(cookie) for cookie in cookies}
    earlier = tuple(c for c in kept(request, notes_of(request)) if set_cookie_name(c) not in names)
    keep(request, earlier + cookies)


def kept(request: web.Request, notes: Notes | None) -> tuple[str, ...]:
    """What :func:`keep` was given for ``request``, whose notes are ``notes`` (None: it has
    none), or nothing."""
    if notes is not None:
        return notes.auth_cookies
    try:
        return request[AUTH_COOKIES_KEY]
    except KeyError:
        return ()


def add_to(headers: CIMultiDict[str], cookies: Sequence[str]) -> None:
    """The cookies added to an answer's ``headers``, which then belong to one person."""
    for cookie in cookies:
        headers.add("Set-Cookie", cookie)
    headers["Cache-Control"] = private_cache_control(headers.getall("Cache-Control", []))


def private_cache_control(values: list[str]) -> str:
    """``Cache-Control`` that keeps shared caches from storing the answer; the browser's own
    cache keeps what the upstream allowed (``max-age``, ``immutable``, ...).

    ``no-store`` and ``private`` already say it. Otherwise ``public`` and ``s-maxage`` (the
    shared caches' directives) go and ``private`` comes first.
    """
    directives = [d.strip() for value in values for d in value.split(",") if d.strip()]
    names = {d.partition("=")[0].strip().lower() for d in directives}
    if "no-store" in names or "private" in names:
        return ", ".join(directives)
    kept = [d for d in directives if d.partition("=")[0].strip().lower() not in _SHARED]
    return ", ".join(["private", *kept])


_SHARED = frozenset({"public", "s-maxage"})
