"""First sign-in hook: tell a receiver, once, that the proxy has seen an identity.

Any IdP works this way, since the proxy sees every verified identity: the first time a
process sees one signed in to OpenWebUI (its trusted sign-in answered 200 through the
public listener, so the account exists: a provisioner signing in as the person at the same
moment as their own first sign-in could make OpenWebUI create the account twice), it
queues a ``user.seen`` event (email, name, groups), signed as Standard
Webhooks (``proxy/webhooks.py``), for the provisioner's webhook receiver, which creates the
user's course threads (idempotently: a restart or a second proxy process may send again).

Never on the request path: :meth:`SigninHook.seen` is a dictionary look-up and, the first
time, a ``put_nowait`` on a bounded queue. A full queue drops the event with a log line and
a count (the identity is not remembered, so a later request tries again). Workers deliver
with retries (exponential backoff with full jitter) on a refused connection, a timeout, a
5xx, 408 or 429; any other status ends the event. A ``Retry-After`` the receiver sends
(seconds or an HTTP date) is a floor on the next wait, as in the provisioner's own client;
one asking for more than :data:`RETRY_AFTER_MAX_S` ends the event instead of holding a
worker that long. An event given up on is forgotten too: the user's next request queues it
again, so a receiver outage heals itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter

from proxy import logs, webhooks
from proxy.errors import ConfigProblems
from proxy.identity import Identity
from proxy.metrics import Metrics
from proxy.pseudonym import Pseudonyms, person
from proxy.retry_after import parse_retry_after
from proxy.settings import Settings

EVENT_TYPE = "user.seen"
_RETRY_STATUSES = frozenset({408, 429})
_FIRST_DELAY_S = 1.0
_MAX_DELAY_S = 300.0
# The longest Retry-After honoured; a receiver asking for more is given up on (for now).
RETRY_AFTER_MAX_S = _MAX_DELAY_S


class HookConfigError(ConfigProblems):
    """The hook cannot start; the message names the setting and what to do."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


def load_secret(path: Path) -> str:
    """The first ``whsec_`` secret in ``path`` (checked, so a typo fails at start)."""
    try:
        return webhooks.read_secret_file(path)
    except webhooks.BadSecret as exc:
        raise HookConfigError(f"OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE: {exc}") from exc


def event_for(identity: Identity, now: datetime) -> dict[str, Any]:
    """The ``user.seen`` event body for ``identity``."""
    return {
        "type": EVENT_TYPE,
        "timestamp": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data": {"email": identity.email, "name": identity.name, "groups": list(identity.groups)},
    }


class SeenMemory:
    """Emails seen recently: a bounded LRU with a time-to-live (``clock`` injectable)."""

    def __init__(self, ttl_s: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, email: str) -> bool:
        """True (and remembered) unless ``email`` was seen within the TTL."""
        now = self.clock()
        expires = self._seen.get(email)
        if expires is not None and now < expires:
            self._seen.move_to_end(email)
            return False
        self._seen[email] = now + self.ttl_s
        self._seen.move_to_end(email)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def forget(self, email: str) -> None:
        self._seen.pop(email, None)

    def __len__(self) -> int:
        return len(self._seen)


def backoff(attempt: int, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (1-based): full jitter over a doubling ceiling."""
    ceiling = min(_MAX_DELAY_S, _FIRST_DELAY_S * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


class SigninHook:
    """Queues and delivers ``user.seen`` events; start() and close() bracket its life."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if settings.signin_hook_url is None or settings.signin_hook_secret_file is None:
            raise HookConfigError("OWUI_PROXY_SIGNIN_HOOK_URL and _SECRET_FILE are required")
        self.url = settings.signin_hook_url
        self.secret = load_secret(settings.signin_hook_secret_file)
        self.session = session
        self.memory = SeenMemory(
            settings.signin_hook_remember_s, settings.signin_hook_remember_size, clock
        )
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(settings.signin_hook_queue_size)
        self.workers = settings.signin_hook_workers
        self.max_attempts = settings.signin_hook_max_attempts
        self.timeout = aiohttp.ClientTimeout(total=settings.signin_hook_timeout_s)
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.events = Counter(
            "owui_proxy_signin_hook_events",
            "First sign-in hook events, by outcome: queued, sent, retried, dropped (queue "
            "full), failed (given up).",
            ["outcome"],
            registry=metrics.registry,
        )
        for outcome in ("queued", "sent", "retried", "dropped", "failed"):
            self.events.labels(outcome)  # from 0, so an alert's increase() sees the first
        self._tasks: list[asyncio.Task[None]] = []
        self.log = logs.get()
        self.pseudonyms = Pseudonyms.from_file(settings.log_pseudonym_key_file)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"signin-hook-{i}") for i in range(self.workers)
        ]
        self.log.info("signin_hook_ready", url=self.url, workers=self.workers)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.queue.empty():
            # Not lost for good: these users' next requests after a restart queue them again.
            self.log.info("signin_hook_unsent_at_exit", events=self.queue.qsize())

    def seen(self, identity: Identity) -> None:
        """Called for each sign-in OpenWebUI accepted on the public listener; never blocks."""
        if not self.memory.first_time(identity.email):
            return
        try:
            self.queue.put_nowait(event_for(identity, datetime.now(UTC)))
        except asyncio.QueueFull:
            self.memory.forget(identity.email)  # try again on a later request
            self.events.labels("dropped").inc()
            # On the request's path (its id on the line): named as the access line names them.
            who = person(identity.email, self.pseudonyms)
            self.log.warning("signin_hook_dropped", **who, why="queue full")
            return
        self.events.labels("queued").inc()

    async def _work(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._deliver(event)
            finally:
                self.queue.task_done()

    async def _deliver(self, event: dict[str, Any]) -> None:
        email = event["data"]["email"]
        body = json.dumps(event, separators=(",", ":")).encode()
        msg_id = webhooks.new_message_id()  # one id for every attempt: receivers dedupe on it
        for attempt in range(1, self.max_attempts + 1):
            outcome = await self._attempt(msg_id, body)
            if outcome is None:
                self.events.labels("sent").inc()
                self.log.info("signin_hook_sent", email=email, attempts=attempt)
                return
            retry, why, asked_s = outcome
            if not retry:
                break
            if asked_s is not None and asked_s > RETRY_AFTER_MAX_S:
                why += f", and Retry-After asks for {asked_s:.0f} s (over {RETRY_AFTER_MAX_S:.0f})"
                break
            if attempt < self.max_attempts:
                self.events.labels("retried").inc()
                await self.sleep(max(backoff(attempt, self.rng), asked_s or 0.0))
        self.memory.forget(email)
        self.events.labels("failed").inc()
        self.log.error("signin_hook_failed", email=email, why=why, attempts=attempt)

    async def _attempt(self, msg_id: str, body: bytes) -> tuple[bool, str, float | None] | None:
        """None when delivered; else (worth retrying, why not, the Retry-After in seconds)."""
        answer = await webhooks.post_signed(
            self.session,
            self.url,
            self.secret,
            msg_id,
            body,
            timestamp=int(time.time()),
            timeout=self.timeout,
        )
        status = answer.status
        if isinstance(status, str):
            return True, status, None  # no answer: refused, reset, timed out
        if 200 <= status < 300:
            return None
        retry = status >= 500 or status in _RETRY_STATUSES
        return retry, f"receiver answered {status}", parse_retry_after(answer.retry_after)
