"""The floor: the least a Python reverse proxy on aiohttp costs per request. NOT the product.

``python -m bench.floor PORT UPSTREAM_PORT ACCESS_LOG``. aiohttp's low-level ``web.Server``
(no application, router or middleware), pooled keep-alive upstream connections whose
responses one httptools parser per connection reads, the client's headers passed on
except the email header, which it sets (one injected header), one access line per request
to a file, and nothing else: no authentication, no header policy, no limits, no
timeouts, no request bodies, no metrics. The bench shows it as its own row next to nginx,
Caddy and owui-proxy: the reachable limit for the proxy's own per-request work.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

import httptools
from aiohttp import web

from bench.configs import BENCH_EMAIL

# Never passed on: the identity header (set below) and what belongs to one connection.
_DROP = frozenset({"x-user-email", "host", "connection", "keep-alive", "content-length"})
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class _Conn(asyncio.Protocol):
    """One keep-alive upstream connection; its parser reads every response it carries."""

    def __init__(self, idle: list[_Conn]) -> None:
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.waiter is not None
        self.waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    async def exchange(self, head: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        self.headers, self.body = [], []
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(head)
        return await self.waiter


def floor_handler(
    upstream_port: int, log: TextIO
) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    """The whole proxy: one handler for ``web.Server`` (``bench/stages.py`` serves it too)."""
    idle: list[_Conn] = []
    host = f"Host: 127.0.0.1:{upstream_port}"

    async def handle(request: web.BaseRequest) -> web.Response:
        lines = [f"{request.method} {request.raw_path} HTTP/1.1", host]
        lines += [f"{n}: {v}" for n, v in request.headers.items() if n.lower() not in _DROP]
        lines.append(f"X-User-Email: {BENCH_EMAIL}\r\n\r\n")
        if idle:
            conn = idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: _Conn(idle), "127.0.0.1", upstream_port)
        status, headers, body = await conn.exchange("\r\n".join(lines).encode())
        idle.append(conn)
        log.write(f"{time.time():.3f} {request.method} {request.raw_path} {status}\n")
        kept = [(n, v) for n, v in headers if n.lower() not in _HOP]
        return web.Response(status=status, body=body, headers=kept)

    return handle


async def main(port: int, upstream_port: int, log: TextIO) -> None:
    handler = floor_handler(upstream_port, log)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(web.Server(handler), "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    with open(sys.argv[3], "a", buffering=65536) as access_log:
        uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), access_log))
