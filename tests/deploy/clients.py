"""Clients the deployment tests talk to the edge with.

``raw_https`` writes an HTTP/1.1 request byte for byte (duplicate headers, underscores, any
letter case: what a hostile client can send, which friendly client libraries tidy up).
``session`` is an aiohttp client that resolves the test host name to a fixed address, so
SNI and Host are the real name while the connection goes to a test port.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.deploy.edge import SERVER_NAME


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


async def raw_https(
    port: int,
    request_head: Sequence[str],
    *,
    ctx: ssl.SSLContext,
    body: bytes = b"",
    host: str = "127.0.0.1",
    local_addr: tuple[str, int] | None = None,
    server_hostname: str = SERVER_NAME,
    timeout: float = 30.0,
) -> RawResponse:
    """Send ``request_head`` lines (request line + headers) and ``body``; read to EOF.

    Add ``Connection: close`` (or a Connection header ending in ``close``) to the lines.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=server_hostname, local_addr=local_addr
        ),
        timeout,
    )
    try:
        writer.write(("\r\n".join(request_head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers):
        rest = _dechunk(rest)
    return RawResponse(status, headers, rest)


class StaticResolver(AbstractResolver):
    """Resolves every name to one address (the edge under test)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=self.address,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def session(
    ctx: ssl.SSLContext,
    *,
    address: str = "127.0.0.1",
    local_addr: tuple[str, int] | None = None,
    **kwargs: Any,
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=ctx, resolver=StaticResolver(address), local_addr=local_addr, force_close=True
    )
    # Fail within seconds when something is held back (aiohttp's default waits 5 minutes).
    kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=120, sock_connect=10, sock_read=20))
    return aiohttp.ClientSession(connector=connector, **kwargs)
