"""The proxy's exception tree. Translated into responses in one place (``proxy/respond.py``).

ProxyError                    status, public message; never carries secrets
├── UpstreamError             (which upstream failure becomes which: proxy/upstream_errors.py)
│   ├── UpstreamUnavailable   502  cannot connect / connection broke before headers
│   ├── UpstreamTimeout       504  no response headers in time
│   └── UpstreamRefused       the upstream's status: it refused a WebSocket upgrade
├── BadIdentity               502  the identity source gave a value we refuse to forward
│   └── IdentityTooLarge           an auth-service answer over the header limits
├── AuthServiceUnavailable    503  forward-auth service / JWKS failed or timed out
├── BadRequest                400  e.g. a request target that is not a path
├── Forbidden                 403  (AccessDenied: the access rules; ActAsRefused;
│                                  ChatUpdateRefused)
├── ProxyAuthRequired         407  internal listener: missing or wrong service token (with
│                                  its Proxy-Authenticate challenge, ``headers``)
├── BodyStalled               408  the client's request body stopped arriving
└── BodyTooLarge              413
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class ConfigProblems(Exception):
    """A part of the proxy cannot start; ``problems`` lists every reason, one a line, each
    naming the setting (the process prints them and exits 2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ProxyError(Exception):
    """Base of every error the proxy turns into a response. ``str()`` is safe to show."""

    status = 500
    public = "internal error"
    # A stable, machine-readable name for refusals a caller must tell apart (JSON "code").
    code: str | None = None
    # Headers the answer must carry (the challenge of a 407).
    headers: Mapping[str, str] | None = None

    def __init__(self, reason: str | None = None) -> None:
        # ``reason`` is for the log and the JSON body; it must never contain a secret.
        super().__init__(reason or self.public)
        self.reason = reason or self.public


class UpstreamError(ProxyError):
    status = 502
    public = "upstream error"


class UpstreamUnavailable(UpstreamError):
    status = 502
    public = "upstream unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    public = "upstream timed out"


class UpstreamRefused(UpstreamError):
    """The upstream answered a WebSocket upgrade without 101; its status is passed on."""

    def __init__(self, status: int, reason: str | None = None) -> None:
        super().__init__(reason)
        self.status = status


class BadIdentity(ProxyError):
    status = 502
    public = "identity provider returned an unusable identity"


class IdentityTooLarge(BadIdentity):
    """The auth service answered with a header longer than the proxy reads (a person in
    very many groups): an identity problem of that person, not an outage."""

    code = "identity_too_large"


class AuthServiceUnavailable(ProxyError):
    status = 503
    public = "authentication service unavailable"


class BadRequest(ProxyError):
    status = 400
    public = "bad request"


class Forbidden(ProxyError):
    status = 403
    public = "forbidden"


class AccessDenied(Forbidden):
    """The identity is verified but the access rules (``proxy/access.py``) refuse it;
    ``email`` (who is signed in) is for the page a browser gets (``proxy/pages.py``)."""

    code = "access_denied"

    def __init__(self, reason: str, email: str | None = None) -> None:
        super().__init__(reason)
        self.email = email


class SignedInSomeoneElse(UpstreamError):
    """OpenWebUI answered a trusted sign-in with another account than the person the proxy
    verified and injected: it reads another header (its ``WEBUI_AUTH_TRUSTED_EMAIL_HEADER``
    differs from ``OWUI_PROXY_EMAIL_HEADER``) or the request carried another identity."""

    public = "OpenWebUI signed in another account; the operator must check its trusted header"
    code = "signin_identity_mismatch"


class ActAsRefused(Forbidden):
    """The internal listener will not sign in as this user; ``code`` is ``admin_account``
    (never an admin's token) or ``onboarding`` (OpenWebUI has no user yet)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class ChatUpdateRefused(Forbidden):
    """The internal listener relays only the provisioner's own update of its own threads
    (``proxy/chat_update.py``)."""

    code = "chat_update_refused"


class ProxyAuthRequired(ProxyError):
    status = 407
    public = "proxy authentication required"
    headers = MappingProxyType({"Proxy-Authenticate": "Bearer"})


class BodyStalled(ProxyError):
    status = 408
    public = "request body timed out"


class BodyTooLarge(ProxyError):
    status = 413
    public = "request body too large"


def drop_frames(error: BaseException) -> None:
    """Drop the tracebacks along ``error``'s chain (its causes and contexts).

    For an error a library keeps as well as raises, which the proxy records by its kind and
    message, never its traceback: the library's traceback then holds the error itself, a
    cycle only the garbage collector frees. aiohttp's connector keeps the connect errors it
    met in a list its frame holds (a failed call to the auth service or a side request, on
    every refused request while the service is down); aiohttp's body stream keeps the error
    of a client that went away (``proxy/relay.py``).
    """
    pending = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
