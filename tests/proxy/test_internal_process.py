"""The internal listener in a real ``owui-proxy`` process: SIGHUP reload, start-up refusal,
and the process's whole output free of tokens.

The fake upstream runs in this test's event loop; the proxy process reaches it on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.tokens import fingerprint
from tests.fakes import FakeUpstream

TOKEN = "proc-token-0123456789abcdefghijklmnopqrstuvwxyz"
NEXT = "proc-token-NEXT-ZYXWVUTSRQPONMLKJIHGFEDCBA9876"
STUDENT = "student@example.edu"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_tokens(path: Path, *tokens: str, mode: int = 0o600) -> Path:
    path.write_text("".join(f"{t}\n" for t in tokens), encoding="ascii")
    path.chmod(mode)
    return path


def proxy_env(upstream: str, tokens: Path, workers: str = "1") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_PROXY_")}
    env.update(
        OWUI_PROXY_UPSTREAM=upstream,
        OWUI_PROXY_AUTH="forward",
        OWUI_PROXY_FORWARD_AUTH_URL="http://127.0.0.1:9/oauth2/auth",
        OWUI_PROXY_LISTEN=f"127.0.0.1:{free_port()}",
        OWUI_PROXY_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        OWUI_PROXY_INTERNAL_LISTEN=f"127.0.0.1:{free_port()}",
        OWUI_PROXY_INTERNAL_TOKENS_FILE=str(tokens),
        OWUI_PROXY_SHUTDOWN_GRACE_S="1",
        OWUI_PROXY_WORKERS=workers,
    )
    return env


@dataclass
class Proc:
    process: asyncio.subprocess.Process
    internal_url: str

    async def status(self, token: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{self.internal_url}/api/config",
                headers={"Proxy-Authorization": f"Bearer {token}", "X-User-Email": STUDENT},
            ) as response,
        ):
            return response.status

    async def stop(self) -> tuple[int, str]:
        """SIGTERM, wait, and return the exit code and everything the process wrote."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), timeout=30)
        assert self.process.returncode is not None
        return self.process.returncode, (stdout + stderr).decode("utf-8", "replace")


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture(params=["1", "2"], ids=["one-worker", "two-workers"])
async def running(
    request: pytest.FixtureRequest, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[Proc, Path]]:
    """A proxy process; with two workers, SIGHUP goes to the parent, which passes it on."""
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    env = proxy_env(str(server.make_url("/")).rstrip("/"), tokens, workers=request.param)
    proc = Proc(await start(env), "http://" + env["OWUI_PROXY_INTERNAL_LISTEN"])
    for _ in range(300):  # start-up takes well under a second; allow a slow machine
        if proc.process.returncode is not None:
            break
        try:
            await proc.status(TOKEN)
            break
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
    assert proc.process.returncode is None, await proc.stop()
    try:
        yield proc, tokens
    finally:
        if proc.process.returncode is None:
            proc.process.kill()
            await proc.process.wait()


async def test_sighup_reloads_tokens_in_the_real_process(running: tuple[Proc, Path]) -> None:
    proc, tokens = running
    assert await proc.status(TOKEN) == 200
    assert await proc.status(NEXT) == 407

    write_tokens(tokens, NEXT)
    proc.process.send_signal(signal.SIGHUP)
    for _ in range(200):
        if await proc.status(NEXT) == 200:
            break
        await asyncio.sleep(0.05)
    assert await proc.status(NEXT) == 200
    assert await proc.status(TOKEN) == 407

    # A broken file on the next SIGHUP changes nothing, and the process lives on.
    write_tokens(tokens, "short")
    proc.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert await proc.status(NEXT) == 200

    code, output = await proc.stop()
    assert code == 0
    assert "internal_tokens_reloaded" in output
    assert "internal_tokens_reload_failed" in output
    assert fingerprint(NEXT) in output
    assert output.count('"internal_audit"') >= 7  # one per request made above
    for secret in (TOKEN, NEXT, TOKEN[:16], NEXT[:16]):
        assert secret not in output


async def test_world_readable_token_file_stops_the_process(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", TOKEN, mode=0o644)
    process = await start(proxy_env("http://127.0.0.1:9", tokens))
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    output = (stdout + stderr).decode()
    assert process.returncode == 2, output
    assert "OWUI_PROXY_INTERNAL_TOKENS_FILE" in output
    assert f"chmod 600 {tokens}" in output
    assert TOKEN not in output
