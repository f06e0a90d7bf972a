"""structlog set-up: JSON lines, with a last-line-of-defence redaction.

Every line the process logs is one JSON object: structlog's on stdout, and the standard
library's (aiohttp's and asyncio's own errors) on stderr through the same renderer, a
traceback rendered into the ``exception`` field rather than spread over 30 lines.

Code never logs secrets on purpose; ``redact`` still blanks any field whose name says it
might hold one (token, cookie, authorization, password, secret), so a mistake costs a
``"[redacted]"`` rather than a leaked credential.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import select
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_FIELD = re.compile(r"token|cookie|authori[sz]ation|password|secret|api[-_]?key", re.I)
# What survives of a client-supplied X-Request-ID: safe characters, bounded length.
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=-]")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SECRET_FIELD.search(key):
            event[key] = "[redacted]"
    return event


def sanitise(value: str | None, limit: int = 64) -> str | None:
    """A client-supplied identifier made safe to log: odd characters dropped, length capped."""
    if value is None:
        return None
    return _UNSAFE.sub("", value)[:limit]


class _AccessSink:
    """Where the access line goes, set by :func:`configure` (nowhere until then), the lines
    written in this event-loop iteration, and the loop their write is scheduled on."""

    def __init__(self) -> None:
        self.out: TextIO | None = None
        self.pending: list[str] = []
        self.write_on: asyncio.AbstractEventLoop | None = None
        # The timestamp's whole second, as the microsecond it starts at, and formatted
        # (once per second).
        self.second_us = -1
        self.second_text = ""


_access = _AccessSink()


# "000" to "999": a timestamp's microseconds are two of these, not a number formatted.
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))


def _timestamp() -> str:
    """What ``TimeStamper(fmt="iso", utc=True)`` writes: ``datetime.now(UTC).isoformat()``
    with ``Z``, the clock read as ``datetime.now`` reads it (nanoseconds floored to
    microseconds; no fraction when those are zero). The date and time are formatted once
    per second and the microseconds come from :data:`_DIGITS3`: half the instructions of
    formatting either per line."""
    now_us = time.time_ns() // 1000
    sink = _access
    micros = now_us - sink.second_us
    if not 0 < micros < 1_000_000:  # another second, or its very first microsecond
        second = now_us // 1_000_000
        sink.second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        sink.second_us = second * 1_000_000
        micros = now_us - sink.second_us
        if not micros:
            return sink.second_text + "Z"
    return f"{sink.second_text}.{_DIGITS3[micros // 1000]}{_DIGITS3[micros % 1000]}Z"


# Bytes one write may carry and still reach a pipe whole, never interleaved with another
# worker's lines (POSIX's PIPE_BUF is at least 512; Linux's is 4096).
_ATOMIC_WRITE = select.PIPE_BUF


_CUT = "...[{} characters cut]..."


def fit(text: str, limit: int = _ATOMIC_WRITE - 1) -> str:
    """A rendered JSON line (without its newline) at most ``limit`` bytes, so that it and its
    newline reach a pipe in one write no other worker's line can split: a longer line (a
    request target of 8 KiB, an email of non-ASCII characters each escaped to six bytes, a
    traceback) written in several pieces lets another worker's line land inside it, which
    makes both unreadable to whatever parses the log (an audit line hidden that way is
    lost). The longest value is cut in its middle, its start and end kept (a path's start,
    a traceback's last lines), with the count of characters cut, until the line fits; the
    object keeps its fields in their order. Only lines over the limit pay for this.
    """
    if len(text) <= limit and text.isascii():
        return text
    fields: dict[str, Any] = json.loads(text)
    while len(text.encode()) > limit:
        longest = max(fields, key=lambda name: len(json.dumps(fields[name])))
        value = fields[longest]
        value = value if isinstance(value, str) else json.dumps(value)
        # What the kept characters may take, rendered: the value's bytes less the excess
        # and the marker (json.dumps escapes: a character may take up to twelve bytes).
        budget = _rendered(value) - (len(text.encode()) - limit) - len(_CUT.format(len(value)))
        if budget < 16:  # nothing long enough left: the line's identity only
            keep = ("event", "level", "timestamp", "request_id", "listener")
            kept = {k: str(fields[k])[:64] for k in keep if k in fields}
            return json.dumps({**kept, "cut": "line too long"})
        head = _within(value, budget // 2)
        tail = _within(value[::-1], budget - _rendered(head))[::-1]
        cut = len(value) - len(head) - len(tail)
        fields[longest] = head + _CUT.format(cut) + tail
        text = json.dumps(fields)
    return text


def _rendered(value: str) -> int:
    """Bytes ``json.dumps`` writes for ``value`` inside its quotes."""
    return len(json.dumps(value)) - 2


def _within(value: str, budget: int) -> str:
    """The longest start of ``value`` that ``json.dumps`` writes in at most ``budget`` bytes."""
    used = 0
    for n, char in enumerate(value):
        used += _rendered(char)
        if used > budget:
            return value[:n]
    return value


class _FittedJSON:
    """structlog's JSON renderer, each line :func:`fit` (the logger adds the newline)."""

    def __init__(self) -> None:
        self._renderer = structlog.processors.JSONRenderer()

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        rendered = self._renderer(logger, method_name, event_dict)
        return fit(rendered if isinstance(rendered, str) else rendered.decode())


def _write_pending() -> None:
    """Write the lines of the iteration that just ran: whole lines, in as few writes as fit
    in :data:`_ATOMIC_WRITE` bytes each (each line fits alone: :func:`fit`)."""
    _access.write_on = None
    lines, _access.pending = _access.pending, []
    out = _access.out
    if out is None:
        return
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line)  # json.dumps escapes every non-ASCII character: chars are bytes
        if chunk and size + length > _ATOMIC_WRITE:
            out.write("".join(chunk))
            out.flush()
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        out.write("".join(chunk))
        out.flush()


# What ``json.dumps`` writes for a string (its default, ``ensure_ascii``): C code, and every
# character outside ASCII escaped, so a line's length in characters is its length in bytes.
_string = json.encoder.encode_basestring_ascii


def _tenths(ms: float) -> str:
    """``ms`` to a tenth, as ``json.dumps(round(ms, 1))`` writes it: ``"%.1f"`` gives the same
    digits (both are dtoa's correctly rounded decimal of the same double) in one conversion
    instead of three (the rounding, the rounded value's shortest repr, ~5k instructions a
    number), below 1e15 (where repr could turn to an exponent); anything else the long way."""
    if 0.0 <= ms < 1e15:
        return "%.1f" % ms  # noqa: UP031 (cheaper than an f-string)
    return repr(round(ms, 1))


# The statuses an answer may have, as json.dumps writes them: looked up, not converted.
_STATUS_TEXT = {status: repr(status) for status in range(100, 1000)}


class Absent(enum.Enum):
    ABSENT = enum.auto()


ABSENT = Absent.ABSENT  # no pseudonym field at all (not even null)


def access(
    request_id: str,
    listener: str = "public",
    method: str | None = None,
    path: str | None = None,
    status: int | None = None,
    body_bytes: int | None = None,
    duration_ms: float | None = None,
    upstream_ms: float | None = None,
    email: str | None = None,
    pseudonym: str | Absent | None = ABSENT,
    peer: str | None = None,
    client_request_id: str | None = None,
) -> None:
    """One access line, written without structlog's processor chain.

    It is the one line every request writes, so it skips what the chain does per call
    (context merge, level lookup, a redaction pass, a bound-logger copy) and ``json.dumps``
    too: its fields are fixed, so the line is one format string, the JSON ``json.dumps``
    would write for the same fields, in the same order, character for character
    (``tests/proxy/test_logs.py`` compares them), for a third of the instructions. The
    lines of one event-loop iteration are written together when it ends (under load many
    requests finish in one iteration, and each write is a system call: the container runs
    unbuffered), whole lines at most :data:`_ATOMIC_WRITE` bytes a write, so several
    workers sharing a pipe never interleave inside a line. The line has the same shape as
    the others (``event``, ``level``, ``timestamp``); the person is ``email``, or only
    ``pseudonym`` when one is given (even ``None``); the milliseconds to a tenth, as
    ``round(ms, 1)`` (:func:`_tenths`). No field name is secret-like
    (``tests/proxy/test_logs.py`` checks them against ``redact``'s pattern): ``redact``
    does not run here. The fields may be given by position, in the line's order: the
    public listener's line does, as twelve keywords cost more to match than the line's
    formatting of two of them.
    """
    out = _access.out
    if out is None:
        return
    null, string = "null", _string
    # The person by email, or by pseudonym when the caller has a key (proxy/pseudonym.py).
    if pseudonym is ABSENT:
        person = f'"email": {null if email is None else string(email)}'
    else:
        person = f'"pseudonym": {null if pseudonym is None else string(pseudonym)}'
    line = (
        f'{{"request_id": {string(request_id)}, "listener": {string(listener)}, '
        f'"method": {null if method is None else string(method)}, '
        f'"path": {null if path is None else string(path)}, '
        f'"status": {null if status is None else _STATUS_TEXT.get(status) or repr(status)}, '
        f'"bytes": {null if body_bytes is None else repr(body_bytes)}, '
        f'"duration_ms": {null if duration_ms is None else _tenths(duration_ms)}, '
        f'"upstream_ms": {null if upstream_ms is None else _tenths(upstream_ms)}, '
        f"{person}, "
        f'"peer": {null if peer is None else string(peer)}, '
        f'"client_request_id": {null if client_request_id is None else string(client_request_id)}, '
        f'"event": "access", "level": "info", "timestamp": "{_timestamp()}"}}\n'
    )
    if len(line) > _ATOMIC_WRITE:  # rare (a long target): made to reach a pipe whole
        line = fit(line[:-1]) + "\n"
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # outside a loop: nothing would write it later
        out.write(line)
        out.flush()
        return
    _access.pending.append(line)
    if _access.write_on is not loop:  # a closed loop's (a test's) lines go out with these
        _access.write_on = loop
        loop.call_soon(_write_pending)


# The id of the request being handled, on every line logged while it is (set and reset by
# ``proxy/observe.py``): one ContextVar set per request is far cheaper than structlog's
# clear + bind + clear of its context dictionary.
request_id: ContextVar[str | None] = ContextVar("owui_proxy_request_id", default=None)


def add_request_id(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: the current request's id first, unless the line names one itself."""
    rid = request_id.get()
    if rid is None or "request_id" in event_dict:
        return event_dict
    return {"request_id": rid, **event_dict}


def configure(level: str = "info") -> None:
    _access.out = sys.stdout if _LEVELS[level] <= logging.INFO else None
    structlog.configure(
        processors=[
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            _FittedJSON(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (aiohttp's errors while handling a request, asyncio's)
    # go to stderr at WARNING, as JSON lines of the same shape.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                add_request_id,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                structlog.processors.format_exc_info,
                _FittedJSON(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRequestBytes) for f in server_log.filters):
        server_log.addFilter(_NoRequestBytes())


class _NoRequestBytes(logging.Filter):
    """aiohttp logs a malformed request's parser error with the offending raw bytes (a
    ``Cookie`` line, say): keep the error's name, drop its text and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: malformed request ({type(exc).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def get() -> Any:
    return structlog.get_logger("owui-proxy")
