"""Readiness: ``/readyz`` answers from what the proxy already knows, never waiting on OpenWebUI.

A probe that waits on OpenWebUI times out when OpenWebUI is slow (``/readyz`` took 8 s while
only ``/api/config`` hung, and Kubernetes' default probe timeout is 1 s), and a pod marked
unready for that stops serving requests that were flowing fine. So OpenWebUI is checked in
the background instead: every :data:`CHECK_EVERY_S` its ``GET /health`` and its release
(``/api/config``, ``proxy/release_watch.py``) are read, each bounded by
``connect_timeout_s``, and ``/readyz`` reads the last results without any I/O, within
:data:`READYZ_TIMEOUT_S` (every probe the project ships waits longer than that; a test
holds them to it). A check still running is no problem; one that has not finished for
longer than its reads can take (a hung loop) is.

The release check here is also how the workers of one proxy learn a refused release soon:
worker 0 runs it, and a refusal it finds stops every worker (``ReleaseWatch``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from proxy.release_watch import ReleaseWatch
from proxy.upstream import Upstream

# The most /readyz takes to answer; every shipped probe's timeout must be above it.
READYZ_TIMEOUT_S = 1.0
# How often OpenWebUI's health and release are read in the background.
CHECK_EVERY_S = 5.0
# Past the time a check may take (its two reads), before it counts as stuck.
_STUCK_SLACK_S = 5.0
# Names the proxy's own reads in OpenWebUI's access log (and lets test fakes tell them apart).
USER_AGENT = "owui-gate-readiness"
# Of /health's body (OpenWebUI's is ``{"status":true}``), what is read so a short one leaves
# the connection reusable; the status decides, and a longer body is dropped with the
# connection, never buffered (a body without end filled worker 0's memory every check).
_HEALTH_BODY_BYTES = 4096


class UpstreamReadiness:
    """OpenWebUI's readiness as last checked, kept current by a background task."""

    def __init__(
        self,
        upstream: Upstream,
        release: ReleaseWatch,
        every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.release = release
        self.every_s = every_s
        self.clock = clock
        self.problem: str | None = "OpenWebUI not checked yet"
        self._checked_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check once (bounded by the reads' timeouts), then keep checking in the background."""
        await self.check()
        self._task = asyncio.create_task(self._every_while(), name="upstream-readiness")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A check that failed on its own (the session closed under it) ended the task.
            await asyncio.gather(self._task, return_exceptions=True)

    async def check(self) -> None:
        problem = await upstream_health(self.upstream)
        if problem is None:
            await self.release.refresh()
            problem = self.release.problem
        self.problem = problem
        self._checked_at = self.clock()

    def problems(self) -> list[str]:
        """What keeps the proxy from being ready as far as OpenWebUI goes; no I/O."""
        if self._checked_at is not None:
            age = self.clock() - self._checked_at
            if age > self.every_s + 2 * self.upstream.connect_timeout_s + _STUCK_SLACK_S:
                return [f"upstream: not checked for {age:.0f} s"]
        return [f"upstream: {self.problem}"] if self.problem is not None else []

    async def _every_while(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.check()


async def upstream_health(upstream: Upstream) -> str | None:
    """None if OpenWebUI answers ``GET /health`` with 200 within ``connect_timeout_s``."""
    try:
        async with upstream.session.get(
            upstream.base + "/health",
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=upstream.connect_timeout_s),
            allow_redirects=False,
        ) as response:
            await response.content.read(_HEALTH_BODY_BYTES)
            return None if response.status == 200 else f"GET /health answered {response.status}"
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"GET /health failed ({type(exc).__name__})"
