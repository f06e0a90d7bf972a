"""``Retry-After`` (RFC 9110 10.2.3) to a number of seconds: pure, shared.

The proxy's first-sign-in hook and the provisioner's client both honour it, each within
its own bound; a value that is neither delta-seconds nor an HTTP date counts as absent.
"""

from __future__ import annotations

import email.utils
import time

# An HTTP date is 29 characters; nothing longer is a value anyone means (and int() of
# thousands of digits raises).
MAX_CHARS = 64


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not value or len(value) > MAX_CHARS:
        return None
    # ASCII digits only: str.isdigit() also takes other scripts' digits, which float() reads.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
