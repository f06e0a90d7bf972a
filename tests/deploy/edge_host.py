"""The edge host as deployed, inside a test topology: the auth stand-in, owui-proxy and
nginx in the ``edge`` namespace, shared by the isolation tests (stand-in and real app)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.deploy.conftest import TestTLS, refuse
from tests.deploy.edge import REPO, Nginx, Proxy, wait_tcp
from tests.deploy.netns import EDGE_INTERNAL_SIDE, EDGE_PUBLIC, NetnsUnavailable, Topology

PY = sys.executable
AUTH_PORT, PUBLIC_PORT, INTERNAL_PORT = 4180, 8000, 8001
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}


def new_topology() -> Topology:
    """The test hosts, created; a machine that cannot create them refuses the test (a
    failure under CI=true)."""
    topo = Topology()
    try:
        topo.create()
    except NetnsUnavailable as exc:
        refuse(str(exc))
    return topo


def write_service_token(base: Path) -> tuple[str, Path]:
    """A fresh internal-listener token and its file (mode 600, as the proxy requires)."""
    token = secrets.token_urlsafe(36)
    path = base / "internal-tokens"
    path.write_text(f"# provisioner\n{token}\n", encoding="utf-8")
    path.chmod(0o600)
    return token, path


@contextmanager
def running_edge(
    topo: Topology, base: Path, tls: TestTLS, *, upstream: str, tokens: Path, admin_listen: str
) -> Iterator[None]:
    """Auth stand-in (knows ``alice-session``), proxy and nginx on ``edge``; stopped on exit,
    whatever of them had started."""
    proxy: Proxy | None = None
    nginx: Nginx | None = None
    try:
        topo.start(
            "edge",
            [PY, "-m", "tests.deploy.standin", "auth",
             "--listen", f"127.0.0.1:{AUTH_PORT}", "--record", str(base / "auth.jsonl"),
             "--user", "alice-session=alice@example.edu,Alice,students"],
            base / "auth.log",
            CHILD_ENV,
        )  # fmt: skip
        wait_tcp("127.0.0.1", AUTH_PORT, netns=topo.ns("edge"))
        proxy = Proxy(
            {
                "OWUI_PROXY_UPSTREAM": upstream,
                "OWUI_PROXY_LISTEN": f"127.0.0.1:{PUBLIC_PORT}",
                "OWUI_PROXY_ADMIN_LISTEN": admin_listen,
                "OWUI_PROXY_INTERNAL_LISTEN": f"{EDGE_INTERNAL_SIDE}:{INTERNAL_PORT}",
                "OWUI_PROXY_INTERNAL_TOKENS_FILE": str(tokens),
                "OWUI_PROXY_AUTH": "forward",
                "OWUI_PROXY_FORWARD_AUTH_URL": f"http://127.0.0.1:{AUTH_PORT}/oauth2/auth",
                "OWUI_PROXY_TRUSTED_PROXIES": "127.0.0.1/32",
            },
            base / "proxy.log",
            netns=topo.ns("edge"),
        )
        proxy.start(("127.0.0.1", PUBLIC_PORT))
        # The production values of the placeholders: all addresses, standard ports.
        nginx = Nginx(
            base / "nginx", "443", "80", f"127.0.0.1:{PUBLIC_PORT}", tls.cert, tls.key,
            netns=topo.ns("edge"),
        )  # fmt: skip
        nginx.start((EDGE_PUBLIC, 443))
        yield
    finally:
        if nginx is not None:
            nginx.stop()
        if proxy is not None:
            proxy.stop()
