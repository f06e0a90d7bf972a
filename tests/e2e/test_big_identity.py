"""A person in 2,000 groups signs in through the proxy to the real OpenWebUI (issue 24).

The groups header such a person brings is about 14 KB: the proxy's forward-auth client
refused it (aiohttp's 8,190-byte header limit, every request a 503). Here the proxy runs as
its own process in front of the real OpenWebUI, asking a small auth service that answers
with that identity (a stand-in: what is tested is the proxy and OpenWebUI taking the
header), and OpenWebUI makes the person a member of the one group of theirs it knows.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from demo.stack import Stack
from tests.deploy.edge import Proxy, free_port
from tests.e2e.conftest import ARTIFACTS, fresh_email, operator_headers, owui_url

pytestmark = pytest.mark.e2e

EMAIL = fresh_email("crowd")
GROUP = f"crowd-course-{secrets.token_hex(3)}"
GROUPS = [f"school-group-{i:04d}" for i in range(1999)] + [GROUP]


class _AuthService(BaseHTTPRequestHandler):
    """Answers every forward-auth call with the crowd's identity (readiness probes too)."""

    def do_GET(self) -> None:
        self.send_response(202)
        self.send_header("X-Auth-Request-Email", EMAIL)
        self.send_header("X-Auth-Request-Groups", ",".join(GROUPS))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what arrived in OpenWebUI, not this log."""


@pytest.fixture(scope="module")
def crowd_proxy(stack: Stack) -> Iterator[str]:
    httpx.post(
        f"{owui_url(stack)}/api/v1/groups/create",
        headers=operator_headers(stack),
        json={"name": GROUP, "description": "one of 2,000 groups", "permissions": {}},
        timeout=30,
    ).raise_for_status()
    auth = ThreadingHTTPServer(("127.0.0.1", 0), _AuthService)
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    proxy = Proxy(
        {
            "OWUI_PROXY_UPSTREAM": owui_url(stack),
            "OWUI_PROXY_LISTEN": f"127.0.0.1:{port}",
            "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"http://127.0.0.1:{auth.server_port}/oauth2/auth",
            "OWUI_PROXY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        },
        ARTIFACTS / "big-identity-proxy.log",
    )
    try:
        proxy.start(("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"
    finally:
        proxy.stop()
        auth.shutdown()
        auth.server_close()


def test_a_person_in_2000_groups_signs_in_and_joins_their_group(crowd_proxy: str) -> None:
    assert len(",".join(GROUPS)) > 14_000
    with httpx.Client(base_url=crowd_proxy, timeout=60) as client:
        signin = client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
        assert signin.status_code == 200, (signin.status_code, signin.text[:300])
        assert signin.json()["email"] == EMAIL
        token = signin.json()["token"]
        groups = client.get("/api/v1/groups/", headers={"Authorization": f"Bearer {token}"})
        assert groups.status_code == 200, groups.text[:300]
        assert [g["name"] for g in groups.json()] == [GROUP]
