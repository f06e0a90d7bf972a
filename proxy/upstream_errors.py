"""Which answer the client gets for which upstream failure: one table, and the boundary
that applies it (httpcore's ``map_exceptions`` is the model).

The plain-HTTP client (``proxy/h1.py``) and aiohttp (the WebSocket handshake, and the side
requests the proxy makes itself before relaying: the release read of
``proxy/release_watch.py``, the token-owner check of ``proxy/socketio.py``) report what went
wrong in their own terms; the caller only says at which stage it caught the failure, and
:func:`translate` looks the answer up in :data:`TABLE`. So a timeout is a 504 and a refused
or broken connection a 502 on every path, whichever client met it:

- before anything went to the client, the failure becomes an ``UpstreamError`` (a JSON
  answer with its status, via ``proxy/respond.py``);
- once the client's response has started, no status can be sent any more: the failure
  becomes :class:`UpstreamBrokeOff`, and the client's connection is cut.

``docs/proxy.md`` shows :func:`markdown_table` (a test keeps them equal).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import aiohttp

from proxy import h1
from proxy.errors import UpstreamError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable

# What the access line and the request counter record for a connection cut mid-body.
MID_BODY_STATUS = 502
MID_BODY_KIND = "broke_off"  # the upstream-errors metric's label for it


class Stage(enum.Enum):
    """Where the relay was when the failure reached it."""

    BEFORE_RESPONSE = "before the response"  # nothing sent to the client yet
    MID_BODY = "mid-body"  # the status and some of the body already went out
    WEBSOCKET = "WebSocket upgrade"  # the upstream handshake, before the client's 101
    # A request the proxy makes itself to decide about the client's (the release read, a
    # token's owner), before anything went to the client.
    SIDE_REQUEST = "side request"


class UpstreamBrokeOff(ConnectionResetError):
    """The upstream's body broke off after the status went to the client: the only honest
    signal left is a cut connection (a ``ConnectionResetError``, so callers that cut on
    any connection error need no special case); the observation middleware counts it as
    :data:`MID_BODY_STATUS`, apart from a client that went away."""


@dataclass(frozen=True, slots=True)
class Row:
    """One failure at one stage and the answer it gets."""

    stage: Stage
    failure: type[BaseException]
    answer: type[UpstreamError] | None  # None: the client's connection is cut
    when: str  # for the docs table
    # The public reason (``{exc}``: the failure's own text; ``{name}``: its class name);
    # None keeps the failure's own text.
    reason: str | None = None

    @property
    def status(self) -> str:
        if self.answer is None:
            return f"connection cut (logged as {MID_BODY_STATUS})"
        if self.answer is UpstreamRefused:
            return "the upstream's status"
        return str(self.answer.status)

    @property
    def kind(self) -> str:
        """The ``kind`` label of ``owui_proxy_upstream_errors_total`` it is counted under."""
        if self.answer is None:
            return MID_BODY_KIND
        # proxy/metrics.py's names for the error classes.
        return {
            UpstreamUnavailable: "unavailable",
            UpstreamTimeout: "timeout",
            UpstreamRefused: "refused",
        }[self.answer]


_BEFORE = Stage.BEFORE_RESPONSE
_WS = Stage.WEBSOCKET
_SIDE = Stage.SIDE_REQUEST

# First match wins within a stage: subclasses come before their bases.
TABLE: tuple[Row, ...] = (
    Row(
        _BEFORE,
        h1.ConnectFailed,
        UpstreamUnavailable,
        "no connection: refused, unreachable, or a TLS certificate that is not trusted",
    ),
    Row(_BEFORE, h1.ConnectTimeout, UpstreamTimeout, "no connection within `connect_timeout_s`"),
    Row(
        _BEFORE,
        h1.ConnectionBroke,
        UpstreamUnavailable,
        "the connection closed before the response head (an idempotent request with its "
        "body in memory that met a pooled connection the upstream had just closed is first "
        "sent once more, on a new connection)",
    ),
    Row(
        _BEFORE,
        h1.ProtocolError,
        UpstreamUnavailable,
        "malformed or ambiguous HTTP, a status outside 100-599, a 101 to a request that asked "
        "for no upgrade, a header value that is not UTF-8, a response head over 64 KiB, bytes "
        "beyond the response",
    ),
    Row(
        _BEFORE,
        h1.UploadStalled,
        UpstreamTimeout,
        "the upstream stopped reading the request body for `idle_timeout_s`",
    ),
    Row(
        _BEFORE,
        h1.HeadTimeout,
        UpstreamTimeout,
        "no response head within `response_timeout_s` of the request's last byte",
    ),
    Row(
        _BEFORE,
        h1.BodyStalled,
        UpstreamTimeout,
        "a body the proxy reads whole (a small answer, sign-in, sign-out) went silent for "
        "`idle_timeout_s`",
    ),
    Row(
        _BEFORE,
        h1.BodyBrokeOff,
        UpstreamUnavailable,
        "a body the proxy reads whole broke off",
        "upstream body broke off ({exc})",
    ),
    Row(
        Stage.MID_BODY,
        h1.BodyBrokeOff,
        None,
        "a streamed body broke off or went silent for `idle_timeout_s`",
        "upstream body broke off ({exc})",
    ),
    Row(
        _WS,
        aiohttp.WSServerHandshakeError,
        UpstreamRefused,
        "the upstream answered the upgrade without 101",
        "upstream refused the WebSocket upgrade",
    ),
    Row(
        _WS,
        TimeoutError,
        UpstreamTimeout,
        "no answer to the upgrade within `connect_timeout_s` + `response_timeout_s`",
        "upstream did not answer the WebSocket upgrade in time",
    ),
    Row(
        _WS,
        aiohttp.ClientError,
        UpstreamUnavailable,
        "no connection for the upgrade, or it broke before the answer",
        "upstream unreachable ({name})",
    ),
    Row(
        _SIDE,
        TimeoutError,
        UpstreamTimeout,
        "no connection, or no answer, within the side request's timeout (the release read: "
        "`connect_timeout_s`; a token's owner: `connect_timeout_s` + `response_timeout_s`)",
        "upstream did not answer in time",
    ),
    Row(
        _SIDE,
        aiohttp.ClientError,
        UpstreamUnavailable,
        "no connection for the side request, or it broke before the answer",
        "upstream unreachable ({name})",
    ),
)


def row_for(exc: Exception, stage: Stage) -> Row | None:
    """The row that answers ``exc`` at ``stage``; None for what is no upstream failure."""
    for row in TABLE:
        if row.stage is stage and isinstance(exc, row.failure):
            return row
    return None


def translate(exc: Exception, stage: Stage) -> Exception:
    """The exception to raise in place of ``exc`` (chain it: ``raise ... from exc``)."""
    row = row_for(exc, stage)
    if row is None:  # the caller caught more than the table names: a bug here
        raise TypeError(f"no answer for {type(exc).__name__} at {stage.value}") from exc
    reason = row.reason.format(exc=exc, name=type(exc).__name__) if row.reason else str(exc)
    if row.answer is None:
        return UpstreamBrokeOff(reason)
    if row.answer is UpstreamRefused:
        assert isinstance(exc, aiohttp.WSServerHandshakeError)
        return UpstreamRefused(exc.status, reason)
    return row.answer(reason)


def markdown_table() -> str:
    """:data:`TABLE` as docs/proxy.md shows it."""
    lines = [
        "| stage | raised as | when | the client gets | `kind` label |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.stage.value} | `{_name(row.failure)}` | {row.when} | {row.status} | `{row.kind}` |"
        for row in TABLE
    ]
    return "\n".join(lines) + "\n"


def _name(cls: type[BaseException]) -> str:
    """``h1.HeadTimeout``, ``aiohttp.ClientError``, ``TimeoutError``."""
    package, _, rest = cls.__module__.partition(".")
    if package == "builtins":
        return cls.__name__
    return f"{rest.rpartition('.')[2] if package == 'proxy' else package}.{cls.__name__}"
