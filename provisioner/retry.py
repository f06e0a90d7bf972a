"""When to retry and how long to wait: pure functions, tested by tables.

A ``Retry-After`` value is read by :func:`proxy.retry_after.parse_retry_after`, shared with
the proxy's first-sign-in hook.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def is_transient(status: int) -> bool:
    """429 and 5xx are worth another try; 501 Not Implemented never gets better."""
    return status == 429 or (500 <= status < 600 and status != 501)


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before try ``attempt + 1`` (``attempt`` counts from 1).

    Exponential with full jitter, so several provisioners hitting the same outage spread
    out instead of retrying in step. A server's ``Retry-After`` is a floor: waiting less
    would only earn another 429.
    """
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    delay = ceiling * rand()
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
