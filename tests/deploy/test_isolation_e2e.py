"""The isolation topology with the REAL OpenWebUI 0.12.4 in ``app`` (e2e tier).

Same four hosts as test_isolation.py, but ``app`` runs OpenWebUI itself (installed by
``demo.openwebui`` into the cache folder), bound to its address on the link to ``edge``, with
``FORWARDED_ALLOW_IPS`` set to the proxy's address on that link. OpenWebUI is configured to
honour a role and a groups header, so that one leaking through would be an observable
escalation rather than a silently ignored header.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demo import openwebui
from tests.deploy.conftest import TestTLS, make_tls, refuse
from tests.deploy.edge import nginx_binary, proxy_available
from tests.deploy.edge_host import new_topology, running_edge, write_service_token
from tests.deploy.netns import (
    APP,
    EDGE_APP_SIDE,
    EDGE_PUBLIC,
    Topology,
)
from tests.deploy.spoof import spoof_request

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.nginx]

PY = sys.executable
OWUI_PORT = 8080
OPERATOR = "operator@example.edu"
SIGNIN_BODY = b'{"email": "", "password": ""}'


@dataclass
class RealSite:
    topo: Topology
    tls: TestTLS
    token: str
    operator_token: str

    def curl(self, role: str, *args: str) -> tuple[int, str]:
        result = self.topo.run(
            role, ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args]
        )
        body, _, status = result.stdout.rpartition("\n")
        return int(status), body

    def users(self) -> dict[str, str]:
        """email -> role of every OpenWebUI account, asked as the operator (from edge)."""
        status, body = self.curl(
            "edge", "-H", f"Authorization: Bearer {self.operator_token}",
            f"http://{APP}:{OWUI_PORT}/api/v1/users/all",
        )  # fmt: skip
        assert status == 200, body
        listing: Any = json.loads(body)
        users = listing["users"] if isinstance(listing, dict) else listing
        return {u["email"]: u["role"] for u in users}


def _start_openwebui(topo: Topology, base: Path) -> None:
    command = openwebui.ensure_installed()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OWUI_", "VIRTUAL_ENV"))}
    env |= openwebui.offline_environment(
        data_dir=base / "owui-data",
        port=OWUI_PORT,
        openai_base_url=None,
        secret_key=secrets.token_urlsafe(32),
    )
    env |= {
        # Only the proxy (edge's address on this link) may set X-Forwarded-*.
        "FORWARDED_ALLOW_IPS": EDGE_APP_SIDE,
        "WEBUI_AUTH_TRUSTED_GROUPS_HEADER": "X-User-Groups",
        "WEBUI_AUTH_TRUSTED_ROLE_HEADER": "X-User-Role",
    }
    (base / "owui-data").mkdir()
    topo.start(
        "app",
        [str(command), "serve", "--host", APP, "--port", str(OWUI_PORT)],
        base / "openwebui.log",
        env,
    )
    deadline = time.monotonic() + 300
    probe = ["curl", "-s", "--max-time", "5", f"http://{APP}:{OWUI_PORT}/health"]
    while time.monotonic() < deadline:
        if (
            topo.run("edge", probe, timeout=30, check=False)
            .stdout.strip()
            .startswith('{"status":true')
        ):
            return
        if topo.processes[-1].poll() is not None:
            break
        time.sleep(1)
    log = (base / "openwebui.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"OpenWebUI did not become healthy in the app namespace:\n{log}")


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSite]:
    if nginx_binary() is None or not proxy_available():
        refuse("nginx or the proxy is missing")
    base = tmp_path_factory.mktemp("netns-e2e")
    topo = new_topology()
    try:
        tls = make_tls(base / "tls")
        token, tokens = write_service_token(base)
        _start_openwebui(topo, base)
        with running_edge(
            topo,
            base,
            tls,
            upstream=f"http://{APP}:{OWUI_PORT}",
            tokens=tokens,
            admin_listen="127.0.0.1:9000",
        ):
            # The operator signs in first and so becomes admin: directly at OpenWebUI from edge,
            # as an operator bootstraps a fresh install (the internal listener refuses to sign
            # anyone in while OpenWebUI has no user: its first account becomes admin).
            site = RealSite(topo, tls, token, "")
            status, body = site.curl(
                "edge", "-X", "POST", "-H", "Content-Type: application/json",
                "-H", f"X-User-Email: {OPERATOR}", "-d", SIGNIN_BODY.decode(),
                f"http://{APP}:{OWUI_PORT}/api/v1/auths/signin",
            )  # fmt: skip
            assert status == 200, body
            operator = json.loads(body)
            assert operator["role"] == "admin"
            site.operator_token = operator["token"]
            yield site
    finally:
        topo.destroy()


def test_real_openwebui_unreachable_from_client(real_site: RealSite) -> None:
    """Even routing through edge, client cannot open a connection to OpenWebUI."""
    real_site.topo.set_default_route("client", EDGE_PUBLIC)
    try:
        out = real_site.topo.run(
            "client", [PY, "-m", "tests.deploy.netprobe", "tcp", f"{APP}:{OWUI_PORT}"]
        ).stdout
    finally:
        real_site.topo.set_default_route("client", None)
    assert json.loads(out)[f"{APP}:{OWUI_PORT}"] != "open"


def test_spoofed_identity_never_becomes_an_openwebui_account(real_site: RealSite) -> None:
    """The spoof corpus from client signs in as the verified user, as 'user'; nothing else."""
    signin = "/api/v1/auths/signin"
    body_headers = (("Content-Type", "application/json"), ("Content-Length", str(len(SIGNIN_BODY))))
    anonymous = real_site.topo.run(
        "client",
        [PY, "-m", "tests.deploy.netprobe", "raw", EDGE_PUBLIC, "443", str(real_site.tls.ca_pem)],
        stdin=json.dumps(spoof_request(signin, body_headers, method="POST")),
    )
    assert json.loads(anonymous.stdout)["status"] == 401
    assert real_site.users() == {OPERATOR: "admin"}

    lines = spoof_request(
        signin, (*body_headers, ("Cookie", "_oauth2_proxy=alice-session")), method="POST"
    )
    answer = real_site.topo.run(
        "client",
        [PY, "-m", "tests.deploy.netprobe", "raw", EDGE_PUBLIC, "443", str(real_site.tls.ca_pem),
         SIGNIN_BODY.decode()],
        stdin=json.dumps(lines),
    )  # fmt: skip
    result = json.loads(answer.stdout)
    assert result["status"] == 200, result
    user = json.loads(result["body"])
    assert user["email"] == "alice@example.edu"
    assert user["role"] == "user"
    assert real_site.users() == {OPERATOR: "admin", "alice@example.edu": "user"}
