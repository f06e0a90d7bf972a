"""Background webhook delivery with retries, as a real IdP does it: never blocks a login.

Each event gets one message id for all its attempts; each attempt is signed with its own
timestamp. A 2xx answer ends it; anything else (an error status, a refused connection, a
timeout) is retried after the next delay in ``retry_delays``, then given up with an error log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import structlog

from proxy import webhooks

log = structlog.get_logger(__name__)

# About ten minutes in all: enough to ride out a provisioner restart in a demo.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300)
# Svix (which sends Clerk's webhooks) waits 15 s for an answer; receivers are tuned to it.
SEND_TIMEOUT_S = 15.0


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str,
        session: aiohttp.ClientSession,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout_s: float = SEND_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        webhooks.secret_key(secret)  # a bad secret fails at start, not at the first login
        self._url = url
        self._secret = secret
        self._session = session
        self._retry_delays = tuple(retry_delays)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.abandoned = 0

    def send(self, event: dict[str, Any]) -> str:
        """Queue ``event`` for delivery; returns its message id at once."""
        msg_id = webhooks.new_message_id()
        body = json.dumps(event, separators=(",", ":")).encode()
        task = asyncio.create_task(self._deliver(msg_id, body), name=f"webhook-{msg_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return msg_id

    async def close(self) -> None:
        """Stop retrying (events still pending are logged as abandoned)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, msg_id: str, body: bytes) -> None:
        attempts = len(self._retry_delays) + 1
        try:
            for attempt in range(1, attempts + 1):
                outcome = await self._attempt(msg_id, body)
                if outcome is None:
                    self.delivered += 1
                    log.info("webhook_delivered", msg_id=msg_id, attempt=attempt)
                    return
                log.warning("webhook_attempt_failed", msg_id=msg_id, attempt=attempt, error=outcome)
                if attempt < attempts:
                    await asyncio.sleep(self._retry_delays[attempt - 1])
            self.abandoned += 1
            log.error("webhook_abandoned", msg_id=msg_id, attempts=attempts, url=self._url)
        except asyncio.CancelledError:
            log.error("webhook_abandoned_at_shutdown", msg_id=msg_id, url=self._url)
            raise

    async def _attempt(self, msg_id: str, body: bytes) -> str | None:
        """One signed POST; ``None`` on success, else what went wrong."""
        status = (
            await webhooks.post_signed(
                self._session,
                self._url,
                self._secret,
                msg_id,
                body,
                timestamp=int(self._clock()),
                timeout=self._timeout,
            )
        ).status
        if isinstance(status, str):
            return status
        return None if 200 <= status < 300 else f"HTTP {status}"
