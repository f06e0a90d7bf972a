"""One public request as the stages of ``proxy/public.py`` see it: each fact read once.

The request target, the client's forwarded view and the person are computed once, here or
by the stage that owns them, and every later stage decides on these values, never on the
request again: two readings of one request are how an edge check and the server behind it
come to disagree (the ``#fragment`` bypass of the account-creation refusal was one).

What the stages leave for the request's answer and its record (the request id, the auth
service's cookies, the person, the upstream's time) is in the scope's :class:`Notes`, kept on
the request under one key (:func:`notes_of`): the response hook and the access line find
all of it with one look-up that hits, instead of one per value, some of them misses (a
missed ``request.get`` costs a caught ``KeyError``). The notes, not the scope: the scope
holds the request, and a request holding it back would be a reference cycle, freed only by
the garbage collector (with its buffers) instead of as soon as the request is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from proxy.headers import Forwarded
from proxy.identity import Identity
from proxy.target import Target


@dataclass(slots=True)
class Notes:
    """What one public request's stages leave for its answer and its access line.

    ``request_id`` is the observation middleware's (read once by the scope), ``target`` the
    scope's (the access line's path, when it says the same as ``request.path``), ``identity``
    the identify stage's (as on the scope), ``auth_cookies`` the identity source's
    (``proxy/auth/cookies.py``), ``upstream_s`` the dispatch stage's: seconds from sending
    the request upstream to its response head.
    """

    request_id: str
    target: Target
    identity: Identity | None = None
    auth_cookies: tuple[str, ...] = ()
    upstream_s: float | None = None


NOTES_KEY = web.RequestKey("owui_notes", Notes)


def notes_of(request: web.Request) -> Notes | None:
    """The notes the public handler keeps on ``request``; None before it ran (targets no
    route matches, an ``Expect`` refused before the handler, a request that beat start-up).

    Indexed, not ``request.get``: ``Mapping.get`` is two Python calls, and the miss is rare.
    """
    try:
        return request[NOTES_KEY]
    except KeyError:
        return None


@dataclass(slots=True)
class Scope:
    """The facts of one public request, filled in stage by stage.

    ``target``, ``websocket`` and ``socketio`` are read before the first stage,
    ``forwarded`` too (the auth service and OpenWebUI are told the same); ``identity`` is
    set by the identify stage (None: an API key, whose owner the admit stage judges);
    ``relayed`` is the target that goes upstream (the raw one, unless the admit stage
    unsealed an Engine.IO session id); ``headers`` is set by the outbound stage; ``notes``
    is on the request too.
    """

    request: web.Request
    target: Target
    websocket: bool
    forwarded: Forwarded
    relayed: str
    notes: Notes
    # The target's path may reach OpenWebUI's Socket.IO app (socketio.is_socketio_path of
    # the server's reading, Target.path: dot segments unresolved, as python-engineio serves
    # them): the edge, identify, admit, outbound and dispatch stages all ask.
    socketio: bool
    identity: Identity | None = None
    # The admit stage found a token cookie that is not the person's on a page load or a
    # sign-out: it is left out of what is relayed, and the answer tells the browser to
    # delete it. On a sign-out, header credentials that are not theirs are left out too.
    drop_token_cookie: bool = False
    drop_header_credentials: bool = False
    headers: CIMultiDict[str] | None = None
