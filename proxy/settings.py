"""The proxy's one frozen settings model.

Read once at start from environment variables (prefix ``OWUI_PROXY_``) and, optionally, a
TOML file (same keys, lower case, no prefix); the environment wins. Every problem is
collected and reported together by :func:`load_settings`, each naming the setting, so an
operator fixes a broken configuration in one pass. Nothing else in the proxy reads
``os.environ``. Field descriptions double as the configuration reference (``docs/config.md``
is generated from them by ``python -m proxy --print-config-reference``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxy.allowlist import SIGNIN, Allowlist, reaches_account
from proxy.browser import origin_of
from proxy.connections import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEPALIVE_TIMEOUT_S
from proxy.eio_sessions import SessionSecretError, read_session_secret
from proxy.identity import InvalidIdentity, check_group
from proxy.pages import PagesError, load_folder
from proxy.pseudonym import PseudonymKeyError, load_key
from proxy.setting_names import (
    Hint,
    misspelt_prefixes,
    unclear_variables,
    unknown,
    unknown_variables,
)
from proxy.tokens import TokenFileError, load_tokens
from proxy.webhooks import BadSecret, read_secret_file

ENV_PREFIX = "OWUI_PROXY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The endpoints the provisioner needs, and nothing more (see docs/internal-listener.md).
DEFAULT_INTERNAL_ALLOW: tuple[str, ...] = (
    "GET /api/config",
    "POST /api/v1/auths/signin",
    "POST /api/v1/chats/new",
    "GET /api/v1/chats/archived",
    "GET /api/v1/chats/list",
    "GET /api/v1/chats/all",
    "GET /api/v1/chats/{id}",
    "POST /api/v1/chats/{id}",
    "POST /api/v1/chats/{id}/archive",
    "DELETE /api/v1/chats/{id}",
    # Courses whose threads live in a sidebar folder (placement = "folder").
    "POST /api/v1/chats/{id}/folder",
    "GET /api/v1/folders/",
    "POST /api/v1/folders/",
    "DELETE /api/v1/folders/{id}",
    # Who has an account, read as the lookup account (status, --dry-run, remove).
    "GET /api/v1/users/search",
)

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_ALLOW_RULE = re.compile(r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[A-Za-z0-9._~{}/-]*)$")
_DOMAIN_RULE = re.compile(r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)+$")
_PATH_PREFIX = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)+$")
_HMAC_OR_NONE = re.compile(r"^(none|HS\d+)$", re.IGNORECASE)
_KNOWN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


# Spellings an operator may carry over from oauth2-proxy (its flags, and its variables
# OAUTH2_PROXY_<NAME> with our prefix), and what each means here.
OAUTH2_PROXY_SPELLINGS: dict[str, Hint] = {
    "EMAIL_DOMAIN": Hint("ALLOWED_EMAIL_DOMAINS", "oauth2-proxy's --email-domain"),
    "EMAIL_DOMAINS": Hint("ALLOWED_EMAIL_DOMAINS", "oauth2-proxy's --email-domain"),
    "ALLOWED_GROUP": Hint("ALLOWED_GROUPS", "oauth2-proxy's --allowed-group"),
    "UPSTREAMS": Hint("UPSTREAM", "oauth2-proxy's --upstream"),
    "HTTP_ADDRESS": Hint("LISTEN", "oauth2-proxy's --http-address"),
    "UPSTREAM_TIMEOUT": Hint("RESPONSE_TIMEOUT_S", "oauth2-proxy's --upstream-timeout"),
    "REVERSE_PROXY": Hint(
        "TRUSTED_PROXIES",
        "oauth2-proxy's --reverse-proxy; here: the front proxies whose X-Forwarded-* are believed",
    ),
    "TRUSTED_IP": Hint(
        None,
        "oauth2-proxy's --trusted-ip lets addresses skip authentication; nothing skips it "
        f"here. Front proxies whose X-Forwarded-* are believed: {ENV_PREFIX}TRUSTED_PROXIES",
    ),
    "TRUSTED_IPS": Hint(
        None,
        "oauth2-proxy's --trusted-ip lets addresses skip authentication; nothing skips it "
        f"here. Front proxies whose X-Forwarded-* are believed: {ENV_PREFIX}TRUSTED_PROXIES",
    ),
    **dict.fromkeys(
        ("SKIP_AUTH_ROUTE", "SKIP_AUTH_ROUTES", "SKIP_AUTH_REGEX", "SKIP_AUTH_PREFLIGHT"),
        Hint(
            None,
            "oauth2-proxy's --skip-auth-*; every request is authenticated here (OpenWebUI API "
            f"keys without SSO: {ENV_PREFIX}ALLOW_API_KEYS)",
        ),
    ),
    "AUTHENTICATED_EMAILS_FILE": Hint(
        None,
        "oauth2-proxy's --authenticated-emails-file; here access is by domain or group: "
        f"{ENV_PREFIX}ALLOWED_EMAIL_DOMAINS, {ENV_PREFIX}ALLOWED_GROUPS",
    ),
    **dict.fromkeys(
        ("ALLOWED_ROLE", "ALLOWED_ROLES"),
        Hint(
            None,
            "oauth2-proxy's --allowed-role; here access is by domain or group: "
            f"{ENV_PREFIX}ALLOWED_EMAIL_DOMAINS, {ENV_PREFIX}ALLOWED_GROUPS",
        ),
    ),
    **dict.fromkeys(
        ("WHITELIST_DOMAIN", "WHITELIST_DOMAINS"),
        Hint(
            None,
            "oauth2-proxy's redirect allowlist; the proxy's login redirects only ever return "
            f"to {ENV_PREFIX}PUBLIC_URL",
        ),
    ),
}


class SettingsError(Exception):
    """Raised by :func:`load_settings`; ``problems`` lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _split_list(value: Any) -> Any:
    """Accept a comma- or newline-separated string for list settings (env and TOML alike).

    Only ASCII blanks around an item are dropped (never ``str.strip()``'s Unicode spaces):
    an item with others fails its own check, named, instead of silently becoming another.
    """
    if isinstance(value, str):
        items = [item.strip(" \t\r") for item in re.split(r"[,\n]", value)]
        if not any(items):
            # Read as "no items", which for the access rules means "everyone".
            raise ValueError(
                "empty: no items, only separators or blanks; remove the setting to use its "
                "default, or name the items"
            )
        return [item for item in items if item]
    return value


def _check_list_items(value: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse list items that can never match anything: another syntax for a list read as
    one item (``[year-9, staff]``, ``year-9;staff``, ``"staff"``), or a TOML array item
    that is empty or has spaces around it."""
    bad = [f"{item!r} ({why})" for item in value if (why := _never_matches(item))]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: can never match; write the items as a comma list "
            '(year-9,staff) or, in the TOML file, an array (["year-9", "staff"])'
        )
    return value


def _never_matches(item: str) -> str | None:
    # ASCII blanks only: Unicode-aware stripping would fold names the IdP tells apart.
    if not item.strip(" \t"):
        return "empty"
    if item != item.strip(" \t"):
        return "spaces around it"
    if item[0] == "[" or item[-1] == "]":
        return "a bracket: a list is written without them"
    if item[0] in "\"'" or item[-1] in "\"'":
        return "quoted: quotes are read as part of the name"
    if ";" in item:
        return "';' does not separate items, ',' does"
    return None


def _refuse_blanks(value: str, *, inside: bool) -> None:
    """Blanks around a value (``inside``: anywhere), and control characters anywhere: a CRLF
    env file's CR, a stray space. Such a value loaded as written and failed at run time."""
    if (
        value != value.strip()
        or (inside and any(ch.isspace() for ch in value))
        or not value.isprintable()
    ):
        raise ValueError(
            f"{value!r} has blanks or control characters in it (an env file with CRLF line "
            "ends?); write the value alone"
        )


def _check_listen(value: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``unix:/absolute/path``."""
    _refuse_blanks(value, inside=not value.startswith("unix:"))
    if value.startswith("unix:"):
        if not value[5:].startswith("/"):
            raise ValueError(
                "a unix socket must be an absolute path, e.g. unix:/run/owui/proxy.sock"
            )
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path")
    return value


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    # "'" is legal in a header name, so a name copied with its .env quotes would load, and
    # the proxy would strip and inject 'X-User-Email' (quotes and all) while OpenWebUI
    # reads the client's own X-User-Email. No header anyone configures has one.
    if "'" in value:
        raise ValueError(
            f"{value!r}: quotes are read as part of the name; write the name without them"
        )
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if "@" in parts.netloc:
        # Never echoed: the settings are logged at start, and the upstream's were dropped.
        raise ValueError(
            "credentials in the URL (user:password@) are refused: the settings are logged "
            "at start; write the URL without them"
        )
    _refuse_blanks(value, inside=True)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/") if parts.path in ("", "/") else value


def _check_origin_url(value: str) -> str:
    parts = urlsplit(_check_http_url(value))
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL without query or fragment")
    return value.rstrip("/")


def _check_path_prefix(value: str) -> str:
    if not _PATH_PREFIX.fullmatch(value) or "/./" in value or "/../" in value:
        raise ValueError(
            f"{value!r} is not a path prefix like /oauth2/ (starts and ends with '/', "
            "letters, digits and ._~- only, not '/' alone)"
        )
    return value


def login_loop(login_url: str, public_url: str, auth_path_prefix: str) -> str | None:
    """Why ``login_url`` would send browsers round in circles, or None when it cannot.

    A login URL on the public host is served by whatever the front proxy routes there:
    anything but the auth prefix reaches this proxy, which answers an unauthenticated
    browser with the login redirect again, forever. Plain http on port 80 counts as the
    public host too: the shipped nginx sends it on to https under the same name.
    """
    login, public = urlsplit(login_url), urlsplit(public_url)
    same_origin = origin_of(login_url) == origin_of(public_url)
    redirected = login.scheme == "http" and login.port in (None, 80) and public.scheme == "https"
    same_host = (login.hostname or "").lower() == (public.hostname or "").lower()
    if not (same_host and (same_origin or redirected)):
        return None
    segments = unquote(login.path).split("/")
    if login.path.startswith(auth_path_prefix) and not {".", ".."} & set(segments):
        return None
    return (
        f"{login_url} is on the public host {public.hostname} but not under "
        f"OWUI_PROXY_AUTH_PATH_PREFIX ({auth_path_prefix}), so it reaches this proxy and the "
        "login redirects forever; use the auth service's login under that prefix (e.g. "
        f"{origin_of(public_url)}{auth_path_prefix}start) and route the prefix to the auth "
        "service in nginx (deploy/nginx), or set the prefix your nginx routes there"
    )


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, or nothing when it cannot be listed (reported elsewhere)."""
    try:
        return list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []


def _refuse_world_writable(*paths: Path) -> None:
    """Files the proxy trusts (a key, its pages) that anyone may change, or add to."""
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # a missing file is reported by the check that reads it
        if mode & stat.S_IWOTH:
            raise ValueError(
                f"{path} is world-writable (mode {stat.S_IMODE(mode):04o}): anyone may change "
                f"what the proxy trusts; run: chmod o-w {path}"
            )


def _check_network(value: Any) -> IPNetwork:
    """An address or a network exactly as written: ``10.0.0.0/0`` (meant /8) or
    ``10.89.1.2/8`` (meant /32) are not silently widened to what their prefix says."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from exc
    if network.prefixlen == 0:
        raise ValueError(
            f"{value!r} is every address: any client's X-Forwarded-* would be believed; "
            "name the front proxies' own addresses"
        )
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            f"{value!r} has host bits set, so it means all of {network}; write {network} if "
            "that is meant, or the address alone for that one address"
        ) from None
    return network


Listen = Annotated[str, AfterValidator(_check_listen)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
BaseURL = Annotated[str, AfterValidator(_check_origin_url)]
StrList = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(_split_list), AfterValidator(_check_list_items)
]
Networks = Annotated[
    tuple[Annotated[IPNetwork, BeforeValidator(_check_network)], ...],
    NoDecode,
    BeforeValidator(_split_list),
]
Seconds = Annotated[float, Field(gt=0)]
AuthPathPrefix = Annotated[str, AfterValidator(_check_path_prefix)]


def _jwt_source_collision(settings: Settings) -> str | None:
    """Why the JWT cannot come from ``jwt_source``: a place OpenWebUI reads its own
    credentials from, or a header the proxy strips and injects; None when it may."""
    kind, _, name = (settings.jwt_source or "").partition(":")
    if kind == "cookie":
        if name == "token":
            return (
                "the cookie 'token' is OpenWebUI's own session cookie, which the proxy binds "
                "to the person; name the cookie your edge puts the JWT in"
            )
        return None
    if _normalise(name) == _normalise(settings.openwebui_api_key_header):
        return (
            f"{name} is where OpenWebUI reads API keys (OWUI_PROXY_OPENWEBUI_API_KEY_HEADER); "
            "name the header your edge puts the JWT in"
        )
    identity = [settings.email_header, settings.name_header, settings.groups_header]
    if _normalise(name) in {_normalise(h) for h in [*identity, settings.role_header]}:
        return (
            f"{name} is an identity header the proxy strips from every request and injects "
            "itself; name the header your edge puts the JWT in"
        )
    return None


class Settings(BaseSettings):
    """Everything the proxy can be told. Immutable once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    # --- where to listen and where OpenWebUI is -------------------------------------------
    upstream: BaseURL = Field(description="OpenWebUI's base URL, e.g. http://127.0.0.1:8080.")
    listen: Listen = Field(
        "127.0.0.1:8000", description="Public listener: HOST:PORT or unix:/path."
    )
    admin_listen: Listen = Field(
        "127.0.0.1:9000",
        description="Admin listener serving only /healthz, /readyz and /metrics.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the public port (SO_REUSEPORT). TCP only.",
    )

    # --- the header names OpenWebUI is configured with -----------------------------------
    email_header: HeaderName = Field(
        "X-User-Email", description="OpenWebUI's WEBUI_AUTH_TRUSTED_EMAIL_HEADER."
    )
    name_header: HeaderName = Field(
        "X-User-Name", description="OpenWebUI's WEBUI_AUTH_TRUSTED_NAME_HEADER."
    )
    groups_header: HeaderName = Field(
        "X-User-Groups", description="OpenWebUI's WEBUI_AUTH_TRUSTED_GROUPS_HEADER."
    )
    role_header: HeaderName = Field(
        "X-User-Role",
        description="OpenWebUI's WEBUI_AUTH_TRUSTED_ROLE_HEADER; always stripped, never injected.",
    )

    # --- identity source ------------------------------------------------------------------
    auth: Literal["forward", "jwt"] = Field(
        description="Identity source: 'forward' (ask an auth service) "
        "or 'jwt' (verify a signed JWT)."
    )
    forward_auth_url: HttpURL | None = Field(
        None,
        description="For auth=forward: the auth service's endpoint (oauth2-proxy /oauth2/auth, "
        "Authelia /api/authz/forward-auth, authentik outpost, ...).",
    )
    forward_auth_email_header: HeaderName = Field(
        "X-Auth-Request-Email", description="Auth-service response header carrying the email."
    )
    forward_auth_name_header: HeaderName = Field(
        "X-Auth-Request-User", description="Auth-service response header carrying the name."
    )
    forward_auth_groups_header: HeaderName = Field(
        "X-Auth-Request-Groups", description="Auth-service response header carrying the groups."
    )
    forward_auth_cache_s: float = Field(
        0,
        ge=0,
        description="Cache a 2xx forward-auth decision this many seconds (0 = off). "
        "Keyed by a hash of all the auth service is sent (cookie, method, host, URI, client "
        "address), so an answer never stands in for another request; failures never cached.",
    )
    forward_auth_cache_size: int = Field(
        10_000, ge=1, description="Most entries the forward-auth decision cache holds (LRU)."
    )

    jwt_source: str | None = Field(
        None,
        description="For auth=jwt: where the token is, 'header:NAME' or 'cookie:NAME' "
        "(e.g. header:Cf-Access-Jwt-Assertion, cookie:__session). Never Authorization.",
    )
    jwt_jwks_url: HttpURL | None = Field(
        None, description="JWKS endpoint of the issuer (exactly one of this and jwt_key_file)."
    )
    jwt_key_file: Path | None = Field(
        None, description="PEM public key file (exactly one of this and jwt_jwks_url)."
    )
    jwt_issuer: str | None = Field(None, description="Required 'iss' claim value.")
    jwt_audience: StrList = Field((), description="Accepted 'aud' values (comma list).")
    jwt_algorithms: StrList = Field(
        ("RS256", "ES256"),
        description="Accepted signature algorithms; 'none' and HMAC (HS*) are refused.",
    )
    jwt_leeway_s: float = Field(30, ge=0, le=600, description="Clock skew allowed for exp/nbf.")
    jwt_email_claim: str = Field("email", description="Claim holding the email.")
    jwt_name_claim: str = Field("name", description="Claim holding the display name.")
    jwt_groups_claim: str = Field(
        "groups", description="Claim holding groups (a list or a comma string)."
    )
    jwt_require_email_verified: bool = Field(
        False, description="When true, the 'email_verified' claim must be true."
    )
    jwt_jwks_refresh_s: Seconds = Field(
        300, description="How often the JWKS is refreshed in the background."
    )
    jwt_jwks_min_refetch_s: Seconds = Field(
        10, description="Least time between two refetches triggered by an unknown 'kid'."
    )

    # --- browser experience ----------------------------------------------------------------
    public_url: BaseURL | None = Field(
        None,
        description="The proxy's own public base URL (https://chat.example.edu). Used to build "
        "login redirects and to check WebSocket Origin; never taken from client headers.",
    )
    login_url: HttpURL | None = Field(
        None,
        description="Where an unauthenticated browser navigation is sent "
        "(302, with rd=<original URL>). Needs public_url. On the public host itself it must "
        "lie under auth_path_prefix, or it would reach this proxy and loop.",
    )
    auth_path_prefix: AuthPathPrefix = Field(
        "/oauth2/",
        description="The path prefix of the public host that the front proxy (nginx) routes to "
        "the auth service instead of this proxy (oauth2-proxy's /oauth2/); must match "
        "deploy/nginx. A login_url on the public host must lie under it.",
    )
    logout_url: HttpURL | None = Field(
        None,
        description="The IdP's logout URL, returned as redirect_url by /api/v1/auths/signout.",
    )
    pages_dir: Path | None = Field(
        None,
        description="A folder of HTML templates replacing the proxy's own pages for browsers "
        "(PAGE.LANG.html, e.g. access-denied.de.html; docs/proxy.md, 'Pages'); each file is "
        "checked at start. Unset: the built-in pages, in English, German, French and Spanish.",
    )
    allow_api_keys: bool = Field(
        False,
        description="Relay requests bearing an OpenWebUI API key (Bearer sk-...) without an SSO "
        "identity, once OpenWebUI has named the key's owner and the owner passes the access "
        "rules (never with allowed_groups: the IdP's groups are unknown without SSO).",
    )
    session_secret_file: Path | None = Field(
        None,
        description="File holding the secret (first non-comment line, >= 32 visible ASCII "
        "characters, not world-readable) that seals each Engine.IO session id to the person "
        "who opened it. The same file on every proxy behind one name; unset, a random secret "
        "per proxy process (its workers share it).",
    )
    openwebui_api_key_header: HeaderName = Field(
        "x-api-key",
        description="The header OpenWebUI reads API keys from (its CUSTOM_API_KEY_HEADER): a "
        "credential there, as in Authorization or the token cookie, must be the person's own.",
    )

    # --- internal act-as listener -----------------------------------------------------------
    internal_listen: Listen | None = Field(
        None, description="Internal act-as listener (HOST:PORT or unix:/path); off when unset."
    )
    internal_tokens_file: Path | None = Field(
        None,
        description="Service tokens accepted on the internal listener, one per line (>= 32 chars); "
        "'#' comments allowed; must not be world-readable; re-read on SIGHUP.",
    )
    internal_allow: StrList = Field(
        DEFAULT_INTERNAL_ALLOW,
        description="'METHOD /path/{param}' rules the internal listener relays; all else is 403.",
    )

    # --- who may use OpenWebUI at all (checked after authentication) ------------------------
    allowed_email_domains: StrList = Field(
        (),
        description="If set, only emails in these domains pass (comma list; 'school.edu' is "
        "that domain exactly, '*.school.edu' its subdomains). Others get 403. Both listeners.",
    )
    allowed_groups: StrList = Field(
        (),
        description="If set, only identities in at least one of these groups pass (comma list, "
        "exact names). Public listener only: an act-as call names no groups.",
    )

    # --- first sign-in hook: provision users of any IdP -----------------------------------
    signin_hook_url: HttpURL | None = Field(
        None,
        description="Where to send a signed 'user.seen' event (Standard Webhooks) the first time "
        "this process sees an identity, e.g. the provisioner's webhook receiver. Off when unset.",
    )
    signin_hook_secret_file: Path | None = Field(
        None,
        description="File holding the hook's 'whsec_...' signing secret (first non-comment line; "
        "must not be world-readable). Required with signin_hook_url.",
    )
    signin_hook_queue_size: int = Field(
        10_000, ge=1, description="Events waiting for delivery at most; beyond, new ones drop."
    )
    signin_hook_workers: int = Field(4, ge=1, le=64, description="Deliveries under way at once.")
    signin_hook_max_attempts: int = Field(
        10,
        ge=1,
        le=100,
        description="Tries per event (backoff 1 s doubling to 5 min, with jitter); then given up "
        "and forgotten, so the user's next request queues it again.",
    )
    signin_hook_timeout_s: Seconds = Field(
        60, description="Waiting for the receiver's answer to one delivery."
    )
    signin_hook_remember_s: Seconds = Field(
        12 * 3600, description="How long an identity counts as seen (per process)."
    )
    signin_hook_remember_size: int = Field(
        100_000, ge=1, description="Identities remembered as seen at most (LRU)."
    )

    # --- network trust, limits, timeouts --------------------------------------------------------
    trusted_proxies: Networks = Field(
        (),
        description="CIDRs of front proxies whose X-Forwarded-For/-Proto/-Host are believed.",
    )
    connect_timeout_s: Seconds = Field(5, description="Connecting to the upstream.")
    response_timeout_s: Seconds = Field(
        120, description="Waiting for the upstream's response headers."
    )
    idle_timeout_s: Seconds = Field(
        300, description="Most silence between two body chunks or WebSocket messages."
    )
    auth_timeout_s: Seconds = Field(5, description="Waiting for the forward-auth service / JWKS.")
    max_body_bytes: int = Field(
        100 * 1024 * 1024,
        ge=0,
        description="Largest request body relayed (bytes); larger gets 413.",
    )
    shutdown_grace_s: float = Field(
        30,
        ge=0,
        description="On SIGTERM, how long in-flight requests may finish; the process exits "
        "within it (the systemd unit and compose file allow a little more).",
    )
    header_timeout_s: Seconds = Field(
        HEADER_TIMEOUT_S,
        description="A client must send a whole request head within this: from connection "
        "open, or from the first byte of the next request on a kept-alive connection.",
    )
    keepalive_timeout_s: Seconds = Field(
        KEEPALIVE_TIMEOUT_S,
        description="An idle kept-alive client connection is closed after this.",
    )
    body_timeout_s: Seconds = Field(
        BODY_TIMEOUT_S,
        description="Most silence between two request body chunks from a client (408).",
    )
    websocket_max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest WebSocket message relayed, either way; larger closes both "
        "sides with 1009 (message too big).",
    )
    websocket_max_lifetime_s: Seconds = Field(
        900,
        le=86400,
        description="Longest a relayed WebSocket stays open (each socket 90-100 % of it); "
        "then both sides are closed with 1001 and the client's reconnect is authenticated "
        "again: how long a person signed out or revoked since may keep a socket.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_pseudonym_key_file: Path | None = Field(
        None,
        description="File holding a key (>= 32 characters, first non-comment line; must not be "
        "world-readable). When set, the public listener's log lines name people by a pseudonym "
        "(HMAC-SHA-256 of the email, 16 hex digits, stable per person) instead of the email; "
        "the internal listener's audit keeps emails. Print one: python -m proxy.pseudonym.",
    )

    @field_validator("jwt_source")
    @classmethod
    def _check_jwt_source(cls, value: str | None) -> str | None:
        if value is None:
            return value
        kind, sep, name = value.partition(":")
        if not sep or kind not in ("header", "cookie") or not name:
            raise ValueError("expected 'header:NAME' or 'cookie:NAME'")
        if kind == "header":
            _check_header_name(name)
            if name.lower() == "authorization":
                raise ValueError("Authorization carries OpenWebUI's own token; use another header")
        return value

    @field_validator("jwt_issuer", "jwt_email_claim", "jwt_name_claim", "jwt_groups_claim")
    @classmethod
    def _check_jwt_names(cls, value: str | None) -> str | None:
        """Compared exactly with what a token says: a CR or a space around matches none."""
        if value is not None:
            _refuse_blanks(value, inside=False)
        return value

    @field_validator("internal_tokens_file")
    @classmethod
    def _check_tokens_file(cls, value: Path | None) -> Path | None:
        """Read at load, so its problems are listed with every other setting's."""
        if value is not None:
            try:
                load_tokens(value)
            except TokenFileError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("session_secret_file")
    @classmethod
    def _check_session_secret(cls, value: Path | None) -> Path | None:
        """Read at load, so its problems are listed with every other setting's."""
        if value is not None:
            try:
                read_session_secret(value)
            except SessionSecretError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("signin_hook_secret_file")
    @classmethod
    def _check_hook_secret(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_secret_file(value)
            except BadSecret as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("pages_dir")
    @classmethod
    def _check_pages(cls, value: Path | None) -> Path | None:
        """Every template checked at load, so its problems are listed with the others'."""
        if value is not None:
            # Served on the public origin: whoever may write a page, or add one, writes script.
            _refuse_world_writable(value, *_entries(value))
            try:
                load_folder(value)
            except PagesError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("jwt_key_file")
    @classmethod
    def _check_jwt_key_file(cls, value: Path | None) -> Path | None:
        """Public, so readable is fine; whoever may write it signs any identity."""
        if value is not None:
            _refuse_world_writable(value)
        return value

    @field_validator("log_pseudonym_key_file")
    @classmethod
    def _check_pseudonym_key(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_key(value)
            except PseudonymKeyError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("allowed_email_domains", "allowed_groups", mode="before")
    @classmethod
    def _check_rule_given(cls, value: Any) -> Any:
        """An access rule given as an empty TOML array reads as a rule and means none:
        everyone in. (An empty or blank variable is refused by load_settings.)"""
        if isinstance(value, list) and not value:
            raise ValueError(
                "empty: no items, which lets everyone in; remove the setting if that is "
                "meant, or name the items"
            )
        return value

    @field_validator("allowed_email_domains")
    @classmethod
    def _check_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in value if not _DOMAIN_RULE.fullmatch(d)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: expected a domain (school.edu) or "
                "'*.' and a domain (*.school.edu), lower-case ASCII"
            )
        return value

    @field_validator("allowed_groups")
    @classmethod
    def _check_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = []
        for group in value:
            try:
                check_group(group)
            except InvalidIdentity as exc:
                problems.append(f"{group!r}: {exc.reason} (group names are compared exactly)")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_not_everyone(cls, value: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
        """Networks that together are every address of a family (``0.0.0.0/1`` and
        ``128.0.0.0/1``) trust every client's X-Forwarded-*, as ``0.0.0.0/0`` would."""
        v4 = [n for n in value if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in value if isinstance(n, ipaddress.IPv6Network)]
        for version, family in (
            (4, ipaddress.collapse_addresses(v4)),
            (6, ipaddress.collapse_addresses(v6)),
        ):
            if any(n.prefixlen == 0 for n in family):
                written = ", ".join(str(n) for n in value if n.version == version)
                raise ValueError(
                    f"{written} together are every IPv{version} address: any client's "
                    "X-Forwarded-* would be believed; name the front proxies' own addresses"
                )
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if _HMAC_OR_NONE.fullmatch(alg)]
        if refused:
            raise ValueError(f"{', '.join(refused)} refused: only asymmetric algorithms are safe")
        unknown = [alg for alg in value if alg not in _KNOWN_ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {', '.join(unknown)}")
        if not value:
            raise ValueError("at least one algorithm is needed")
        return value

    @field_validator("internal_allow")
    @classmethod
    def _check_allow_rules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [rule for rule in value if not _ALLOW_RULE.fullmatch(rule)]
        if bad:
            raise ValueError(
                f"rule(s) {bad!r} are not 'METHOD /path' with optional {{param}} segments"
            )
        Allowlist(value)  # every rule parses, here at load rather than at listener start
        # Account endpoints hand out tokens or change who a user is; only the sign-in is
        # guarded (no admin token, not during onboarding: proxy/internal.py).
        accounts = [rule for rule in value if reaches_account(*rule.split(" ", 1))]
        if accounts:
            raise ValueError(
                f"rule(s) {accounts!r} reach OpenWebUI's account endpoints; of those only "
                f"'{' '.join(SIGNIN)}' may be allowed (it is the one the proxy guards)"
            )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        """Settings that only make sense together; every problem is listed at once."""
        problems: list[str] = []

        def need(field: str, why: str) -> None:
            problems.append(f"{ENV_PREFIX}{field.upper()}: required {why}")

        if self.auth == "forward" and self.forward_auth_url is None:
            need("forward_auth_url", "when OWUI_PROXY_AUTH=forward")
        if self.auth == "jwt":
            if self.jwt_source is None:
                need("jwt_source", "when OWUI_PROXY_AUTH=jwt")
            if (self.jwt_jwks_url is None) == (self.jwt_key_file is None):
                problems.append(
                    f"{ENV_PREFIX}JWT_JWKS_URL / {ENV_PREFIX}JWT_KEY_FILE: "
                    "exactly one is required when OWUI_PROXY_AUTH=jwt"
                )
            if self.jwt_issuer is None:
                need("jwt_issuer", "when OWUI_PROXY_AUTH=jwt")
            if not self.jwt_audience:
                need("jwt_audience", "when OWUI_PROXY_AUTH=jwt")
            if self.jwt_source is not None:
                collision = _jwt_source_collision(self)
                if collision is not None:
                    problems.append(f"{ENV_PREFIX}JWT_SOURCE: {collision}")
            if self.jwt_key_file is not None and not self.jwt_key_file.is_file():
                problems.append(
                    f"{ENV_PREFIX}JWT_KEY_FILE: {self.jwt_key_file} does not exist or is not a file"
                )
        if self.login_url is not None and self.public_url is None:
            need("public_url", "with OWUI_PROXY_LOGIN_URL (the rd= target is built from it)")
        if self.signin_hook_url is not None and self.signin_hook_secret_file is None:
            need("signin_hook_secret_file", "with OWUI_PROXY_SIGNIN_HOOK_URL")
        if self.login_url is not None and self.public_url is not None:
            loop = login_loop(self.login_url, self.public_url, self.auth_path_prefix)
            if loop is not None:
                problems.append(f"{ENV_PREFIX}LOGIN_URL: {loop}")
        if self.internal_listen is not None and self.internal_tokens_file is None:
            need("internal_tokens_file", "with OWUI_PROXY_INTERNAL_LISTEN")
        if self.workers > 1 and self.listen.startswith("unix:"):
            problems.append(f"{ENV_PREFIX}WORKERS: several workers need a TCP listener")
        identity = [self.email_header, self.name_header, self.groups_header, self.role_header]
        if len({_normalise(h) for h in identity}) != len(identity):
            problems.append(
                f"{ENV_PREFIX}EMAIL_HEADER/NAME_HEADER/GROUPS_HEADER/ROLE_HEADER: must all differ"
            )
        listeners = [self.listen, self.admin_listen, self.internal_listen]
        used = [item for item in listeners if item is not None]
        if len(set(used)) != len(used):
            problems.append(
                f"{ENV_PREFIX}LISTEN/ADMIN_LISTEN/INTERNAL_LISTEN: "
                "each listener needs its own address"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the TOML file, which arrives as init keyword arguments.
        return (env_settings, init_settings)

    @cached_property
    def internal_allowlist(self) -> Allowlist:
        """``internal_allow`` parsed (it was checked to parse when the settings loaded)."""
        return Allowlist(self.internal_allow)

    def redacted(self) -> dict[str, Any]:
        """The settings as logged at start: paths are shown, never the secrets inside them."""
        return self.model_dump(mode="json")


def _normalise(header: str) -> str:
    return header.lower().replace("_", "-")


def _describe(error: Mapping[str, Any], from_file: Path | None, file_keys: set[str]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not loc:  # a model-level check: its message already names the settings, line by line
        return message
    field = loc[0]
    where = f"{ENV_PREFIX}{field.upper()}"
    if from_file is not None and field in file_keys:
        where += f" ({field} in {from_file})"
    if error.get("type") == "missing":
        message = "required, not set"
    elif error.get("type") == "extra_forbidden":
        where = f"{field} in {from_file}" if from_file else field
        message = unknown(field, Settings.model_fields, hints=OAUTH2_PROXY_SPELLINGS)
    return "\n".join(f"{where}: {line}" for line in message.splitlines())


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file.

    Raises :class:`SettingsError` listing every problem found: a variable with our prefix
    that names no setting, is empty or is set twice in two cases among them (a typo must
    not leave a setting at its default).
    """
    problems = unknown_variables(
        os.environ, ENV_PREFIX, Settings.model_fields, OAUTH2_PROXY_SPELLINGS
    )
    problems += unclear_variables(os.environ, ENV_PREFIX)
    problems += misspelt_prefixes(os.environ, ENV_PREFIX, Settings.model_fields)
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(f"--config {config_file}: cannot read ({exc.strerror})")
            raise SettingsError(problems) from exc
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"--config {config_file}: not valid TOML ({exc})")
            raise SettingsError(problems) from exc
        try:
            _refuse_world_writable(config_file)
        except ValueError as exc:
            problems.append(f"--config {exc}")
    try:
        settings = Settings(**file_values)
    except ValidationError as exc:
        for error in exc.errors():
            problems.extend(_describe(error, config_file, set(file_values)).splitlines())
        raise SettingsError(problems) from exc
    problems += _other_identity_source(settings, config_file, set(file_values))
    if problems:
        raise SettingsError(problems)
    return settings


# The settings each identity source reads; under the other ``auth`` they are never read.
_SOURCE_PREFIXES = {"forward": "forward_auth_", "jwt": "jwt_"}


def _other_identity_source(
    settings: Settings, config_file: Path | None, file_keys: set[str]
) -> list[str]:
    """Settings of the identity source not in use, given by the operator: each a problem.

    ``OWUI_PROXY_AUTH=forward`` never reads a ``JWT_*`` setting (nor ``auth=jwt`` a
    ``FORWARD_AUTH_*`` one): an operator who set ``JWT_REQUIRE_EMAIL_VERIFIED=true`` or
    ``JWT_AUDIENCE`` believes a check is made that never is. Only what was given (the
    environment or the file) counts, not defaults; Settings built in code are not judged.
    """
    problems = []
    for auth, prefix in _SOURCE_PREFIXES.items():
        if auth == settings.auth:
            continue
        for field in sorted(settings.model_fields_set):
            if field.startswith(prefix):
                where = f"{ENV_PREFIX}{field.upper()}"
                if config_file is not None and field in file_keys:
                    where += f" ({field} in {config_file})"
                problems.append(
                    f"{where}: set, but OWUI_PROXY_AUTH={settings.auth} never reads it "
                    f"(it belongs to OWUI_PROXY_AUTH={auth}); remove it, or set "
                    f"OWUI_PROXY_AUTH={auth}"
                )
    return problems
