"""Waiting in the browser tests for what the page is waiting for, not for a fixed budget.

OpenWebUI renders its chat input only after its page, its script chunks and its first API
calls (config, the user, models, chats) have come back and its Socket.IO connection is up.
On a busy machine that can take minutes; a fixed 60 s wait failed there while the page was
still loading. :class:`Progress` watches the page's network (requests started, answered,
failed; WebSocket frames) and how long its main thread takes to answer: a wait goes on as
long as the page is waiting on something or still doing something, and fails once it has
been still for :data:`STALL_S` (then nothing more will come) or after :data:`CAP_S` in all,
naming what was still outstanding.

One failure is not the page's: Chromium aborts every request in flight with
``net::ERR_NETWORK_CHANGED`` when the host's network configuration changes, which other
work on a shared machine does all the time (network namespaces, container bridges). A page
whose scripts were aborted that way never renders; as a user would, the wait reloads it (at
most :data:`RELOADS` times, each said on stdout), and :meth:`Progress.goto` and
:meth:`Progress.evaluate` try again. Any other failure fails the test.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, Request, WebSocket

# A page that has neither a request in flight nor done anything for this long is stuck.
STALL_S = 45.0
# The longest any one wait may take, however busy the page keeps.
CAP_S = 600.0
# How often the condition is looked at.
POLL_MS = 500
# A main thread that takes longer than this to answer is busy (running the app's scripts).
BUSY_S = 0.25
# Reloads (and retries) after Chromium aborted requests for a network change, per page.
RELOADS = 3
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
# How long a page whose requests a network change aborted may sit quiet before the reload.
QUIET_S = 5.0


class Progress:
    """Everything a page does, as the time it last did something and what it waits on."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.last = time.monotonic()
        self.pending: dict[Request, float] = {}
        self.failed: list[str] = []  # the last requests that failed, with the browser's reason
        self.network_changed = False  # Chromium aborted requests for a network change
        self.reloads = 0
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._failed)
        page.on("websocket", self._socket)

    def _started(self, request: Request) -> None:
        self.last = time.monotonic()
        self.pending[request] = self.last

    def _ended(self, request: Request) -> None:
        self.last = time.monotonic()
        self.pending.pop(request, None)

    def _failed(self, request: Request) -> None:
        self._ended(request)
        self.failed = [*self.failed[-9:], f"{request.method} {request.url}: {request.failure}"]
        if NETWORK_CHANGED in (request.failure or ""):
            self.network_changed = True

    def _recover(self, what: str) -> bool:
        """After a network change aborted the page's requests: note it, and whether another
        attempt is allowed."""
        if not self.network_changed or self.reloads >= RELOADS:
            return False
        self.network_changed = False
        self.reloads += 1
        self.last = time.monotonic()
        print(f"pageload: Chromium aborted requests ({NETWORK_CHANGED}); again: {what}")
        return True

    def goto(self, url: str) -> None:
        """``page.goto``, tried again if a network change aborted it."""
        while True:
            try:
                self.page.goto(url)
                return
            except PlaywrightError as exc:
                self.network_changed = self.network_changed or NETWORK_CHANGED in str(exc)
                if not self._recover(f"going to {url}"):
                    raise

    def evaluate(self, script: str) -> Any:
        """``page.evaluate`` of a script that fetches, tried again if a network change
        aborted its fetch (the page then says "Failed to fetch")."""
        while True:
            try:
                return self.page.evaluate(script)
            except PlaywrightError:
                if not self._recover("a fetch from the page"):
                    raise

    def _socket(self, socket: WebSocket) -> None:
        self.last = time.monotonic()
        for event in ("framereceived", "framesent", "close"):
            socket.on(event, self._touched)

    def _touched(self, *_args: object) -> None:
        self.last = time.monotonic()

    def _busy(self) -> bool:
        """Ask the page's main thread something trivial; a slow answer means it is working."""
        started = time.monotonic()
        try:
            self.page.evaluate("0")
        except PlaywrightError:
            return True  # navigating: the old document went, the new one is on its way
        return time.monotonic() - started > BUSY_S

    def until(self, ready: Callable[[], bool], what: str) -> None:
        """Return once ``ready()`` holds; fail if the page stalls first (or after CAP_S)."""
        started = time.monotonic()
        while True:
            if ready():
                return
            if self._busy():
                self.last = time.monotonic()
            now = time.monotonic()
            stalled = now - self.last > STALL_S and not self.pending
            # Requests aborted for a network change, and nothing else under way: the page
            # will not get them back by itself.
            aborted = self.network_changed and not self.pending and now - self.last > QUIET_S
            if aborted and self._recover(f"reloading {self.page.url} for {what}"):
                self.goto(self.page.url)
                continue
            if stalled or now - started > CAP_S:
                why = "the page went still" if stalled else f"{CAP_S:.0f} s passed"
                raise AssertionError(
                    f"{what}: not after {now - started:.0f} s ({why}); at {self.page.url}; "
                    f"requests in flight: {self.outstanding() or 'none'}; "
                    f"last failed: {self.failed or 'none'}"
                )
            self.page.wait_for_timeout(POLL_MS)

    def outstanding(self) -> list[str]:
        """The requests still waiting for an answer, oldest first, with their age."""
        now = time.monotonic()
        ordered = sorted(self.pending.items(), key=lambda item: item[1])
        return [f"{r.method} {r.url} ({now - since:.0f} s)" for r, since in ordered[:10]]

    def visible(self, locator: Locator, what: str) -> None:
        """Wait for ``locator`` to be visible."""
        self.until(lambda: _visible(locator), what)

    def at(self, url: re.Pattern[str], what: str) -> None:
        """Wait for the page to be at a URL matching ``url``."""
        self.until(lambda: bool(url.match(self.page.url)), what)

    def app(self, what: str = "OpenWebUI's chat input") -> None:
        """Wait for OpenWebUI to have rendered its chat input (it has loaded, is signed in)."""
        self.visible(self.page.locator("#chat-input"), what)


def _visible(locator: Locator) -> bool:
    try:
        return locator.first.is_visible()
    except PlaywrightError:
        return False  # the page is between documents


_watched: weakref.WeakKeyDictionary[Page, Progress] = weakref.WeakKeyDictionary()


def progress(page: Page) -> Progress:
    """The page's :class:`Progress`, made on first use (one per page). Call it before the
    page navigates, so that it sees the requests from the start."""
    found = _watched.get(page)
    if found is None:
        found = _watched[page] = Progress(page)
    return found
