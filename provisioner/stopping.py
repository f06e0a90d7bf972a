"""Ctrl-C and SIGTERM stop a run over many people cleanly, the same way for every command."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def until_stopped(work: Coroutine[Any, Any, Any]) -> signal.Signals | None:
    """Run ``work`` to its end, or until SIGINT or SIGTERM cancels it; the signal, if one.

    The caller then reports what was done so far, and exits with 128 + the signal's number.
    """
    stopped_by: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)

    def stop(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not stopped_by:
            raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return stopped_by[0] if stopped_by else None
