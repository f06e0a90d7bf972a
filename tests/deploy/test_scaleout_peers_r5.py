"""deploy/nginx/owui-gate-scaleout.conf answers the proxy only, wherever it is told to listen.

That hop carries the identity header the proxy injected: whoever reaches it is whoever they
say in X-User-Email, admin included (its own header says so). Its one protection was the
listen address the operator fills in. A port alone (``8079``, the way the edge file's
``OWUI_GATE_HTTPS_LISTEN`` is written: ``443``) or ``0.0.0.0:8079`` makes nginx listen on
every address, and any host on any link then reaches every OpenWebUI process as anyone.

Real network namespaces (tests/deploy/netns.py): nginx with the shipped file and a recording
stand-in for OpenWebUI run on ``edge``; ``client`` is another host on edge's public link.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.edge import REPO, nginx_binary
from tests.deploy.netns import EDGE_PUBLIC, NetnsUnavailable, Topology

pytestmark = pytest.mark.netns

SCALEOUT = REPO / "deploy" / "nginx" / "owui-gate-scaleout.conf"
PORT, OWUI = 8079, 8080
# A stand-in for an OpenWebUI process: answers 200 with the email header it was sent.
STAND_IN = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("X-User-Email") or "-").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", %d), H).serve_forever()
"""
# One plain HTTP/1.1 GET as an attacker sends it; prints the status and the body.
GET = """
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=5)
except OSError as exc:
    print(json.dumps({"status": 0, "body": str(exc)})); sys.exit()
s.sendall(b"GET /api/v1/auths/ HTTP/1.1\\r\\nHost: x\\r\\nX-User-Email: admin@example.edu\\r\\n"
          b"Connection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\\r\\n\\r\\n")
print(json.dumps({"status": int(head.split()[1]), "body": body.decode("latin-1")}))
"""


def render(listen: str) -> str:
    text = SCALEOUT.read_text(encoding="utf-8")
    values = {
        "OWUI_GATE_SCALEOUT_LISTEN": listen,
        "OWUI_GATE_OPENWEBUI_A": f"127.0.0.1:{OWUI}",
        "OWUI_GATE_OPENWEBUI_B": f"127.0.0.1:{OWUI}",
    }
    return re.sub(r"\$\{(OWUI_GATE_[A-Z_]+)\}", lambda m: values[m.group(1)], text)


@pytest.fixture
def topo() -> Iterator[Topology]:
    if nginx_binary() is None or shutil.which("ip") is None:
        pytest.skip("needs nginx and iproute2 (scripts/test installs them)")
    found = Topology()
    try:
        found.create()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield found
    finally:
        found.destroy()


def get(topo: Topology, role: str, host: str) -> dict[str, object]:
    out = topo.run(role, ["python3", "-c", GET, host, str(PORT)]).stdout
    result: dict[str, object] = json.loads(out)
    return result


def start_scaleout(topo: Topology, tmp_path: Path, listen: str) -> None:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    site = tmp_path / "scaleout.conf"
    site.write_text(render(listen), encoding="utf-8")
    p = tmp_path
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log notice;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    include {site};
}}
""",
        encoding="utf-8",
    )
    binary = nginx_binary() or "nginx"
    topo.start("edge", ["python3", "-c", STAND_IN % OWUI], tmp_path / "owui.log")
    topo.start("edge", [binary, "-p", str(p), "-c", str(conf)], tmp_path / "nginx.out")
    deadline = time.monotonic() + 20
    while get(topo, "edge", "127.0.0.1")["status"] in (0, 502):  # nginx, then the stand-in
        assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
        time.sleep(0.2)


@pytest.mark.parametrize("listen", [str(PORT), f"0.0.0.0:{PORT}"], ids=["port-only", "any"])
def test_a_wide_scaleout_listener_still_answers_only_the_proxy(
    topo: Topology, tmp_path: Path, listen: str
) -> None:
    start_scaleout(topo, tmp_path, listen)
    # The proxy, on this host: relayed, with the identity it injected.
    own = get(topo, "edge", "127.0.0.1")
    assert own == {"status": 200, "body": "admin@example.edu"}
    # Another host on a link this one is on: never relayed, whatever it claims to be.
    other = get(topo, "client", EDGE_PUBLIC)
    assert other["status"] in (0, 403), other
    assert "admin@example.edu" not in str(other["body"]), other
