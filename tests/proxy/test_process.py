"""The real console script as a process: configuration errors, start, SIGTERM drain, workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_relay import _closed_port

OWUI_PROXY = str(Path(sys.executable).parent / "owui-proxy")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_PROXY_")}
    env.update({f"OWUI_PROXY_{k.upper()}": v for k, v in values.items()})
    return env


def test_settings_errors_exit_2_listing_every_problem(tmp_path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('listen = "nowhere"\ncolour = "blue"\n')
    result = subprocess.run(
        [OWUI_PROXY, "--config", str(config)],
        env=_env(auth="forward", trusted_proxies="10.0.0.0/99", connect_timeout_s="-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    for expected in (
        "OWUI_PROXY_UPSTREAM: required",
        "OWUI_PROXY_LISTEN",
        f"colour in {config}: unknown setting",
        "OWUI_PROXY_TRUSTED_PROXIES",
        "OWUI_PROXY_CONNECT_TIMEOUT_S",
    ):
        assert expected in result.stderr, expected
    assert result.stdout == ""


def test_help_and_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--config FILE.toml" in result.stdout


def test_internal_listener_problem_stops_the_start(tmp_path, upstream_server, auth_server):
    result = subprocess.run(
        [OWUI_PROXY],
        env=_env(
            upstream=str(upstream_server.make_url("/")),
            auth="forward",
            forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
            listen=f"127.0.0.1:{_closed_port()}",
            admin_listen=f"127.0.0.1:{_closed_port()}",
            internal_listen=f"127.0.0.1:{_closed_port()}",
            internal_tokens_file=str(tmp_path / "missing-tokens"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "OWUI_PROXY_INTERNAL_TOKENS_FILE" in result.stderr


class ProxyProcess:
    """``owui-proxy`` started in the background; its stdout (JSON lines) kept for checks.

    Both pipes are read as the process writes: a full pipe (64 KiB) would block the proxy's
    event loop on its next log line, and a test with many requests would hang on that.
    """

    def __init__(self, env: dict[str, str], public: int, admin: int) -> None:
        self.public = f"http://127.0.0.1:{public}"
        self.admin = f"http://127.0.0.1:{admin}"
        self.process = subprocess.Popen(
            [OWUI_PROXY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._out: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(pipe,), daemon=True)
            for pipe in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        for line in pipe:
            self._out.append(line)

    def output(self) -> str:
        """Everything written so far, stdout and stderr lines interleaved as they came."""
        return "".join(self._out)

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                async with session.get(self.admin + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("proxy did not start")

    async def wait_exit(self) -> tuple[int, str]:
        # In a thread: the fake upstream shares this event loop and must keep answering.
        try:
            await asyncio.to_thread(self.process.wait, 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            await asyncio.to_thread(reader.join, 10)
        # Both streams: structlog writes stdout, aiohttp's own logger stderr.
        return self.process.returncode, self.output()


@pytest.fixture
def start_proxy(upstream_server, auth_server):
    started: list[ProxyProcess] = []

    def start(**overrides: str) -> ProxyProcess:
        public, admin = _closed_port(), _closed_port()
        values = {
            "upstream": str(upstream_server.make_url("/")),
            "auth": "forward",
            "forward_auth_url": str(auth_server.make_url("/oauth2/auth")),
            "listen": f"127.0.0.1:{public}",
            "admin_listen": f"127.0.0.1:{admin}",
            "shutdown_grace_s": "20",
            **overrides,
        }
        proc = ProxyProcess(_env(**values), public, admin)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


async def test_sigterm_drains_an_in_flight_request_then_exits_0(start_proxy, fake_upstream):
    proxy = start_proxy()
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        in_flight = asyncio.ensure_future(
            session.get(proxy.public + "/slow?delay=2", headers=ALICE_COOKIE)
        )
        for _ in range(200):
            if any(seen.raw_path.startswith("/slow") for seen in fake_upstream.seen):
                break
            await asyncio.sleep(0.05)
        proxy.process.send_signal(signal.SIGTERM)
        for _ in range(100):  # the admin listener stays up while draining, not ready
            async with session.get(proxy.admin + "/readyz") as ready:
                if ready.status == 503:
                    assert "shutting down" in (await ready.json())["problems"]
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("/readyz stayed ready while draining")
        response = await asyncio.wait_for(in_flight, timeout=30)
        assert response.status == 200
        assert await response.json() == {"slow": True}
        response.release()
        code, out = await proxy.wait_exit()
    assert code == 0
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert "draining" in events
    assert "stopped" in events
    assert events.index("draining") < events.index("stopped")


async def test_two_workers_serve_and_stop(start_proxy, fake_upstream):
    proxy = start_proxy(workers="2")
    # OpenWebUI credentials must be the signed-in person's own (proxy/owners.py): Alice's.
    fake_upstream.api_keys.update(
        {"sk-owui-cookie-secret": "alice@example.edu", "sk-owui-bearer-secret": "alice@example.edu"}
    )
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        secrets = {
            "Cookie": "_oauth2_proxy=alice-session; token=sk-owui-cookie-secret",
            "Authorization": "Bearer sk-owui-bearer-secret",
            "X-User-Email": "spoofed-value@evil.example",
            "X-Request-ID": "client-id\u00e9;rm -rf",
        }
        for _ in range(10):
            async with session.get(proxy.public + "/x?q=query-secret", headers=secrets) as resp:
                assert resp.status == 200
        async with session.get(proxy.admin + "/metrics") as response:
            metrics = await response.text()
        # Set by worker 0 at the scrape, rendered from the multiprocess files.
        assert _metric(metrics, "owui_proxy_ready") == 1
        assert _metric(metrics, "owui_proxy_openwebui_release_refused") == 0
        proxy.process.send_signal(signal.SIGTERM)
        code, out = await proxy.wait_exit()
    assert code == 0
    access = [json.loads(line) for line in out.splitlines() if '"access"' in line]
    assert len(access) == 10
    assert all(line["email"] == "alice@example.edu" for line in access)
    for secret in (
        "alice-session",
        "owui-cookie-secret",
        "owui-bearer-secret",
        "spoofed-value",
        "query-secret",
    ):
        assert secret not in out, secret  # never in a log line
    assert access[0]["client_request_id"] == "client-idrm-rf"  # sanitised, kept apart


async def test_sigterm_closes_websockets_with_going_away(start_proxy, fake_upstream):
    """Open WebSockets get 1001 at once, so the drain does not sit out the whole grace."""
    proxy = start_proxy(shutdown_grace_s="60")
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        async with session.ws_connect(proxy.public + "/ws", headers=ALICE_COOKIE) as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=10)).data == "hi"
            started = time.monotonic()
            proxy.process.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 1001
        code, _out = await proxy.wait_exit()
    assert code == 0
    assert time.monotonic() - started < 30  # far below the 60 s grace


def test_config_reference_is_current() -> None:
    """docs/config.md carries the table the settings model generates (no drift)."""
    from proxy.cli import config_reference

    doc = (Path(__file__).parents[2] / "docs" / "config.md").read_text(encoding="utf-8")
    assert config_reference() in doc


async def test_unix_socket_listener(tmp_path, start_proxy, fake_upstream) -> None:
    sock = tmp_path / "proxy.sock"
    proxy = start_proxy(listen=f"unix:{sock}")
    async with aiohttp.ClientSession() as admin:
        await proxy.wait_ready(admin)
    connector = aiohttp.UnixConnector(path=str(sock))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://proxy/over-unix", headers=ALICE_COOKIE) as response,
    ):
        assert response.status == 200
    assert fake_upstream.last().raw_path == "/over-unix"
    assert fake_upstream.last().values("X-User-Email") == ["alice@example.edu"]
    proxy.process.send_signal(signal.SIGTERM)
    code, _out = await proxy.wait_exit()
    assert code == 0


def _peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_one_gib_up_and_down_keeps_proxy_memory_flat(start_proxy, fake_upstream) -> None:
    """The issue's bound: 1 GiB through the real proxy process grows it by tens of MB at most."""
    gib, block = 1 << 30, b"\xab" * (1 << 20)
    proxy = start_proxy(max_body_bytes=str(2 * gib))

    async def body():
        for _ in range(gib // len(block)):
            yield block

    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        # Warm up (imports, pools) so the baseline is the proxy at work, not at rest.
        async with session.get(proxy.public + "/download?bytes=1048576", headers=ALICE_COOKIE):
            pass
        baseline = _peak_rss_mib(proxy.process.pid)
        async with session.post(proxy.public + "/upload", data=body(), headers=ALICE_COOKIE) as r:
            assert await r.json() == {"bytes": gib}
        received = 0
        async with session.get(
            proxy.public + f"/download?bytes={gib}", headers=ALICE_COOKIE
        ) as response:
            async for chunk in response.content.iter_any():
                received += len(chunk)
        assert received == gib
        grown = _peak_rss_mib(proxy.process.pid) - baseline
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.wait_exit()
    assert grown < 48, f"proxy peak RSS grew by {grown:.0f} MiB"


def test_port_in_use_is_one_clear_line_and_exit_1(upstream_server, auth_server) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [OWUI_PROXY],
            env=_env(
                upstream=str(upstream_server.make_url("/")),
                auth="forward",
                forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
                listen=f"127.0.0.1:{port}",
                admin_listen=f"127.0.0.1:{_closed_port()}",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr


async def test_sighup_without_internal_listener_is_ignored(start_proxy, fake_upstream):
    """`systemctl reload` sends SIGHUP: a proxy with nothing to reload must not die of it."""
    proxy = start_proxy()
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        proxy.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        headers = {"Cookie": "_oauth2_proxy=alice-session"}
        async with session.get(proxy.public + "/x", headers=headers) as resp:
            assert resp.status == 200
        proxy.process.send_signal(signal.SIGTERM)
        code, out = await proxy.wait_exit()
    assert code == 0
    assert "sighup_ignored" in out


async def test_a_malformed_request_is_logged_without_its_bytes(start_proxy, fake_upstream):
    """aiohttp's parser error would echo the raw header line, session cookie included."""
    proxy = start_proxy()
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
    host, port = proxy.public.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: _oauth2_proxy=SECRETSESSION\x01x\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status_line.split()[1] == b"400"
    proxy.process.send_signal(signal.SIGTERM)
    code, out = await proxy.wait_exit()
    assert code == 0
    assert "malformed request" in out
    assert "SECRETSESSION" not in out
    # aiohttp's own logger goes through the JSON renderer too.
    (line,) = [json.loads(line) for line in out.splitlines() if "malformed request" in line]
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "error"


async def test_sigterm_drain_ends_within_the_grace(start_proxy, fake_upstream) -> None:
    """A stream and a slow request still running at the grace are cut then, not at 2 x grace."""
    grace = 3.0
    proxy = start_proxy(shutdown_grace_s=str(grace))
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        stream = await session.get(proxy.public + "/sse?events=3", headers=ALICE_COOKIE)
        assert await stream.content.readuntil(b"\n\n") == b"data: 0\n\n"
        slow = asyncio.ensure_future(
            session.get(proxy.public + "/slow?delay=60", headers=ALICE_COOKIE)
        )
        for _ in range(200):
            if any(seen.raw_path.startswith("/slow") for seen in fake_upstream.seen):
                break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        code, out = await proxy.wait_exit()
        elapsed = time.monotonic() - started
        with pytest.raises(aiohttp.ClientError):
            await stream.content.read()  # cut, not completed
        with pytest.raises(aiohttp.ClientError):
            await slow
        stream.release()
    assert code == 0, out
    assert grace - 0.5 < elapsed < grace + 1.5, f"drain took {elapsed:.1f} s (grace {grace} s)"


def _unit_seconds(text: str) -> float:
    """``40s``, ``1min 30s``, ``90`` (systemd and compose durations, the forms used here)."""
    import re

    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60}
    return sum(
        float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*(min|sec|s|m|)\b", text)
    )


def test_service_managers_wait_longer_than_the_default_grace() -> None:
    """systemd's TimeoutStopSec and compose's stop_grace_period leave the drain its grace
    plus a margin, and not so much more that a hung stop goes unnoticed."""
    import re

    from proxy.settings import Settings

    grace = Settings.model_fields["shutdown_grace_s"].default
    root = Path(__file__).parents[2]
    unit = (root / "deploy/systemd/owui-proxy.service").read_text(encoding="utf-8")
    compose = (root / "deploy/compose/compose.yaml").read_text(encoding="utf-8")
    stop_sec = re.search(r"^TimeoutStopSec=(.+)$", unit, re.M)
    assert stop_sec is not None
    proxy_service = compose.split("\n  owui-proxy:\n", 1)[1].split("\n\n", 1)[0]
    stop_grace = re.search(r"^\s+stop_grace_period:\s*(\S+)", proxy_service, re.M)
    assert stop_grace is not None, "compose: owui-proxy has no stop_grace_period"
    for where, value in (("systemd", stop_sec[1]), ("compose", stop_grace[1])):
        seconds = _unit_seconds(value)
        assert grace + 5 <= seconds <= grace + 30, f"{where}: {value} for a {grace} s grace"


async def _abort_mid_upload(host: str, port: int) -> None:
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: proxy\r\nCookie: _oauth2_proxy=alice-session\r\n"
        b"Content-Length: 104857600\r\n\r\n" + b"u" * 262144
    )
    await writer.drain()
    await asyncio.sleep(0.05)  # the relay is streaming the body upstream by now
    writer.transport.abort()


async def _abort_mid_download(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /download?bytes=104857600 HTTP/1.1\r\nHost: proxy\r\n"
        b"Cookie: _oauth2_proxy=alice-session\r\n\r\n"
    )
    await writer.drain()
    await reader.readexactly(200_000)  # headers and the first chunks
    writer.transport.abort()


def _metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    sample = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(sample):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_client_disconnects_are_499_and_every_log_line_is_json(
    start_proxy, fake_upstream
) -> None:
    """Clients that leave mid-upload or mid-download: counted apart from 5xx, logged as 499,
    no traceback, and every line the process writes is one JSON object."""
    proxy = start_proxy()
    host, port = proxy.public.removeprefix("http://").rsplit(":", 1)
    aborts = 40
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        for _ in range(aborts):
            await _abort_mid_upload(host, int(port))
            await _abort_mid_download(host, int(port))
        async with session.get(proxy.public + "/x", headers=ALICE_COOKIE) as ok:
            assert ok.status == 200
        for _ in range(100):  # the last aborts are noticed asynchronously
            async with session.get(proxy.admin + "/metrics") as response:
                metrics = await response.text()
            if (
                _metric(
                    metrics,
                    "owui_proxy_requests_total",
                    listener="public",
                    status_class="client_closed",
                )
                >= 2 * aborts
            ):
                break
            await asyncio.sleep(0.1)
        proxy.process.send_signal(signal.SIGTERM)
        code, out = await proxy.wait_exit()
    assert code == 0
    counted = {
        cls: _metric(metrics, "owui_proxy_requests_total", listener="public", status_class=cls)
        for cls in ("2xx", "4xx", "5xx", "client_closed")
    }
    assert counted == {"2xx": 1, "4xx": 0, "5xx": 0, "client_closed": 2 * aborts}, counted
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines:
        json.loads(line)  # every line, stdout and stderr alike
    access = [json.loads(line) for line in lines if '"access"' in line]
    assert sorted(a["status"] for a in access) == [200] + [499] * (2 * aborts)
    assert "Traceback" not in out


async def test_client_leaving_a_silent_stream_closes_the_upstream_at_once(
    start_proxy, fake_upstream
) -> None:
    """The client leaves while the upstream is 20 s into a silence: the upstream's connection
    is closed within a second, not at the next chunk or the idle timeout."""
    upstream_closed = asyncio.Event()

    async def silent_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /api/config "):  # the proxy's release check
            body = b'{"version": "0.12.4", "features": {}}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 0\n\n\r\n"
        )
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(), timeout=20)  # b"" once the proxy closes
            upstream_closed.set()
        except TimeoutError:
            pass
        writer.close()

    server = await asyncio.start_server(silent_stream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = start_proxy(upstream=f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:
            await proxy.wait_ready(session)
            host, public = proxy.public.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(public))
            writer.write(
                b"GET /events HTTP/1.1\r\nHost: proxy\r\n"
                b"Cookie: _oauth2_proxy=alice-session\r\n\r\n"
            )
            await writer.drain()
            assert b"data: 0" in await asyncio.wait_for(reader.readuntil(b"data: 0"), 10)
            left = time.monotonic()
            writer.close()
            await asyncio.wait_for(upstream_closed.wait(), timeout=15)
            assert time.monotonic() - left < 1.5
    finally:
        server.close()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: it serves nothing and waits only for its reaper)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_workers_exit_when_the_parent_is_killed(start_proxy, fake_upstream) -> None:
    proxy = start_proxy(workers="2")
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        async with session.get(proxy.public + "/x", headers=ALICE_COOKIE) as response:
            assert response.status == 200
        workers = _children(proxy.process.pid)
        assert len(workers) == 2
        proxy.process.kill()  # SIGKILL: the parent cannot pass anything on
        proxy.process.wait()
        try:
            for _ in range(100):
                if all(_gone(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
            assert all(_gone(pid) for pid in workers), "workers still running without a parent"
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.get(proxy.public + "/x", headers=ALICE_COOKIE):
                    pass
        finally:
            for pid in workers:  # a failed run must not leave orphans behind
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)


Held = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _hold(host: str, port: int, payload: bytes) -> Held:
    """A connection that sent ``payload`` and then nothing; keep the writer referenced (a
    collected ``StreamWriter`` closes its socket)."""
    reader, writer = await asyncio.open_connection(host, port)
    if payload:
        writer.write(payload)
        await writer.drain()
    return reader, writer


async def _closed_within(held: Held, limit: float) -> bytes:
    """Everything the proxy sent before closing; fails if it is still open after ``limit``."""
    reader, writer = held
    try:
        return await asyncio.wait_for(reader.read(), timeout=limit)
    finally:
        writer.close()


async def test_slow_clients_are_closed_in_time_while_others_are_served(
    tmp_path, start_proxy, fake_upstream
) -> None:
    """Slowloris on both listeners: sockets that send nothing, half a head, or a stalled
    body are closed by the head and body timeouts; normal requests go on meanwhile."""
    tokens = tmp_path / "tokens"
    tokens.write_text("slow-token-0123456789abcdefghijklmnopqrstuvwxyz\n", encoding="ascii")
    tokens.chmod(0o600)
    internal_port = _closed_port()
    proxy = start_proxy(
        header_timeout_s="1",
        keepalive_timeout_s="2",
        body_timeout_s="1",
        internal_listen=f"127.0.0.1:{internal_port}",
        internal_tokens_file=str(tokens),
    )
    host, port = proxy.public.removeprefix("http://").rsplit(":", 1)
    partial = b"GET /x HTTP/1.1\r\nHost: proxy\r\nCookie: _oauth2_proxy=alice-session\r\n"
    stalled = (
        b"POST /upload HTTP/1.1\r\nHost: proxy\r\nCookie: _oauth2_proxy=alice-session\r\n"
        b"Content-Length: 1000000\r\n\r\n" + b"b" * 1000
    )
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        started = time.monotonic()
        heads = [
            *[_hold(host, int(port), b"") for _ in range(100)],
            *[_hold(host, int(port), partial) for _ in range(100)],
            *[_hold("127.0.0.1", internal_port, b"") for _ in range(20)],
            *[_hold("127.0.0.1", internal_port, partial) for _ in range(20)],
        ]
        head_held = await asyncio.gather(*heads)
        body_held = await asyncio.gather(*[_hold(host, int(port), stalled) for _ in range(100)])

        served = 0
        while time.monotonic() - started < 3:  # the proxy keeps serving meanwhile
            async with session.get(proxy.public + "/x", headers=ALICE_COOKIE) as response:
                assert response.status == 200
                served += 1
            await asyncio.sleep(0.05)
        assert served > 10

        # Head timeout 1 s: nothing sent back, closed (3 s spent above; a little more).
        answers = await asyncio.gather(*[_closed_within(h, 3) for h in head_held])
        assert set(answers) == {b""}
        # Body timeout 1 s: 408, then closed once aiohttp's 10 s of lingering for the
        # unread body end (the client sends nothing more).
        answers = await asyncio.gather(*[_closed_within(h, 15) for h in body_held])
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
        assert time.monotonic() - started < 16
        proxy.process.send_signal(signal.SIGTERM)
        code, _out = await proxy.wait_exit()
    assert code == 0


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def test_fds_return_to_baseline_after_many_websockets(start_proxy, fake_upstream) -> None:
    """1,000 WebSockets opened and closed, 50 at a time: no descriptor leaks. What stays a
    while is the forward-auth pool's idle keep-alive connections (one per concurrent
    sign-in), closed after AUTH_KEEPALIVE_S."""
    from proxy.app import AUTH_KEEPALIVE_S

    proxy = start_proxy()
    pid = proxy.process.pid
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)

        async def cycle() -> None:
            async with session.ws_connect(proxy.public + "/ws", headers=ALICE_COOKIE) as ws:
                await ws.send_str("x")
                assert (await ws.receive(timeout=10)).data == "x"

        await cycle()
        baseline = _open_fds(pid)  # one idle auth connection included
        for _ in range(20):
            await asyncio.gather(*[cycle() for _ in range(50)])
        # Bounded by the concurrency: per WebSocket, at most its client and upstream
        # sockets still closing and one idle auth connection.
        assert _open_fds(pid) - baseline <= 3 * 50
        # aiohttp sweeps idle connections once per keep-alive period: gone by 2 periods.
        for _ in range(int(2 * AUTH_KEEPALIVE_S + 5) * 2):
            if _open_fds(pid) <= baseline + 2:
                break
            await asyncio.sleep(0.5)
        excess = _open_fds(pid) - baseline
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.wait_exit()
    assert excess <= 2, f"{excess} descriptors more than before the WebSockets"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_returns_after_2000_aborted_transfers(start_proxy, fake_upstream) -> None:
    """2,000 transfers aborted mid-body, 100 at a time: resident memory comes back down to
    within a few MiB of where it was (it stayed tens of MiB up before freed heap pages
    were handed back)."""
    from proxy.server import _TRIM_INTERVAL_S

    proxy = start_proxy()
    pid = proxy.process.pid
    host, port = proxy.public.removeprefix("http://").rsplit(":", 1)
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        for _ in range(10):  # warm up: imports, pools, first-use caches
            await _abort_mid_upload(host, int(port))
            await _abort_mid_download(host, int(port))
        await asyncio.sleep(_TRIM_INTERVAL_S + 1)
        baseline = _rss_mib(pid)
        for _ in range(10):
            await asyncio.gather(*[_abort_mid_upload(host, int(port)) for _ in range(100)])
            await asyncio.gather(*[_abort_mid_download(host, int(port)) for _ in range(100)])
        # Aborted transfers finish closing in the background on a loaded machine; give the
        # trimmer a few rounds, and judge the lowest level reached.
        grown = float("inf")
        for _ in range(4):
            await asyncio.sleep(_TRIM_INTERVAL_S + 1)
            grown = min(grown, _rss_mib(pid) - baseline)
            if grown < 40:
                break
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.wait_exit()
    # The fault run that found it: +63 MiB, for good. With the trimmer this run measured
    # anywhere from +1 to +29 MiB across machines' loads (without it, +23 to +38), so the
    # bound only catches memory held at the fault run's level, not a few MiB of drift.
    assert grown < 40, f"RSS {grown:.1f} MiB above the baseline after the aborts"
