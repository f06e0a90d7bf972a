"""A lock-like async context manager held by another task for the length of a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any


@asynccontextmanager
async def held_elsewhere(lock: AbstractAsyncContextManager[Any]) -> AsyncIterator[None]:
    """``lock`` entered by a task of its own; the block runs once it is in, and the task
    lets go (and is awaited) when the block ends."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with lock:
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    try:
        yield
    finally:
        release.set()
        await holder
