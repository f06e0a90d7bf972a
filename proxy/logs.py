"""structlog set-up: JSON lines on stdout, with a last-line-of-defence redaction.

Code never logs secrets on purpose; ``redact`` still blanks any field whose name says it
might hold one (token, cookie, authorization, password, secret), so a mistake costs a
``"[redacted]"`` rather than a leaked credential.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

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


def configure(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own loggers (errors while handling a request) go to stderr at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
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
