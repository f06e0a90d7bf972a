"""The owui-gate image, built from deploy/container/ with podman and run as deployments run it.

No registry is reachable here, so the base image the Containerfile pins
(``python:3.11.14-slim-bookworm``) is a stand-in made by ``ensure_podman`` in scripts/lib.sh:
Debian bookworm (the official image's release) with Debian's Python 3.11, tagged under that
exact name. Everything else is the shipped build: ``podman build --pull=never --format
docker`` of ``deploy/container/Containerfile``, the lock installed from PyPI with its hashes.

Each container runs as compose and Kubernetes run it: read-only root file system, every
capability dropped, no new privileges. The proxy inside talks to a small upstream and
forward-auth service started next to it in the container (``podman exec``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.deploy.podman import Podman

pytestmark = pytest.mark.podman

# An upstream and an auth service on the container's loopback: /oauth2/auth admits the
# cookie "session=ok" as ada@example.edu; /api/config names the release the proxy checks;
# /slow answers at once and then sends the rest of its body over three seconds.
HELPER = """
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/oauth2/auth":
            ok = "session=ok" in self.headers.get("Cookie", "")
            self.send_response(202 if ok else 401)
            if ok:
                self.send_header("X-Auth-Request-Email", "ada@example.edu")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        parts = {"/slow": [b"first;"] + [b"part;"] * 3, "/api/config": [b'{"version": "0.12.4"}']}
        parts = parts.get(self.path, [b"fast"])
        self.send_response(200)
        self.send_header("Content-Length", str(sum(map(len, parts))))
        self.end_headers()
        for i, part in enumerate(parts):
            if i:
                time.sleep(1)
            self.wfile.write(part)
            self.wfile.flush()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
HARDENED = ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges")


@dataclass(frozen=True)
class Running:
    name: str
    address: str  # the container's address on podman's default network


@pytest.fixture
def proxy_container(podman: Podman, owui_gate_image: str) -> Iterator[Running]:
    name = f"owgt-image-{time.monotonic_ns()}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        *HARDENED,
        "--health-interval=disable",  # no systemd timers here: `healthcheck run` on demand
        "--env=OWUI_PROXY_UPSTREAM=http://127.0.0.1:8080",
        "--env=OWUI_PROXY_LISTEN=0.0.0.0:8000",
        "--env=OWUI_PROXY_AUTH=forward",
        "--env=OWUI_PROXY_FORWARD_AUTH_URL=http://127.0.0.1:4180/oauth2/auth",
        owui_gate_image,
    )
    try:
        for port in ("8080", "4180"):
            podman("exec", "--detach", name, "python", "-c", HELPER, port)
        address = podman(
            "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name
        ).stdout.strip()
        assert address, "the container has no address on podman's default network"
        wait_until_serving(address)
        yield Running(name, address)
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def wait_until_serving(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(f"http://{address}:8000/fast", cookies={"session": "ok"}).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the proxy in the container did not serve within {timeout:.0f} s")


def test_the_image_keeps_its_health_check_and_runs_as_uid_10001(
    podman: Podman, owui_gate_image: str
) -> None:
    image = podman.inspect("image", owui_gate_image)
    assert image["Config"]["User"] == "10001:10001"
    # --format docker keeps HEALTHCHECK (the OCI format has no field for it).
    assert "/healthz" in " ".join(image["Healthcheck"]["Test"])


def test_the_image_holds_the_whole_wheel_data_files_included(
    podman: Podman, owui_gate_image: str
) -> None:
    """owui-gate goes in as the wheel built from the sources, the files it installs under
    share/owui-gate (the alerting rules and dashboard, docs/operations.md) included."""
    listed = podman(
        "run",
        "--rm",
        "--health-interval=disable",
        owui_gate_image,
        "find",
        "/opt/owui-gate/share/owui-gate",
        "-type",
        "f",
    ).stdout.split()
    assert "/opt/owui-gate/share/owui-gate/prometheus/owui-gate.rules.yml" in listed
    assert "/opt/owui-gate/share/owui-gate/grafana/owui-gate.json" in listed


def test_the_proxy_runs_as_uid_10001_on_a_read_only_root(
    podman: Podman, proxy_container: Running
) -> None:
    status = podman("exec", proxy_container.name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4, "the proxy (PID 1) runs as uid 10001, not root"
    # Its user owns no file of the image, and the root file system is read-only even to root.
    for user in ("10001", "0"):
        for path in ("/opt/owui-gate/bin/owui-proxy", "/etc/passwd", "/probe"):
            write = podman(
                "exec",
                f"--user={user}",
                proxy_container.name,
                "sh",
                "-c",
                f": >> {path}",
                check=False,
            )
            assert write.returncode != 0, f"{path} is writable by uid {user}"
            if user == "0":
                assert "Read-only file system" in write.stderr, write.stderr
    # Unauthenticated: the auth service said 401, so nothing reached the upstream.
    assert httpx.get(f"http://{proxy_container.address}:8000/fast").status_code == 401


def test_the_health_check_passes_on_a_serving_proxy_and_fails_without_one(
    podman: Podman, proxy_container: Running, owui_gate_image: str
) -> None:
    healthy = podman("healthcheck", "run", proxy_container.name, check=False)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    # The same image and health check, its command replaced by one that serves nothing.
    name = f"owgt-idle-{time.monotonic_ns()}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        *HARDENED,
        "--health-interval=disable",
        owui_gate_image,
        "python",
        "-c",
        "import time; time.sleep(300)",
    )
    try:
        idle = podman("healthcheck", "run", name, check=False, timeout=60)
        assert idle.returncode == 1, idle.stdout + idle.stderr
        assert "unhealthy" in idle.stdout
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def _refused_within(address: tuple[str, int], seconds: float) -> bool:
    """Whether connecting to ``address`` is refused at some point within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1):
                pass
        except ConnectionRefusedError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_drains_an_in_flight_response_and_exits_zero(
    podman: Podman, proxy_container: Running
) -> None:
    url = f"http://{proxy_container.address}:8000/slow"
    with (
        httpx.Client(timeout=30, cookies={"session": "ok"}) as client,
        client.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first.startswith(b"first;")
        signalled = time.monotonic()
        podman("kill", "--signal=TERM", proxy_container.name)
        # The listener closes first: a new connection is refused while the stream drains
        # (polled: on a loaded machine the signal may take a moment to reach the worker).
        assert _refused_within((proxy_container.address, 8000), seconds=2.5)
        rest = b"".join(chunks)
    assert first + rest == b"first;" + b"part;" * 3, "the in-flight response was cut"
    waited = podman("wait", proxy_container.name, timeout=60).stdout.strip()
    assert waited == "0", f"exit status {waited} after SIGTERM"
    # It left once the response was done, well inside the 30 s grace.
    assert time.monotonic() - signalled < 15
    logs = podman("logs", proxy_container.name).stderr + podman("logs", proxy_container.name).stdout
    assert "Traceback" not in logs, logs[-3000:]
