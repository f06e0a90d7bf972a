"""The contract every identity source (forward-auth, JWT) fulfils."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from proxy.headers import Forwarded
from proxy.identity import Identity

# The ``Set-Cookie`` values the identity source got with its answer for a request no
# public handler holds (an identity source used on its own); the public listener's go in
# the request's notes (``proxy/scope.py``). Both through ``proxy/auth/cookies.py``'s ``keep``.
AUTH_COOKIES_KEY = web.RequestKey("owui_auth_cookies", tuple[str, ...])


@dataclass(frozen=True, slots=True)
class Denied:
    """The source said no. ``status`` is 401 or 403; ``headers`` (e.g. ``Location``,
    ``WWW-Authenticate`` from an auth service) are passed on to the client; ``reason`` is
    logged, never a secret."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Authenticator(Protocol):
    """Decides who a public request comes from.

    ``authenticate`` returns an :class:`Identity` (validated via ``proxy.identity``) or a
    :class:`Denied`; it raises ``AuthServiceUnavailable`` when it cannot decide. An unusable
    identity value is ``BadIdentity`` (502) from an auth service, a 401 ``Denied`` from a
    token. It never reads identity from the client's own identity headers. Cookies the
    source's answer sets for the client go to ``proxy.auth.cookies.keep``, never into a
    cache.
    """

    async def start(self) -> None:
        """Acquire resources (e.g. fetch the JWKS). Called once before serving."""

    async def close(self) -> None:
        """Release resources."""

    def problem(self) -> str | None:
        """None when ready; otherwise what is wrong (shown on /readyz)."""

    def notices(self) -> list[str]:
        """What ``/readyz`` shows without turning unready: trouble of some identities, not
        of the proxy (taking it out of rotation would lock everyone else out too)."""

    async def authenticate(
        self, request: web.Request, forwarded: Forwarded | None = None
    ) -> Identity | Denied:
        """Decide who sent ``request``; ``forwarded`` is its forwarded view, when the
        caller has read it already (the public listener's scope)."""
