"""deploy/compose/compose.yaml: what runs in the proxy's network namespace cannot read its loopback.

OpenWebUI runs in the proxy's network namespace (``network_mode: "service:owui-proxy"``). The
secrets of the deployment cross that namespace's loopback in clear text: the webhook
receiver's service token to the internal listener (``Authorization: Bearer``, good for acting
as anyone), the signed first-sign-in events, every identity header the proxy injects. The
docs say OpenWebUI "holds no service token". But the image runs as root, and a container
keeps podman's and Docker's default capabilities unless the file drops them: with
CAP_NET_RAW, a packet socket on ``lo`` reads every one of those bytes. An OpenWebUI admin runs
Python on the server (Functions, Tools), so that is one step from the service token.

Reproduced with real podman: one container holds the namespace and sends a bearer token over
its loopback; a second joins it (``--network container:``) with exactly the privileges the
shipped file gives the service (cap_drop, cap_add, security_opt, user, read_only,
privileged, as podman-compose passes them) and listens on ``lo``.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import yaml

from tests.deploy.edge import REPO
from tests.deploy.podman import Podman, base_image

pytestmark = pytest.mark.podman

COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
# Sends the token over the namespace's loopback, as the receiver does to the internal
# listener, until stopped.
SENDER = """
import socket, threading, time, sys
token = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8001)); srv.listen(16)
def serve():
    while True:
        conn, _ = srv.accept(); conn.recv(65536); conn.close()
threading.Thread(target=serve, daemon=True).start()
while True:
    try:
        with socket.create_connection(("127.0.0.1", 8001), timeout=2) as c:
            c.sendall(("POST /api/v1/chats/new HTTP/1.1\\r\\nHost: x\\r\\n"
                       "Authorization: Bearer " + token + "\\r\\n\\r\\n").encode())
    except OSError:
        pass
    time.sleep(0.1)
"""
# Listens on lo for a few seconds; prints what it could do.
SNIFFER = """
import socket, sys, time
token = sys.argv[1].encode()
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("lo", 0))
except OSError as exc:
    print("refused", type(exc).__name__); sys.exit()
s.settimeout(1)
deadline = time.monotonic() + 8
while time.monotonic() < deadline:
    try:
        if token in s.recv(65536):
            print("SEEN"); sys.exit()
    except TimeoutError:
        pass
print("opened, not seen")
"""


def run_options(service: dict[str, Any]) -> list[str]:
    """The privilege options podman-compose passes for a service."""
    options: list[str] = []
    for cap in service.get("cap_drop", []):
        options.append(f"--cap-drop={cap}")
    for cap in service.get("cap_add", []):
        options.append(f"--cap-add={cap}")
    for opt in service.get("security_opt", []):
        options.append(f"--security-opt={opt}")
    if "user" in service:
        options.append(f"--user={service['user']}")
    if service.get("read_only"):
        options.append("--read-only")
    if service.get("privileged"):
        options.append("--privileged")
    return options


def namespace_guests() -> dict[str, dict[str, Any]]:
    """The services that run in the proxy's network namespace."""
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))[
        "services"
    ]
    return {
        name: body
        for name, body in services.items()
        if body.get("network_mode") == "service:owui-proxy"
    }


def test_openwebui_is_a_guest_of_the_proxys_namespace() -> None:
    assert "open-webui" in namespace_guests()


@pytest.mark.parametrize("guest", sorted(namespace_guests()))
def test_a_guest_of_the_proxys_namespace_cannot_read_its_loopback(
    podman: Podman, guest: str
) -> None:
    token = secrets.token_urlsafe(36)
    holder = f"owgt-caps-{secrets.token_hex(4)}"
    podman(
        "run", "-d", "--rm", "--name", holder, "--network", "none", base_image(),
        "python3", "-c", SENDER, token,
    )  # fmt: skip
    try:
        result = podman(
            "run", "--rm", f"--network=container:{holder}",
            *run_options(namespace_guests()[guest]),
            base_image(), "python3", "-c", SNIFFER, token,
            timeout=60,
        )  # fmt: skip
    finally:
        podman("rm", "-f", "-t", "0", holder, check=False)
    assert result.stdout.startswith("refused"), (guest, result.stdout, result.stderr)
