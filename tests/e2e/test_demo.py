"""The README's first command: the demo starts, works end to end, and Ctrl-C stops all of it."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from demo.stack import Stack
from tests.e2e.conftest import ARTIFACTS, REPO

pytestmark = pytest.mark.e2e


def test_scripts_demo_check_starts_everything_and_a_new_user_gets_the_threads(
    stack: Stack,  # the session's OpenWebUI: makes sure the install exists before timing this
) -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "demo"), "--check", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo stack OK" in result.stdout


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_demo_prints_its_url_and_ctrl_c_stops_every_process(stack: Stack) -> None:
    state = ARTIFACTS / "demo-run"
    shutil.rmtree(state, ignore_errors=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.stack", "--port", "0", "--state-dir", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while not any("Ctrl-C stops everything" in line for line in seen):
            assert process.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        output = "".join(seen)
        url = re.search(r"Open (http://127\.0\.0\.1:\d+)", output)
        assert url is not None, output
        for what in ("proxy", "demo IdP", "provisioner webhook", "model server", "OpenWebUI"):
            assert what in output
        ports = {int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", output)}
        assert len(ports) >= 7, output  # public, admin, internal, IdP, webhook, model, OpenWebUI
        assert all(_port_open("127.0.0.1", port) for port in ports)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        code = process.wait(timeout=90)
    # Its last lines ("stopped") are read by the pump thread: wait for it to reach the end
    # of the output, not for a second of its time (a loaded machine may not run it by then).
    pumping.join(timeout=30)
    while not lines.empty():
        seen.append(lines.get_nowait())
    assert code == 0, "".join(seen)
    assert "stopped" in "".join(seen)
    still_open = [port for port in ports if _port_open("127.0.0.1", port)]
    assert still_open == [], f"ports still served after Ctrl-C: {still_open}"
