"""Pure decisions about browsers and API clients at the public edge (tested by tables).

- login redirects, whose ``rd=`` target is built from our own public URL only;
- the WebSocket ``Origin`` check against that URL (cross-site WebSocket hijacking);
- which ``Authorization`` is an OpenWebUI API key that may pass without an SSO identity;
- sign-out and "User mismatch" handling, which make the browser drop OpenWebUI's
  ``token`` cookie (see docs/proxy.md, "Identity switch"), and the cross-site check that
  keeps another site from signing a user out;
- the OpenWebUI endpoints that create accounts, which the public listener never relays.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlsplit

from proxy.target import Target

SIGNOUT_PATH = "/api/v1/auths/signout"
SIGNIN_PATH = "/api/v1/auths/signin"
# Where OpenWebUI 0.12.4 finishes a sign-in that asked for a second factor (its MFA router).
MFA_PREFIX = "/api/v1/auths/mfa/"
# Exactly what OpenWebUI 0.12.4 (utils/auth.py, get_current_user) answers when the token's
# user differs from the trusted email header.
MISMATCH_DETAIL = "User mismatch. Please sign in again."
# Deletes OpenWebUI's session cookie (set by /api/v1/auths/signin, HttpOnly, path /).
CLEAR_TOKEN_COOKIE = "token=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/"  # noqa: S105

# Reachable without any valid credential, so never relayed on the strength of an
# (unchecked) "sk-" prefix: sign-up would let anyone create accounts, even the first admin.
_NO_API_KEY_PREFIXES = ("/api/v1/auths/", "/oauth/")
_SLASHES = re.compile("/+")
_API_KEY_AUTHORIZATION = re.compile(r"(?i:bearer) sk-[A-Za-z0-9_-]+", re.ASCII)


# Endpoints that create accounts (OpenWebUI 0.12.4: routers/auths.py, routers/scim.py,
# main.py's OAuth routes), as canonical paths: exact, or a prefix when ending in "/". Behind
# the proxy users exist only through the trusted sign-in; any of these would let a
# signed-in user create an account for someone else's email with credentials they choose.
_ACCOUNT_CREATION = (
    ("/api/v1/auths/signup", "password sign-up"),
    ("/api/v1/auths/add", "adding users"),
    ("/api/v1/auths/ldap", "LDAP sign-in"),
    ("/api/v1/auths/oauth/", "OAuth token exchange"),
    ("/api/v1/scim/", "SCIM provisioning"),
    ("/oauth/", "OAuth sign-in"),
)
# Tool-server OAuth links a user's tools; it creates no user. Exactly OpenWebUI's two routes
# (main.py: /oauth/clients/{client_id}/authorize and .../callback, declared before the
# sign-in's), on a reading plus "/": anything else under /oauth/clients/ is the sign-in's
# /oauth/{provider}/... (/oauth/clients/login is the OAuth sign-in, provider "clients").
_NOT_ACCOUNT_CREATION = re.compile(r"/oauth/clients/[^/]+/(?:authorize|callback)/")
# What a canonical path + "/" must start with to be any of them.
ACCOUNT_CREATION_PREFIXES = tuple(
    endpoint if endpoint.endswith("/") else endpoint + "/" for endpoint, _ in _ACCOUNT_CREATION
)
# Sec-Fetch-Site values of a request the user started on our own site (or typed/bookmarked).
_FIRST_PARTY = frozenset({"same-origin", "none"})
# Accept: the ranges that decide page or JSON, an RFC 9110 qvalue, how much is read.
_HTML_OR_JSON = frozenset({"text/html", "application/json", "application/*", "*/*"})
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", re.ASCII)
_MAX_ACCEPT = 4096


def deny_readings(target: Target) -> tuple[str, ...]:
    """The readings of ``target`` a deny list must test, each lower-cased and without a
    trailing slash: its fold (``Target.route``, dot segments resolved), and, when the path
    has a dot segment, the server's own reading with only its slashes merged.

    The fold alone is not enough: Starlette never resolves dot segments, and takes them as
    route parameters (``{provider}`` matches ``..``, ``{provider:path}`` any number of
    them), so ``/oauth/../login`` is OpenWebUI's OAuth sign-in (provider ``..``) while its
    fold, ``/login``, is on no deny list. Nor the server's reading alone: other readers
    (front proxies, clients) resolve them. A path without ``/.`` has no dot segment, and
    its one reading is the fold (almost every request: one C call).
    """
    path = target.path
    if "/." not in path:
        return (target.route,)
    kept = _SLASHES.sub("/", path).lower().rstrip("/") or "/"
    return (target.route, kept)


def account_creation(target: Target) -> str | None:
    """What an account-creation endpoint does (for the refusal), or None for other paths.

    Decided on every reading a deny list tests (:func:`deny_readings`): any spelling a
    server could route to one of them is refused, whatever else is wrong with the target.
    """
    route = target.route
    if not (route + "/").startswith(ACCOUNT_CREATION_PREFIXES) and "/." not in target.path:
        return None  # two C calls: almost every request (deny_readings' one reading, inlined)
    for reading in deny_readings(target):
        what = _account_creation(reading)
        if what is not None:
            return what
    return None


def _account_creation(reading: str) -> str | None:
    canonical = reading + "/"
    if not canonical.startswith(ACCOUNT_CREATION_PREFIXES):  # one C call, most requests
        return None
    if _NOT_ACCOUNT_CREATION.fullmatch(canonical):
        return None
    for endpoint, what in _ACCOUNT_CREATION:
        if canonical.startswith(endpoint if endpoint.endswith("/") else endpoint + "/"):
            return what
    return None


def cross_site(sec_fetch_site: str | None, origin: str | None, own_origin: str) -> bool:
    """Whether the browser says this request comes from another site than ``own_origin``.

    ``Sec-Fetch-Site`` is set by the browser and cannot be forged by a page; anything but
    ``same-origin`` or ``none`` (typed, bookmarked) is another site, ``same-site`` included
    (a sibling subdomain is not us). An ``Origin`` that is present and not ours, ``null``
    included, is another site too. Neither header (old clients, scripts): not cross-site.
    """
    if sec_fetch_site is not None and sec_fetch_site.strip().lower() not in _FIRST_PARTY:
        return True
    if origin is None:
        return False
    return not origin_allowed(origin, own_origin)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, public_origin: str) -> bool:
    """A WebSocket upgrade's ``Origin`` must be our own public origin, exactly."""
    if origin is None or origin.strip() in ("", "null"):
        return False
    try:
        return origin_of(origin.strip()) == public_origin
    except ValueError:
        return False


def is_browser_navigation(method: str, accept: str | None, websocket: bool) -> bool:
    """A page load (GET/HEAD asking for HTML), as opposed to an API call.

    HTML must be acceptable (``text/html`` with a q-value above 0) and preferred at least as
    much as JSON (``application/json``, ``application/*`` or ``*/*``): a script that asks
    for JSON first, or refuses HTML (``text/html;q=0``), gets JSON, never a page.
    """
    if websocket or method not in ("GET", "HEAD"):
        return False
    lowered = (accept or "").lower()
    if "text/html" not in lowered:  # one C call, most API calls
        return False
    return _prefers_html(lowered[:_MAX_ACCEPT])


def _prefers_html(accept: str) -> bool:
    html_q = json_q = 0.0
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip(" \t")
        if media not in _HTML_OR_JSON:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip(" \t") == "q":
                valid = _QVALUE.fullmatch(value.strip(" \t"))
                q = float(valid[0]) if valid else -1.0
        if q < 0:
            continue  # an unreadable q-value: the range is ignored
        if media == "text/html":
            html_q = max(html_q, q)
        else:
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def login_redirect(login_url: str, public_url: str, raw_target: str) -> str:
    """``login_url`` with ``rd=`` the original absolute URL, built from ``public_url`` only.

    ``raw_target`` always starts with ``/`` (the relay refuses anything else), so the
    result's ``rd`` stays on our origin whatever the client sent as Host.
    """
    rd = public_url.rstrip("/") + raw_target
    separator = "&" if urlsplit(login_url).query else "?"
    return f"{login_url}{separator}rd={quote(rd, safe='')}"


def api_key_allowed(authorizations: list[str], target: Target, socketio: bool) -> bool:
    """Exactly one ``Authorization: Bearer sk-...``, to a path that checks the key, not one
    that may reach Socket.IO (``socketio``: the scope's ``is_socketio_path`` of the server's
    reading, ``/ws/socket.io/../../x`` included).

    Decided on every reading a deny list tests (:func:`deny_readings`), so
    ``/x/../api/v1/auths/signup`` counts as a sign-up, and
    ``/api/v1/auths/oauth/sessions/../../../x`` (OpenWebUI's ``{provider:path}``) as under
    ``/api/v1/auths``.
    """
    # The raw value, whole: OpenWebUI splits it on one space, and a value it cannot parse
    # makes it fall back to other credentials (CUSTOM_API_KEY_HEADER, x-api-key), which
    # may carry a stolen session token. No trimming, no Unicode spaces, one form only.
    if len(authorizations) != 1 or not _API_KEY_AUTHORIZATION.fullmatch(authorizations[0]):
        return False
    if socketio:
        return False  # Socket.IO reads tokens from its packets, never from Authorization
    return not any(
        (reading + "/").startswith(_NO_API_KEY_PREFIXES) for reading in deny_readings(target)
    )


def is_signin(method: str, target: Target) -> bool:
    """OpenWebUI's trusted sign-in, which creates the account of a new user: only the path
    its router sends there (exact: Starlette routes case-sensitively, and answers a trailing
    slash with a redirect, not a sign-in)."""
    return method == "POST" and target.path == SIGNIN_PATH


def is_signout(method: str, target: Target) -> bool:
    """A sign-out the proxy answers itself, in any spelling of the path (its fold)."""
    return method in ("GET", "POST") and target.route == SIGNOUT_PATH


def signs_in(body: bytes, email: str) -> bool:
    """Whether OpenWebUI's sign-in answer (200) is the account of ``email``: its ``email``
    field, compared as OpenWebUI stores emails (lower-cased). Anything else (another
    account, no email, not JSON) is not."""
    try:
        signed = json.loads(body).get("email")
    except (ValueError, RecursionError, AttributeError):
        return False
    return isinstance(signed, str) and signed.lower() == email.lower()


def set_cookie_name(set_cookie: str) -> str:
    """The name a ``Set-Cookie`` header value sets."""
    return set_cookie.partition(";")[0].partition("=")[0].strip()


def may_start_a_session(method: str, target: Target) -> bool:
    """A request whose answer may carry a new OpenWebUI session: the trusted sign-in, and
    the second-factor steps that finish one (OpenWebUI's MFA router)."""
    return method == "POST" and (target.path == SIGNIN_PATH or target.path.startswith(MFA_PREFIX))


def starts_a_session_for_someone_else(
    body: bytes, header_list: list[tuple[str, str]], email: str
) -> bool:
    """Whether an answer (200) carries an OpenWebUI session, a ``token`` in its JSON or a
    ``token`` cookie it sets, that is not ``email``'s account (:func:`signs_in`). An answer
    without one (a pending account's ``next_step``, a second-factor challenge) starts
    nothing and is not judged here."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    session = isinstance(data, dict) and "token" in data
    if not session:
        session = any(
            name.lower() == "set-cookie" and set_cookie_name(value) == "token"
            for name, value in header_list
        )
    return session and not signs_in(body, email)


def is_user_mismatch(status: int, body: bytes) -> bool:
    """OpenWebUI refused a token because it belongs to another user than the header says."""
    if status != 401:
        return False
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, RecursionError, AttributeError):
        return False
    return bool(detail == MISMATCH_DETAIL)
