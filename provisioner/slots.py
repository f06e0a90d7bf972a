"""How many users make calls at once, with the users already under way served first.

A user waiting out the settle pause (see provision.py) gives its slot to the next user
meanwhile. With a plain FIFO semaphore it then queues behind every user not yet started:
on a roster of thousands no user finishes (is reported, counted in the progress, written
to the report) before the whole roster has begun, and every user's state is held at
once. :class:`Slots` hands a freed slot to a user coming back from its pause before any
new user, so users finish in roster order, a few at a time, as the run goes.

A holder takes its slot with :meth:`Slots.lease`, and lends it out and takes it back
through the :class:`Lease`. The lease knows whether it holds the slot: a holder cancelled
while waiting to take it back (the webhook's deadline) leaves without it, and the lease
then gives nothing back. Releasing it unconditionally when the holder leaves, as a plain
``async with`` does, gave the slot back a second time, and one more holder than the size
got in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any


class Slots:
    """At most ``size`` holders; :meth:`resume` (a holder back from a pause) goes first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("Slots needs a size of at least 1")
        self._free = size
        self._returning: deque[asyncio.Future[None]] = deque()
        self._new: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """A slot for a user starting: after every waiter, returning ones first."""
        await self._take(self._new)

    async def resume(self) -> None:
        """A slot for a user back from a pause: before any user not yet started."""
        await self._take(self._returning)

    def release(self) -> None:
        self._free += 1
        self._hand_over()

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """A slot for a holder starting, as a :class:`Lease`: released when the holder
        leaves if, and only if, the holder holds it then."""
        held = Lease(self)
        await self.acquire()
        held.held = True
        try:
            yield held
        finally:
            held.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    async def _take(self, queue: deque[asyncio.Future[None]]) -> None:
        waiting = any(not f.done() for f in self._returning) or (
            queue is self._new and any(not f.done() for f in self._new)
        )
        if self._free > 0 and not waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed a slot in the same instant: give it on
            raise

    def _hand_over(self) -> None:
        for queue in (self._returning, self._new):
            while self._free > 0 and queue:
                waiter = queue.popleft()
                if not waiter.done():
                    self._free -= 1
                    waiter.set_result(None)


class Lease:
    """One holder's slot of :class:`Slots`: lent out (:meth:`release`) during a pause and
    taken back (:meth:`resume`); released at most once, and only while held."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.held = False

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()

    def hand_to(self, work: asyncio.Future[Any]) -> None:
        """Leave the slot taken until ``work`` ends, then release it (the holder is leaving
        while a call it started runs on: that call still counts)."""
        if self.held:
            self.held = False
            work.add_done_callback(lambda _: self._slots.release())

    async def resume(self) -> None:
        """The slot back, before any holder not yet started; not held if cancelled."""
        if not self.held:
            await self._slots.resume()
            self.held = True
