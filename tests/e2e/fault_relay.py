"""A relay between a test's proxy and the real OpenWebUI that can fail on demand.

``normal`` relays each request and its answer unchanged; ``down`` drops every connection
without an answer (OpenWebUI gone); ``hang`` accepts and never answers (OpenWebUI stuck);
``old_release`` relays, but ``GET /api/config`` names a release the proxy refuses (OpenWebUI
replaced by an old one). Served from a thread of its own, on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Literal

import aiohttp
from aiohttp import web

Mode = Literal["normal", "down", "hang", "old_release"]
REFUSED_RELEASE = "0.6.5"  # before OpenWebUI's "User mismatch" check (0.6.14)
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "host"}
)


class FaultRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: Mode = "normal"
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A hanging answer ends when the proxy hangs up (as a stuck OpenWebUI's would), and
        # at the latest a second into the clean-up.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        if mode == "down":
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never sent: the connection is gone
        if mode == "hang":
            await asyncio.sleep(3600)  # cancelled when the proxy gives up and hangs up
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        if request.path == "/api/config":  # read as plain JSON, to rewrite it
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            if mode == "old_release" and request.path == "/api/config" and answer.status == 200:
                config = json.loads(body)
                config["version"] = REFUSED_RELEASE
                body = json.dumps(config).encode()
            out = web.Response(status=answer.status, body=body)
            for name, value in answer.headers.items():
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    out.headers.add(name, value)
            return out
