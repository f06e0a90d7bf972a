"""Measuring clients for cases 3-5 (the request/response cases use wrk)."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/mean of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000

    return {
        "n": len(ordered),
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": statistics.fmean(ordered) / 1000,
    }


async def sse_deltas(
    url: str, headers: Mapping[str, str], count: int, interval_ms: float
) -> list[int]:
    """Per event: arrival time at the client minus the upstream's timestamp (ns)."""
    deltas: list[int] = []
    timeout = aiohttp.ClientTimeout(total=count * interval_ms / 1000 + 30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(
            f"{url}/sse", params={"n": count, "interval_ms": interval_ms}, headers=headers
        ) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"SSE {url}: HTTP {response.status} {await response.text()}")
        async for line in response.content:
            if line.startswith(b"data: "):
                deltas.append(time.monotonic_ns() - int(line[6:]))
    if len(deltas) != count:
        raise RuntimeError(f"SSE {url}: {len(deltas)} events of {count}")
    return deltas


async def ws_rtts(url: str, headers: Mapping[str, str], count: int, warmup: int = 50) -> list[int]:
    """Round trips (ns) of a 64-byte text message echoed, one at a time."""
    payload = "x" * 64
    rtts: list[int] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
        session.ws_connect(url.replace("http", "ws", 1) + "/ws", headers=headers) as sock,
    ):
        for i in range(warmup + count):
            start = time.perf_counter_ns()
            await sock.send_str(payload)
            msg = await sock.receive(timeout=10)
            elapsed = time.perf_counter_ns() - start
            if msg.type != aiohttp.WSMsgType.TEXT or msg.data != payload:
                raise RuntimeError(f"WS {url}: unexpected {msg.type} {str(msg.data)[:80]}")
            if i >= warmup:
                rtts.append(elapsed)
    return rtts


def upload(url: str, headers: Mapping[str, str], size: int, chunk: int = 1 << 20) -> dict:
    """POST ``size`` bytes (Content-Length, 1 MiB writes) to ``url``/upload over a raw
    socket, so the client costs next to nothing. Returns seconds, MiB/s and the reply."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = ["POST /upload HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {size}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head += ["Content-Type: application/octet-stream", "Connection: close", "", ""]
    block = b"\0" * chunk
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall("\r\n".join(head).encode())
        left = size
        while left > 0:
            n = min(left, chunk)
            sock.sendall(block if n == chunk else block[:n])
            left -= n
        reply = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    seconds = time.perf_counter() - start
    status_line, _, rest = reply.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return {
        "status": status_line.decode(errors="replace"),
        "reply": body.decode(errors="replace")[:200],
        "seconds": seconds,
        "mib_per_s": size / (1 << 20) / seconds,
    }


def run(coro):  # type: ignore[no-untyped-def]
    """Run one client coroutine on a fresh event loop."""
    return asyncio.run(coro)
