"""Serve a fake from ``tests.fakes`` as its own process, recording to a JSON-lines file.

For the network-isolation tests, where the fake runs inside a network namespace
(``ip netns exec app python -m tests.deploy.standin upstream ...``) and the test reads what
reached it from the file. Prints ``ready`` on stdout once listening.

    python -m tests.deploy.standin upstream --listen 198.18.2.2:8080 --record app.jsonl
    python -m tests.deploy.standin auth --listen 127.0.0.1:4180 --record auth.jsonl \\
        --user alice-session=alice@example.edu,Alice,students
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes import FakeAuthService, FakeUpstream, Seen


class RecordingList(list[Seen]):
    """A list that also appends each item to a JSON-lines file as it arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def append(self, item: Seen) -> None:
        super().append(item)
        line = {"method": item.method, "raw_path": item.raw_path, "headers": item.headers}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """What a stand-in recorded so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def header_values(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


def _user(spec: str) -> tuple[str, dict[str, str]]:
    cookie, _, rest = spec.partition("=")
    email, name, groups = ([*rest.split(",", 2), "", ""])[:3]
    headers = {"X-Auth-Request-Email": email}
    if name:
        headers["X-Auth-Request-User"] = name
    if groups:
        headers["X-Auth-Request-Groups"] = groups
    return cookie, headers


async def _serve(app: web.Application, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.standin")
    parser.add_argument("kind", choices=["upstream", "auth"])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--record", type=Path, required=True, help="JSON-lines file")
    parser.add_argument("--user", action="append", default=[], help="COOKIE=EMAIL[,NAME[,GROUPS]]")
    args = parser.parse_args()
    seen = RecordingList(args.record)
    if args.kind == "upstream":
        app = FakeUpstream(seen=seen).app()
    else:
        app = FakeAuthService(users=dict(_user(u) for u in args.user), seen=seen).app()
    asyncio.run(_serve(app, args.listen))


if __name__ == "__main__":
    main()
