"""Network isolation on real namespaces: OpenWebUI is reachable through the edge and nothing else.

The deployment of docs/deployment.md, on four test hosts (see tests/deploy/netns.py):
``edge`` runs nginx (the shipped config, ports 443 and 80 on all addresses), the proxy
(public listener on loopback behind nginx, internal and admin listeners on the internal
link), and a forward-auth stand-in on loopback; ``app`` runs the OpenWebUI stand-in (the
recording fake upstream), bound to its address on the link only ``edge`` is on; ``internal``
is where the provisioner runs; ``client`` is anyone on the internet.

Reachability is checked as an attacker would: besides the routes a normal client has, with
a default route through ``edge``, so that "unreachable" never just means "the client did not
know the way".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import TestTLS, make_tls, refuse
from tests.deploy.edge import (
    SERVER_NAME,
    nginx_binary,
    proxy_available,
    wait_tcp,
)
from tests.deploy.edge_host import (
    AUTH_PORT,
    CHILD_ENV,
    INTERNAL_PORT,
    PUBLIC_PORT,
    new_topology,
    running_edge,
    write_service_token,
)
from tests.deploy.netns import (
    APP,
    EDGE_APP_SIDE,
    EDGE_INTERNAL_SIDE,
    EDGE_PUBLIC,
    INTERNAL,
    Topology,
)
from tests.deploy.spoof import IDENTITY, SPOOF_MARKERS, spoof_request
from tests.deploy.standin import header_values, read_records

pytestmark = [pytest.mark.netns, pytest.mark.nginx]

PY = sys.executable
APP_PORT, ADMIN_PORT = 8080, 9000
PUBLIC_OPEN = {f"{EDGE_PUBLIC}:443", f"{EDGE_PUBLIC}:80"}
ALICE_COOKIE = "_oauth2_proxy=alice-session"


@dataclass
class Site:
    topo: Topology
    tls: TestTLS
    token: str
    app_records: Path
    base: Path

    def probe(self, role: str, targets: list[str]) -> dict[str, str]:
        out = self.topo.run(role, [PY, "-m", "tests.deploy.netprobe", "tcp", *targets]).stdout
        result: dict[str, str] = json.loads(out)
        return result

    def raw(self, role: str, host: str, port: int, lines: list[str]) -> dict[str, object]:
        argv = [PY, "-m", "tests.deploy.netprobe", "raw", host, str(port), str(self.tls.ca_pem)]
        result: dict[str, object] = json.loads(
            self.topo.run(role, argv, stdin=json.dumps(lines)).stdout
        )
        return result

    def curl(self, role: str, *args: str) -> tuple[int, str]:
        """(HTTP status, body) of a curl run in ``role``; status 0 when nothing answered."""
        result = self.topo.run(
            role, ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args]
        )
        body, _, status = result.stdout.rpartition("\n")
        return int(status), body


def _every_target() -> list[str]:
    """Every listener of the deployment, at every address of edge, plus app and internal."""
    ports = (22, 80, 443, AUTH_PORT, PUBLIC_PORT, INTERNAL_PORT, ADMIN_PORT, APP_PORT)
    edge = [f"{a}:{p}" for a in (EDGE_PUBLIC, EDGE_APP_SIDE, EDGE_INTERNAL_SIDE) for p in ports]
    return [*edge, f"{APP}:{APP_PORT}", f"{APP}:22", f"{INTERNAL}:22"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if nginx_binary() is None:
        refuse("nginx is not installed")
    if not proxy_available():
        refuse("the proxy (python -m proxy) is not in this tree")
    base = tmp_path_factory.mktemp("netns")
    topo = new_topology()
    try:
        tls = make_tls(base / "tls")
        token, tokens = write_service_token(base)
        app_records = base / "app.jsonl"
        topo.start(
            "app",
            [PY, "-m", "tests.deploy.standin", "upstream",
             "--listen", f"{APP}:{APP_PORT}", "--record", str(app_records)],
            base / "app.log",
            CHILD_ENV,
        )  # fmt: skip
        wait_tcp(APP, APP_PORT, netns=topo.ns("edge"))
        with running_edge(
            topo,
            base,
            tls,
            upstream=f"http://{APP}:{APP_PORT}",
            tokens=tokens,
            admin_listen=f"{EDGE_INTERNAL_SIDE}:{ADMIN_PORT}",
        ):
            yield Site(topo, tls, token, app_records, base)
    finally:
        topo.destroy()


@pytest.fixture(params=["normal-routes", "default-route-via-edge"])
def attacker_routes(request: pytest.FixtureRequest, site: Site) -> Iterator[str]:
    """Client and internal with only their link's route, or with a default route via edge."""
    if request.param == "default-route-via-edge":
        site.topo.set_default_route("client", EDGE_PUBLIC)
        site.topo.set_default_route("internal", EDGE_INTERNAL_SIDE)
    try:
        yield request.param
    finally:
        site.topo.set_default_route("client", None)
        site.topo.set_default_route("internal", None)


def test_namespaces_are_private_and_unique(site: Site) -> None:
    """The test hosts exist under this run's unique names and have no default route."""
    for role in ("client", "edge", "app", "internal"):
        routes = site.topo.run(role, ["ip", "route"]).stdout
        assert "default" not in routes, (role, routes)
        assert site.topo.ns(role).startswith(f"owgt-{os.getpid()}-")


def test_from_client_only_the_public_ports_answer(site: Site, attacker_routes: str) -> None:
    """From client, of every listener at every address, only nginx's 443 and 80 answer."""
    outcomes = site.probe("client", _every_target())
    opened = {target for target, outcome in outcomes.items() if outcome == "open"}
    assert opened == PUBLIC_OPEN, outcomes
    status, _ = site.curl(
        "client", "--cacert", str(site.tls.ca_pem),
        "--resolve", f"{SERVER_NAME}:443:{EDGE_PUBLIC}", f"https://{SERVER_NAME}/health",
    )  # fmt: skip
    assert status == 401  # nginx -> proxy answered; no session, so no entry


def test_app_internal_and_admin_listeners_unreachable_from_client(
    site: Site, attacker_routes: str
) -> None:
    """OpenWebUI, the internal (act-as) listener and the admin listener never answer client."""
    targets = [
        f"{APP}:{APP_PORT}",
        f"{EDGE_INTERNAL_SIDE}:{INTERNAL_PORT}",
        f"{EDGE_INTERNAL_SIDE}:{ADMIN_PORT}",
        # ... nor through the public address.
        f"{EDGE_PUBLIC}:{INTERNAL_PORT}",
        f"{EDGE_PUBLIC}:{ADMIN_PORT}",
        f"{EDGE_PUBLIC}:{APP_PORT}",
    ]
    outcomes = site.probe("client", targets)
    assert set(outcomes.values()) <= {"refused", "unreachable", "timeout"}, outcomes


def test_internal_reaches_the_internal_listener(site: Site) -> None:
    """From internal, the act-as listener answers with a token and refuses (407) without one."""
    before = len(read_records(site.app_records))
    url = f"http://{EDGE_INTERNAL_SIDE}:{INTERNAL_PORT}/api/v1/auths/signin"
    common = [
        "-X", "POST", "-H", "Content-Type: application/json",
        "-d", '{"email":"","password":""}', "-H", "X-User-Email: Bob@Example.edu",
    ]  # fmt: skip
    status, _ = site.curl("internal", *common, url)
    assert status == 407
    assert len(read_records(site.app_records)) == before  # OpenWebUI saw nothing
    status, body = site.curl(
        "internal", *common, "-H", f"Proxy-Authorization: Bearer {site.token}", url
    )
    assert status == 200, body
    assert json.loads(body)["email"] == "bob@example.edu"
    record = read_records(site.app_records)[-1]
    assert header_values(record, "X-User-Email") == ["bob@example.edu"]
    assert header_values(record, "Proxy-Authorization") == []
    # The ops network also carries the admin listener (Prometheus scrapes it from there).
    status, body = site.curl("internal", f"http://{EDGE_INTERNAL_SIDE}:{ADMIN_PORT}/healthz")
    assert status == 200, body


def test_app_accepts_connections_from_edge_only(site: Site, attacker_routes: str) -> None:
    """OpenWebUI's port answers edge, and neither client nor internal, however they route."""
    target = f"{APP}:{APP_PORT}"
    assert site.probe("edge", [target]) == {target: "open"}
    assert site.probe("client", [target])[target] != "open"
    assert site.probe("internal", [target])[target] != "open"
    # How: app listens only on its address on the link to edge (and edge does not forward).
    listening = site.topo.run("app", ["ss", "-Hltn"]).stdout.split()
    assert f"{APP}:{APP_PORT}" in listening
    assert f"0.0.0.0:{APP_PORT}" not in listening


def test_spoofed_identity_from_client_never_reaches_app(site: Site) -> None:
    """The spoof corpus from client reaches app only as the verified identity, or not at all."""
    before = len(read_records(site.app_records))
    anonymous = site.raw("client", EDGE_PUBLIC, 443, spoof_request("/api/v1/chats/"))
    assert anonymous["status"] == 401
    assert len(read_records(site.app_records)) == before

    answer = site.raw(
        "client", EDGE_PUBLIC, 443, spoof_request("/api/v1/chats/", (("Cookie", ALICE_COOKIE),))
    )
    assert answer["status"] == 200, answer
    records = read_records(site.app_records)[before:]
    assert len(records) == 1
    record = records[0]
    assert header_values(record, "X-User-Email") == ["alice@example.edu"]
    names = [k.lower().replace("_", "-") for k, _ in record["headers"]]
    assert names.count("x-user-email") == 1
    assert "x-user-role" not in names
    assert "proxy-authorization" not in names
    assert set(names) & set(IDENTITY) == {"x-user-email", "x-user-name", "x-user-groups"}
    assert not [h for h in record["headers"] if any(m in h[1] for m in SPOOF_MARKERS)], record
    # The client address survives as nginx saw it, because nginx is a trusted proxy.
    assert header_values(record, "X-Forwarded-For") == ["198.18.1.2, 127.0.0.1"]


def test_without_the_edge_filter_the_internal_listener_is_exposed(site: Site) -> None:
    """Why docs/deployment.md asks for a firewall on edge's public interface.

    Linux delivers a packet for any local address whichever interface it arrives on (weak
    host model). Without the filter, a client that routes 198.18.3.1 via edge reaches the
    internal listener, although it is bound to the internal link's address.
    """
    target = f"{EDGE_INTERNAL_SIDE}:{INTERNAL_PORT}"
    site.topo.set_default_route("client", EDGE_PUBLIC)
    site.topo.unguard_edge()
    try:
        assert site.probe("client", [target]) == {target: "open"}
    finally:
        site.topo.guard_edge()
        site.topo.set_default_route("client", None)
    site.topo.set_default_route("client", EDGE_PUBLIC)
    try:
        assert site.probe("client", [target])[target] != "open"
    finally:
        site.topo.set_default_route("client", None)
