"""One public request as the stages of ``proxy/public.py`` see it: each fact read once.

The request target, the client's forwarded view and the person are computed once, here or
by the stage that owns them, and every later stage decides on these values, never on the
request again: two readings of one request are how an edge check and the server behind it
come to disagree (the ``#fragment`` bypass of the account-creation refusal was one).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from proxy.headers import Forwarded
from proxy.identity import Identity
from proxy.target import Target


@dataclass(slots=True)
class Scope:
    """The facts of one public request, filled in stage by stage.

    ``target`` and ``websocket`` are read before the first stage, ``forwarded`` too (the
    auth service and OpenWebUI are told the same); ``identity`` is set by the identify
    stage (None: an API key, whose owner the admit stage judges); ``relayed`` is the
    target that goes upstream (the raw one, unless the admit stage unsealed an Engine.IO
    session id); ``headers`` is set by the outbound stage.
    """

    request: web.Request
    target: Target
    websocket: bool
    forwarded: Forwarded
    relayed: str
    identity: Identity | None = None
    # The admit stage found a token cookie that is not the person's on a page load or a
    # sign-out: it is left out of what is relayed, and the answer tells the browser to
    # delete it. On a sign-out, header credentials that are not theirs are left out too.
    drop_token_cookie: bool = False
    drop_header_credentials: bool = False
    headers: CIMultiDict[str] | None = None
