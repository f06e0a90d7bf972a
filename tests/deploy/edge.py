"""Start the shipped edge for tests: Debian's nginx with deploy/nginx/owui-gate.conf, and the proxy.

Both run as real processes (nginx as a non-daemon master in a temporary prefix; the proxy as
``python -m proxy``), optionally inside a network namespace (``netns=``), so the same code
serves the loopback tests and the network-isolation tests.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE_CONF = REPO / "deploy" / "nginx" / "owui-gate.conf"
PYTHON = sys.executable
PLACEHOLDER = re.compile(r"\$\{(OWUI_GATE_[A-Z_]+)\}")
PLACEHOLDERS = frozenset(
    {
        "OWUI_GATE_SERVER_NAME",
        "OWUI_GATE_HTTPS_LISTEN",
        "OWUI_GATE_HTTP_LISTEN",
        "OWUI_GATE_TLS_CERT",
        "OWUI_GATE_TLS_KEY",
        "OWUI_GATE_PROXY",
        "OWUI_GATE_AUTH",
    }
)
SERVER_NAME = "owui.test"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_site(values: Mapping[str, str]) -> str:
    """The shipped site config with its ${OWUI_GATE_*} placeholders filled, like envsubst."""
    text = SITE_CONF.read_text(encoding="utf-8")
    missing = {m for m in PLACEHOLDER.findall(text) if m not in values}
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def wait_tcp(host: str, port: int, netns: str | None = None, timeout: float = 20.0) -> None:
    """Wait until HOST:PORT accepts connections (checked from inside ``netns``)."""
    deadline = time.monotonic() + timeout
    if netns is None:
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{host}:{port} did not open in {timeout}s") from None
                time.sleep(0.05)
    probe = (
        "import socket,sys,time\n"
        "d=time.monotonic()+float(sys.argv[3])\n"
        "while True:\n"
        "    try:\n"
        "        socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1).close();break\n"
        "    except OSError:\n"
        "        if time.monotonic()>d: sys.exit(1)\n"
        "        time.sleep(0.05)\n"
    )
    argv = in_netns(netns, [PYTHON, "-c", probe, host, str(port), str(timeout)])
    if subprocess.run(argv, check=False, timeout=timeout + 10).returncode != 0:
        raise TimeoutError(f"{host}:{port} did not open in {timeout}s (netns {netns})")


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


@dataclass
class Nginx:
    """Debian's nginx running the shipped site config from a private prefix directory."""

    prefix: Path
    https_listen: str
    http_listen: str
    proxy: str
    cert: Path
    key: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    # The auth service behind /oauth2/; nginx needs an address even when nothing listens.
    auth: str = "127.0.0.1:4180"
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.prefix / "nginx.log"

    def write_config(self) -> Path:
        """Write nginx.conf (a minimal main context including the rendered site file)."""
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        site = self.prefix / "owui-gate.conf"
        site.write_text(
            render_site(
                {
                    "OWUI_GATE_SERVER_NAME": SERVER_NAME,
                    "OWUI_GATE_HTTPS_LISTEN": self.https_listen,
                    "OWUI_GATE_HTTP_LISTEN": self.http_listen,
                    "OWUI_GATE_TLS_CERT": str(self.cert),
                    "OWUI_GATE_TLS_KEY": str(self.key),
                    "OWUI_GATE_PROXY": self.proxy,
                    "OWUI_GATE_AUTH": self.auth,
                }
            ),
            encoding="utf-8",
        )
        p = self.prefix
        # Test-only main context: runs as root in the foreground, everything under the prefix.
        main = f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {p}/nginx.pid;
error_log {self.log} notice;
events {{ worker_connections 1024; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    include {site};
}}
"""
        conf = p / "nginx.conf"
        conf.write_text(main, encoding="utf-8")
        return conf

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the written configuration."""
        conf = self.write_config()
        binary = nginx_binary() or "nginx"
        return subprocess.run(
            in_netns(self.netns, [binary, "-t", "-p", str(self.prefix), "-c", str(conf)]),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def start(self, wait_for: tuple[str, int]) -> None:
        conf = self.write_config()
        binary = nginx_binary() or "nginx"
        argv = in_netns(self.netns, [binary, "-p", str(self.prefix), "-c", str(conf)])
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            wait_tcp(*wait_for, netns=self.netns)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.log.read_text()}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            # SIGQUIT is nginx's graceful stop; terminate() (SIGTERM) is its fast stop.
            stop(self.proc)


def proxy_available() -> bool:
    return (REPO / "proxy" / "__main__.py").exists()


@dataclass
class Proxy:
    """The owui-gate proxy as a process (``python -m proxy``), configured by environment."""

    env: dict[str, str]
    log: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_for: tuple[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_PROXY_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(REPO)
        argv = in_netns(self.netns, [PYTHON, "-m", "proxy"])
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=REPO)
        try:
            wait_tcp(*wait_for, netns=self.netns)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"the proxy did not start:\n{self.log.read_text()}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
