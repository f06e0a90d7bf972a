"""Several workers as one proxy: the real console script with ``OWUI_PROXY_WORKERS``.

A refused OpenWebUI release that any worker finds stops every worker's relaying, and a
multi-worker metrics folder left behind by a parent killed with SIGKILL is removed by the
next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes import FakeUpstream
from tests.proxy.conftest import ALICE_COOKIE
from tests.proxy.test_process import ProxyProcess, _children, _env, _gone
from tests.proxy.test_relay import _closed_port

WORKERS = "3"


@pytest.fixture
def start_workers(upstream_server: TestServer, auth_server: TestServer) -> Iterator[Any]:
    """Start ``owui-proxy`` with several workers and its temporary folder in ``tmp``."""
    started: list[ProxyProcess] = []

    def start(tmp: Path) -> ProxyProcess:
        public, admin = _closed_port(), _closed_port()
        env = _env(
            upstream=str(upstream_server.make_url("/")),
            auth="forward",
            forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
            listen=f"127.0.0.1:{public}",
            admin_listen=f"127.0.0.1:{admin}",
            workers=WORKERS,
        )
        env["TMPDIR"] = str(tmp)
        proc = ProxyProcess(env, public, admin)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


async def status_over_new_connections(url: str, count: int) -> list[int]:
    """Each request on a connection of its own: the kernel spreads them over the workers."""
    statuses = []
    for _ in range(count):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(url + "/x", headers=ALICE_COOKIE) as response,
        ):
            statuses.append(response.status)
    return statuses


async def test_a_refused_release_found_by_one_worker_stops_them_all(
    start_workers: Any, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy: ProxyProcess = start_workers(tmp_path)
    async with aiohttp.ClientSession() as session:
        await proxy.wait_ready(session)
        assert await status_over_new_connections(proxy.public, 30) == [200] * 30
        fake_upstream.version = "0.6.13"  # swapped for a release without the mismatch check
        # Worker 0's readiness check finds it (every few seconds); the others' own re-read is
        # a minute away, so only the shared signal can stop them this soon.
        for _ in range(200):
            async with session.get(proxy.admin + "/readyz") as ready:
                if ready.status == 503:
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/readyz never noticed the refused release")
        statuses = await status_over_new_connections(proxy.public, 60)
        assert statuses == [503] * 60, statuses
        proxy.process.send_signal(signal.SIGTERM)
        code, out = await proxy.wait_exit()
    assert code == 0, out
    assert out.count('"openwebui_release_refused_elsewhere"') >= 1


def metrics_folders(tmp: Path) -> set[Path]:
    return set(tmp.glob("owui-proxy-metrics-*"))


async def test_a_killed_parents_metrics_folder_is_removed_at_the_next_start(
    start_workers: Any, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # A folder whose name says no owner (made by an older release) is not ours to judge.
    foreign = Path(tempfile.mkdtemp(prefix="owui-proxy-metrics-", dir=tmp))
    async with aiohttp.ClientSession() as session:
        first: ProxyProcess = start_workers(tmp)
        await first.wait_ready(session)
        left = metrics_folders(tmp) - {foreign}
        assert len(left) == 1
        workers = _children(first.process.pid)
        first.process.kill()  # SIGKILL: its clean-up never runs
        first.process.wait()
        try:
            for _ in range(100):
                if all(_gone(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
        finally:
            for pid in workers:
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)
        assert metrics_folders(tmp) >= left  # left behind, 512 KiB a start before this

        second: ProxyProcess = start_workers(tmp)
        await second.wait_ready(session)
        live = metrics_folders(tmp) - {foreign}
        assert len(live) == 1
        assert not live & left  # the dead parent's folder is gone, the live one is its own
        third: ProxyProcess = start_workers(tmp)
        await third.wait_ready(session)
        assert live < metrics_folders(tmp)  # a live proxy's folder is never taken
        for proxy in (second, third):
            proxy.process.send_signal(signal.SIGTERM)
            code, out = await proxy.wait_exit()
            assert code == 0, out
    assert metrics_folders(tmp) == {foreign}
