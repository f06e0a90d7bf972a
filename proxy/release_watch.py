"""The OpenWebUI release behind the proxy, read from ``/api/config`` and kept current.

The proxy must never relay to a release it would fail open against (``proxy/openwebui_release.py``
says which). So the release is read:

- at start: a release known to be unsafe stops the process (exit 2, the reason on stderr);
  OpenWebUI not answering yet is no reason to stop (it often starts after the proxy);
- before the first relayed request, when start could not read it: until a release is known
  to be safe, the public listener answers 503 rather than relay;
- again every :data:`RECHECK_S` seconds in the background while the last answer was safe,
  and by the readiness check (``proxy/readiness.py``, every few seconds on worker 0):
  OpenWebUI may be replaced by another release while the proxy runs. While it is not known
  to be safe, each request reads it again first (at most one read a second), so the proxy
  serves as soon as a safe OpenWebUI answers.

With several workers, a refusal one worker finds stops them all at once: the parent gives
them a :class:`RefusalSignal` before forking, the worker that finds the release refused
raises it, and every worker looks at it on every request (one read of shared memory). A
worker that sees it refuses at once, then reads the release itself, at most once a second,
like any worker that does not know the release to be safe: it relays again only once its
own read finds a safe release.

Warnings (a safe release with gaps, e.g. the sign-up trap before 0.8.0) are logged when the
assessment changes, not on every read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext

import aiohttp

from proxy import logs
from proxy.errors import ConfigProblems, ProxyError, UpstreamUnavailable
from proxy.openwebui_release import Assessment, assess
from proxy.upstream import SIDE_ANSWER_MAX_BYTES, Upstream, read_capped
from proxy.upstream_errors import Stage, translate

RECHECK_S = 60.0
# Names the proxy's own reads in OpenWebUI's access log (and lets test fakes tell them apart).
USER_AGENT = "owui-gate-release-check"
_CONFIG_PATH = "/api/config"
_MAX_CONFIG_BYTES = SIDE_ANSWER_MAX_BYTES


class UnsafeRelease(ProxyError):
    """503: OpenWebUI's release is one the proxy refuses to relay to.

    The answer stays generic (anyone may ask, signed in or not); the reason is in the log
    and in ``/readyz``.
    """

    status = 503
    public = "the OpenWebUI release behind this proxy is refused; see the proxy's log"
    code = "openwebui_release"


class RefusalSignal:
    """How many times a worker of this proxy found OpenWebUI's release refused.

    A counter in shared memory, made by the parent before it forks the workers. Not locked:
    two workers raising it at once may count one, but what matters is that it changed.
    """

    def __init__(self, context: BaseContext) -> None:
        self._count = context.RawValue("Q", 0)

    @property
    def count(self) -> int:
        return int(self._count.value)

    def raise_(self) -> int:
        self._count.value += 1
        return self.count


class ReleaseWatch:
    """Reads and remembers the release behind ``upstream``; gates the public listener."""

    def __init__(
        self,
        upstream: Upstream,
        clock: Callable[[], float] = time.monotonic,
        refusals: RefusalSignal | None = None,
    ) -> None:
        self.upstream = upstream
        self.clock = clock
        self.refusals = refusals
        self._refusals_seen = refusals.count if refusals is not None else 0
        self.assessment: Assessment | None = None
        self.problem: str | None = "OpenWebUI's release not read yet"
        self._read_at: float | None = None
        self._reads = 0
        # Why the last read gave no config (the client's answer while none was ever read):
        # the read's failure, or what OpenWebUI answered instead of its config.
        self._unread_because: Exception | str = "OpenWebUI's release not read yet"
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._log = logs.get()

    async def start(self) -> None:
        """Read the release once; raise :class:`ConfigProblems` if it is one we refuse."""
        await self.refresh()
        if self.assessment is not None and self.assessment.refusal is not None:
            raise ConfigProblems([f"OWUI_PROXY_UPSTREAM: {self.assessment.refusal}"])

    async def refresh(self) -> None:
        """Read ``/api/config`` now; keep the last answer if that fails.

        One read at a time: callers that waited for a read in flight take its answer.
        """
        reads = self._reads
        async with self._lock:
            if self._reads == reads:
                await self._read()

    def permitted(self) -> bool:
        """The per-request check that never suspends: True when the release is known and
        safe (a reading due again is refreshed in the background); False when
        :meth:`permit` must be awaited (it looks again or raises)."""
        if self.refusals is not None and self.refusals.count != self._refusals_seen:
            self._refusals_seen = self.refusals.count
            if self.problem is None and self.assessment is not None:
                # Another worker found the release refused: stop now, look again in a second.
                self.problem = "another worker found OpenWebUI's release refused"
                self._read_at = self.clock()
                self._log.error("openwebui_release_refused_elsewhere")
        if self.problem is None:
            stale = self._read_at is None or self.clock() - self._read_at >= RECHECK_S
            if stale and (self._background is None or self._background.done()):
                self._background = asyncio.create_task(self.refresh())
            return True
        return False

    async def permit(self) -> None:
        """Raise :class:`UnsafeRelease` unless the release is known and safe (per request)."""
        if self.permitted():
            return
        if self._read_at is None or self.clock() - self._read_at >= 1.0:
            await self.refresh()  # not known to be safe: look again first, never relay blind
        if self.problem is None:
            return
        if self.assessment is None:  # never read: OpenWebUI is not answering
            failure = self._unread_because
            if isinstance(failure, str):
                raise UpstreamUnavailable(failure)
            # As the upstream-failure table says: a timeout is a 504, not "unreachable".
            raise translate(failure, Stage.SIDE_REQUEST) from failure
        raise UnsafeRelease()

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    async def _read(self) -> None:
        self._reads += 1
        self._read_at = self.clock()
        try:
            async with self.upstream.session.get(
                self.upstream.base + _CONFIG_PATH,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                allow_redirects=False,
                # /api/config answers at once; a start must not hang on an OpenWebUI that
                # accepts connections but does not answer yet.
                timeout=aiohttp.ClientTimeout(total=self.upstream.connect_timeout_s),
            ) as response:
                body = await read_capped(response.content, _MAX_CONFIG_BYTES)
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._unread_because = exc
            self._unreadable(f"GET {_CONFIG_PATH} failed ({type(exc).__name__})")
            return
        try:
            config = json.loads(body) if status == 200 else None
        except (ValueError, RecursionError):  # not JSON, or nested past the parser
            config = None
        if not isinstance(config, dict):
            self._unread_because = f"upstream answered GET {_CONFIG_PATH} with {status}"
            self._unreadable(f"GET {_CONFIG_PATH} answered {status} without a JSON object")
            return
        self._assessed(assess(config))

    def _unreadable(self, why: str) -> None:
        # The last assessment stands while it was safe (OpenWebUI restarting is not a new
        # release); requests fail on their own then. Before any, nothing is relayed.
        if self.assessment is None:
            self.problem = f"OpenWebUI's release is not known yet: {why}"
            self._log.warning("openwebui_release_unknown", reason=why)

    def _assessed(self, assessment: Assessment) -> None:
        changed = assessment != self.assessment
        self.assessment = assessment
        self.problem = assessment.refusal
        if not changed:
            return
        if assessment.refusal is not None:
            if self.refusals is not None:
                self._refusals_seen = self.refusals.raise_()  # every other worker stops too
            self._log.error(
                "openwebui_release_refused", version=assessment.version, reason=assessment.refusal
            )
            return
        self._log.info("openwebui_release", version=assessment.version)
        for warning in assessment.warnings:
            self._log.warning(
                "openwebui_release_warning", version=assessment.version, problem=warning
            )
