"""Probes run inside a test network namespace; each prints one JSON document.

    python -m tests.deploy.netprobe tcp 198.18.1.1:443 198.18.3.1:8001 ...
        {"198.18.1.1:443": "open", "198.18.3.1:8001": "unreachable", ...}
    python -m tests.deploy.netprobe raw HOST PORT CA_PEM [BODY]  < head lines (JSON list)
        {"status": 200, "headers": [...], "body": "..."}

TCP outcomes: ``open`` (handshake completed), ``refused`` (RST: nothing listens there),
``unreachable`` (no route, or an ICMP error), ``timeout`` (silently dropped).
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.deploy.clients import raw_https

TIMEOUT_S = 3.0


def tcp_outcome(target: str) -> str:
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=TIMEOUT_S).close()
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM):
            return "unreachable"
        return f"error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return "open"


def main() -> None:
    kind, *args = sys.argv[1:]
    if kind == "tcp":
        with ThreadPoolExecutor(max_workers=32) as pool:
            print(json.dumps(dict(zip(args, pool.map(tcp_outcome, args), strict=True))))
    elif kind == "raw":
        host, port, ca_pem, *body = args
        ctx = ssl.create_default_context(cafile=ca_pem)
        lines = json.load(sys.stdin)
        payload = body[0].encode() if body else b""
        response = asyncio.run(raw_https(int(port), lines, ctx=ctx, host=host, body=payload))
        print(
            json.dumps(
                {
                    "status": response.status,
                    "headers": response.headers,
                    "body": response.body.decode("utf-8", "replace"),
                }
            )
        )
    else:
        raise SystemExit(f"unknown probe {kind!r}")


if __name__ == "__main__":
    main()
