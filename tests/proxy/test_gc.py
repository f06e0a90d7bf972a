"""What a worker makes at start stays out of later garbage collections (issue 23's p99:
every full collection walked ~60,000 start-up objects, a pause of tens of milliseconds)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import aiohttp
from aiohttp import web

from proxy import server
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_internal_process import free_port


async def test_a_serving_worker_keeps_its_start_up_objects_out_of_collections(
    settings_for,
) -> None:
    port = free_port()
    settings = settings_for(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{free_port()}")
    serving = asyncio.create_task(server.serve(settings))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/x", headers=ALICE_COOKIE
                    ) as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the proxy never answered")
        # A full collection walks the objects of generations 0-2 (gc.get_objects()); the
        # frozen ones it leaves alone. The apps were made at start: frozen.
        assert gc.get_freeze_count() > 0
        assert not any(isinstance(o, web.Application) for o in gc.get_objects())
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve() drains on it, as in production
        await serving
        gc.unfreeze()
