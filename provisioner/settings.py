"""The provisioner's one frozen settings model, read from ``OWUI_PROVISION_*`` variables.

Nothing else in the provisioner reads ``os.environ``. :func:`load_settings` reports every
problem at once, each naming its variable. The service token itself is not a setting:
only the path to it is, and :func:`read_service_token` reads it when a client is built,
so the settings can be printed without leaking anything.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioner.errors import ConfigError
from proxy.identity import InvalidIdentity, validate_email
from proxy.setting_names import misspelt_prefixes, unclear_variables, unknown_variables

ENV_PREFIX = "OWUI_PROVISION_"
MIN_TOKEN_CHARS = 32  # the proxy refuses shorter service tokens

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _check_url(value: str) -> str:
    """``http(s)://host:port`` or ``unix:/absolute/path`` (the listener's two forms)."""
    if value.startswith("unix:"):
        if not value[5:].startswith("/"):
            raise ValueError("a unix socket must be an absolute path, e.g. unix:/run/owui/int.sock")
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL or unix:/path")
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL without query or fragment")
    return value.rstrip("/")


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def _check_email(value: str) -> str:
    """One plausible ASCII address, lower-cased, by the proxy's own rule."""
    if not value.isascii():
        raise ValueError("must be an ASCII email address")
    try:
        return validate_email(value)
    except InvalidIdentity as exc:
        raise ValueError(exc.reason) from exc


ListenerURL = Annotated[str, AfterValidator(_check_url)]
LookupEmail = Annotated[str, AfterValidator(_check_email)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Everything the provisioner can be told. Immutable once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    url: ListenerURL = Field(
        description="The proxy's internal listener: http://HOST:PORT or unix:/path "
        "(the proxy's OWUI_PROXY_INTERNAL_LISTEN)."
    )
    token_file: Path = Field(
        description="File holding the service token (first non-comment line); must not be "
        "world-readable. Its token must be a line of the proxy's OWUI_PROXY_INTERNAL_TOKENS_FILE."
    )
    email_header: HeaderName = Field(
        "X-User-Email", description="The proxy's OWUI_PROXY_EMAIL_HEADER (act-as email)."
    )
    name_header: HeaderName = Field(
        "X-User-Name", description="The proxy's OWUI_PROXY_NAME_HEADER (act-as display name)."
    )
    connect_timeout_s: Seconds = Field(5, description="Connecting to the internal listener.")
    request_timeout_s: Seconds = Field(30, description="Waiting for one response.")
    max_attempts: int = Field(
        5, ge=1, le=20, description="Tries per HTTP call on transient failures (5xx, 429, network)."
    )
    backoff_base_s: Seconds = Field(
        0.5, description="First retry delay; doubles each retry, with full jitter."
    )
    backoff_max_s: Seconds = Field(10, description="Longest delay between two tries.")
    retry_after_max_s: Seconds = Field(
        60, description="Longest Retry-After honoured; a longer one counts as a failure."
    )
    converge_rounds: int = Field(
        10,
        ge=2,
        le=50,
        description="Rounds of look/create/delete/archive per user before giving up.",
    )
    settle_s: float = Field(
        2,
        ge=0,
        le=60,
        description="A thread is reported only once the server's clock is this far past its "
        "creation second, so a same-second creation elsewhere cannot outrank it.",
    )
    archive_attempts: int = Field(
        6,
        ge=1,
        le=50,
        description="Read-then-toggle tries per round to see a thread archived (the endpoint "
        "toggles, so a concurrent toggle can undo ours).",
    )
    title_tag: Literal["hidden", "visible"] = Field(
        "hidden",
        description="How a thread's title carries its (course, module) for users with 100 "
        "chats or more: 'hidden' (invisible characters after the title) or 'visible' "
        "('Module 1: Introduction [welcome/intro]').",
    )
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Users provisioned at once by 'bulk' (--concurrency wins) "
        "and by the webhook receiver.",
    )
    lookup_email: LookupEmail | None = Field(
        None,
        description="An ordinary OpenWebUI account the provisioner signs in as to read "
        "OpenWebUI's user directory, so that status, --dry-run and remove know who has an "
        "account without signing in as them (which would create it). Signing in as it "
        "creates it the first time; it never gets threads. Required by those commands only.",
    )
    webhook_deadline_s: Seconds = Field(
        12,
        description="Longest a webhook request may spend provisioning before answering 503 "
        "(the sender retries; keep it under the sender's timeout, 15 s for Svix/Clerk).",
    )


def _describe(error: dict[str, object]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]  # type: ignore[attr-defined]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        message = "required, not set"
    return f"{ENV_PREFIX}{loc[0].upper()}: {message}" if loc else message


def load_settings() -> Settings:
    """Read the settings from the environment; raise :class:`ConfigError` listing every problem.

    A variable with our prefix that names no setting is a problem too: a typo such as
    ``OWUI_PROVISION_MAX_ATEMPTS`` would otherwise be ignored without a word. So is one set
    to nothing (read as unset), one setting under two spellings of case, and a setting's
    name under a misspelt prefix (``OWUI_PROVISON_CONCURRENCY``), which is never read.
    """
    problems = unknown_variables(os.environ, ENV_PREFIX, Settings.model_fields)
    problems += unclear_variables(os.environ, ENV_PREFIX)
    problems += misspelt_prefixes(os.environ, ENV_PREFIX, Settings.model_fields)
    try:
        settings = Settings()  # required fields come from the environment
    except ValidationError as exc:
        problems += [_describe(dict(error)) for error in exc.errors()]
        raise ConfigError("\n".join(problems)) from exc
    if problems:
        raise ConfigError("\n".join(problems))
    return settings


def read_service_token(path: Path) -> str:
    """The first non-blank, non-``#`` line of ``path``; refuses a world-readable file."""
    where = f"{ENV_PREFIX}TOKEN_FILE ({path})"
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from exc
    if mode & stat.S_IROTH:
        raise ConfigError(f"{where}: is world-readable; run chmod o-r on it (or chmod 600)")
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            if len(token) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters, "
                    "which the proxy refuses"
                )
            return token
    raise ConfigError(f"{where}: holds no token (only blank or # lines)")
