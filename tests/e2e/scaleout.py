"""The scale-out topology as real processes: PostgreSQL, Redis, two OpenWebUI, nginx, owui-gate.

::

    owui-proxy (2 workers) ──> nginx (deploy/nginx/owui-gate-scaleout.conf) ─┬─> OpenWebUI A ─┐
      public + internal          hash on X-User-Email                        └─> OpenWebUI B ─┤
    owui-proxy (1 worker)  ──> nginx, a test-only round-robin server ───────────> A and B      │
      internal only: provisioners that land on both processes       PostgreSQL 15 + Redis 7 <─┘

PostgreSQL (Debian's ``postgresql``) runs as a private cluster in a temporary folder on its own
port, started as the ``postgres`` user when the tests run as root (``initdb`` refuses root);
Redis (Debian's ``redis-server``) on its own port without persistence. Both OpenWebUI
processes share the database, Redis and ``WEBUI_SECRET_KEY``; each has its own ``DATA_DIR``,
so whatever they agree on went through PostgreSQL or Redis. The second process starts once
the first's database migrations are committed: two processes migrating an empty database at
once would collide.

What each piece costs (seconds to start, resident memory) is collected in :attr:`ScaleOut.cost`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from demo import openwebui
from demo.processes import spawn_group, stop_group
from demo.stack import REPO, console_script, free_ports, http_ready, spawn, write_secret
from tests.deploy.edge import PLACEHOLDER, nginx_binary

SCALEOUT_CONF = REPO / "deploy" / "nginx" / "owui-gate-scaleout.conf"
DB_NAME = "openwebui"
DB_USER = "owui"
OPERATOR_EMAIL = "operator@example.com"


class ScaleOutError(RuntimeError):
    """A piece of the scale-out topology could not be started; the message says which."""


def postgres_bin(name: str) -> Path:
    """A PostgreSQL server program (initdb, postgres) of the newest installed major version."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=_major)
    if not found:
        raise ScaleOutError(
            f"PostgreSQL's {name} is not installed (Debian package postgresql; scripts/test "
            "installs it)"
        )
    return found[-1]


def _major(path: Path) -> int:
    version = path.parents[1].name
    return int(version) if version.isdigit() else 0


def redis_bin() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise ScaleOutError("redis-server is not installed (Debian package redis-server)")
    return found


def group_rss_mib(pid: int) -> float:
    """Resident memory of every process in ``pid``'s process group, in MiB."""
    total_kib = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue  # exited meanwhile, or not ours to read
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


@dataclass
class Process:
    """A started server process (own process group, output in ``log``)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started_s: float

    def stop(self, timeout: float = 15.0) -> None:
        stop_group(self.process, timeout)

    def rss_mib(self) -> float:
        return group_rss_mib(self.process.pid)


def _wait(
    check: Callable[[], bool],
    what: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise ScaleOutError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ScaleOutError(f"{what} not ready within {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _as_postgres_user(argv: list[str]) -> list[str]:
    """``initdb`` and ``postgres`` refuse to run as root: run them as the ``postgres`` user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class ScaleOut:
    """The running topology; :meth:`start` builds it, :meth:`stop` removes every process."""

    state: Path
    processes: dict[str, Process] = field(default_factory=dict)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    service_token_file: Path = field(default_factory=Path)
    owui: dict[str, openwebui.OpenWebUI] = field(default_factory=dict)
    pg_dir: Path = field(default_factory=Path)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def database_url(self) -> str:
        # psycopg 3 (in OpenWebUI's venv): a bare postgresql:// would ask SQLAlchemy for psycopg2.
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.ports['postgres']}/{DB_NAME}"

    @property
    def nginx_log(self) -> Path:
        return self.state / "nginx" / "owui-gate-scaleout.log"

    def start(self) -> None:
        names = ["postgres", "redis", "model", "idp", "nginx", "nginx_rr", "public"]
        names += ["admin", "internal", "admin_rr", "internal_rr", "owui_a", "owui_b"]
        self.ports = dict(zip(names, free_ports("127.0.0.1", len(names)), strict=True))
        self.logs.mkdir(parents=True, exist_ok=True)
        self.service_token_file = write_secret(
            self.state / "secrets" / "internal-tokens", secrets.token_urlsafe(48)
        )
        self.start_postgres()
        self.start_redis()
        self.start_model_server()
        self.start_nginx()
        # B starts once A's database migrations are committed: two processes migrating one
        # empty database at once would collide. Both then load in parallel.
        began = time.monotonic()
        self.launch_openwebui("owui_a")
        self.wait_migrated(self.owui["owui_a"])
        self.launch_openwebui("owui_b")
        for name in ("owui_a", "owui_b"):
            self.owui[name].wait_healthy()
            self.cost[name] = {"start_s": round(time.monotonic() - began, 1)}
        self.create_operator()
        self.start_idp()
        self.start_proxies()

    # --- PostgreSQL and Redis ------------------------------------------------------------

    def start_postgres(self) -> None:
        began = time.monotonic()
        # A folder of its own under /tmp: the postgres user must be able to reach it, which
        # pytest's per-user tmp folders (mode 700, root's) would not allow.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="owui-gate-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        data = self.pg_dir / "data"
        initdb = subprocess.run(
            _as_postgres_user(
                [str(postgres_bin("initdb")), "-D", str(data), "-U", DB_USER,
                 "--auth=trust", "--encoding=UTF8", "--no-sync"]
            ),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise ScaleOutError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        log = self.logs / "postgres.log"
        # Loopback only, its own port and socket folder; durability is not what is tested.
        argv = _as_postgres_user(
            [str(postgres_bin("postgres")), "-D", str(data), "-p", str(self.ports["postgres"]),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.pg_dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        )  # fmt: skip
        process = spawn_group(argv, env=dict(os.environ), cwd=self.pg_dir, log_path=log)
        _wait(lambda: self.psql("SELECT 1", db="postgres").returncode == 0,
              "PostgreSQL", process, log, 60)  # fmt: skip
        created = self.psql(f"CREATE DATABASE {DB_NAME}", db="postgres")
        if created.returncode != 0:
            raise ScaleOutError(f"CREATE DATABASE failed: {created.stderr}")
        self._started("postgres", process, log, began)

    def psql(self, sql: str, db: str = DB_NAME) -> subprocess.CompletedProcess[str]:
        """Run one SQL statement with Debian's psql; rows come back unaligned, '|'-separated."""
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U", DB_USER,
             "-d", db, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def start_redis(self) -> None:
        began = time.monotonic()
        log = self.logs / "redis.log"
        argv = [redis_bin(), "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.state)]  # fmt: skip
        process = spawn_group(argv, env=dict(os.environ), cwd=self.state, log_path=log)
        _wait(tcp_ready(self.ports["redis"]), "redis-server", process, log, 30)
        self._started("redis", process, log, began)

    # --- OpenWebUI and its model ---------------------------------------------------------

    def start_model_server(self) -> None:
        self.processes["model"] = self._spawn(
            "model",
            [sys.executable, "-m", "demo.model_server",
             "--listen", f"127.0.0.1:{self.ports['model']}", "--token-delay", "0.05"],
            ready=http_ready(f"{self.url('model')}/v1/models", want=200),
        )  # fmt: skip

    def openwebui_env(self) -> dict[str, str]:
        """What makes the processes one OpenWebUI: database, Redis, secret key."""
        redis = f"redis://127.0.0.1:{self.ports['redis']}/0"
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis,
            "WEBSOCKET_MANAGER": "redis",
            "WEBSOCKET_REDIS_URL": redis,
            "ENABLE_WEBSOCKET_SUPPORT": "true",
            "WEBUI_SECRET_KEY": self.secret_key,
            # nginx is the only peer: it connects from loopback.
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        }

    def launch_openwebui(self, name: str) -> None:
        self.owui[name] = openwebui.start(
            data_dir=self.state / f"{name}-data",
            log_path=self.logs / f"{name}.log",
            openai_base_url=f"{self.url('model')}/v1",
            port=self.ports[name],
            extra_env=self.openwebui_env(),
        )

    def wait_migrated(self, instance: openwebui.OpenWebUI) -> None:
        """Until alembic's version row is visible: PostgreSQL has transactional DDL, so the
        whole upgrade commits at once."""

        def migrated() -> bool:
            found = self.psql("SELECT version_num FROM alembic_version")
            return found.returncode == 0 and found.stdout.strip() != ""

        _wait(migrated, "OpenWebUI's migrations", instance.process, instance.log_path, 240)

    def create_operator(self) -> None:
        """The first account becomes admin: the operator's, before any test user signs in."""
        openwebui.create_operator_admin(self.url("owui_a"), OPERATOR_EMAIL)

    # --- nginx, IdP, proxies -------------------------------------------------------------

    def nginx_config(self) -> str:
        """The shipped scale-out site, plus a test-only round-robin server on the same pair."""
        values = {
            "OWUI_GATE_SCALEOUT_LISTEN": f"127.0.0.1:{self.ports['nginx']}",
            "OWUI_GATE_OPENWEBUI_A": f"127.0.0.1:{self.ports['owui_a']}",
            "OWUI_GATE_OPENWEBUI_B": f"127.0.0.1:{self.ports['owui_b']}",
        }
        site = PLACEHOLDER.sub(lambda m: values[m.group(1)], SCALEOUT_CONF.read_text())
        site = site.replace("/var/log/nginx/", f"{self.state / 'nginx'}/")
        round_robin = f"""
upstream test_round_robin {{
    server 127.0.0.1:{self.ports["owui_a"]};
    server 127.0.0.1:{self.ports["owui_b"]};
}}
server {{
    listen 127.0.0.1:{self.ports["nginx_rr"]};
    location / {{ proxy_pass http://test_round_robin; proxy_http_version 1.1; }}
}}
"""
        prefix = self.state / "nginx"
        return f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
{round_robin}
}}
"""

    def start_nginx(self) -> None:
        binary = nginx_binary()
        if binary is None:
            raise ScaleOutError("nginx is not installed (Debian package nginx)")
        prefix = self.state / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(self.nginx_config(), encoding="utf-8")
        began = time.monotonic()
        log = self.logs / "nginx.log"
        process = spawn_group([binary, "-p", str(prefix), "-c", str(conf)],
                              env=dict(os.environ), cwd=prefix, log_path=log)  # fmt: skip
        _wait(tcp_ready(self.ports["nginx"]), "nginx", process, log, 20)
        self._started("nginx", process, log, began)

    def start_idp(self) -> None:
        self.processes["idp"] = self._spawn(
            "idp",
            [str(console_script("owui-demo-idp")), "--listen", f"127.0.0.1:{self.ports['idp']}",
             "--public-url", self.url("public")],
            ready=http_ready(f"{self.url('idp')}/login", want=200),
        )  # fmt: skip

    def start_proxies(self) -> None:
        common = {
            "OWUI_PROXY_INTERNAL_TOKENS_FILE": str(self.service_token_file),
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{self.url('idp')}/oauth2/auth",
            "OWUI_PROXY_PUBLIC_URL": self.url("public"),
            "OWUI_PROXY_LOGIN_URL": f"{self.url('idp')}/login",
        }
        self.processes["proxy"] = self._spawn(
            "proxy",
            [str(console_script("owui-proxy"))],
            env=common
            | {
                "OWUI_PROXY_UPSTREAM": self.url("nginx"),
                "OWUI_PROXY_WORKERS": "2",
                "OWUI_PROXY_LISTEN": f"127.0.0.1:{self.ports['public']}",
                "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{self.ports['admin']}",
                "OWUI_PROXY_INTERNAL_LISTEN": f"127.0.0.1:{self.ports['internal']}",
            },
            ready=http_ready(f"{self.url('admin')}/readyz", want=200),
        )
        # A second proxy whose upstream is the round-robin server: provisioners through it
        # spread one user's calls over both processes, so the races are across processes.
        self.processes["proxy_rr"] = self._spawn(
            "proxy_rr",
            [str(console_script("owui-proxy"))],
            env=common
            | {
                "OWUI_PROXY_UPSTREAM": self.url("nginx_rr"),
                "OWUI_PROXY_LISTEN": f"127.0.0.1:{free_ports('127.0.0.1', 1)[0]}",
                "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{self.ports['admin_rr']}",
                "OWUI_PROXY_INTERNAL_LISTEN": f"127.0.0.1:{self.ports['internal_rr']}",
            },
            ready=http_ready(f"{self.url('admin_rr')}/readyz", want=200),
        )

    def provision_env(self, internal: str) -> dict[str, str]:
        return {
            "OWUI_PROVISION_URL": self.url(internal),
            "OWUI_PROVISION_TOKEN_FILE": str(self.service_token_file),
        }

    # --- bookkeeping ---------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
    ) -> Process:
        began = time.monotonic()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_")}
        child_env |= env or {}
        service = spawn(name, name, argv, env=child_env, url="", log_path=self.logs / f"{name}.log",
                        ready=ready)  # fmt: skip
        process = Process(name, service.process, service.log_path, time.monotonic() - began)
        self.cost[name] = {"start_s": round(process.started_s, 1)}
        return process

    def _started(
        self, name: str, process: subprocess.Popen[bytes], log: Path, began: float
    ) -> None:
        self.processes[name] = Process(name, process, log, time.monotonic() - began)
        self.cost[name] = {"start_s": round(time.monotonic() - began, 1)}

    def measure_memory(self) -> dict[str, dict[str, float]]:
        """Resident memory of each piece now (MiB), added to :attr:`cost`."""
        for name, process in self.processes.items():
            self.cost.setdefault(name, {})["rss_mib"] = round(process.rss_mib(), 1)
        for name, instance in self.owui.items():
            rss = group_rss_mib(instance.process.pid)
            self.cost.setdefault(name, {})["rss_mib"] = round(rss, 1)
        return self.cost

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop()
        for instance in self.owui.values():
            instance.stop()
        self.owui.clear()
        if self.pg_dir != Path():
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    def upstream_of(self, path: str, since: int = 0) -> list[str]:
        """OpenWebUI addresses nginx sent requests for exactly ``path`` to (log lines after
        byte offset ``since``), in order."""
        found = []
        with self.nginx_log.open(encoding="utf-8") as log:
            log.seek(since)
            for line in log:
                if f' {path}" ' in line and "upstream=" in line:
                    # "upstream=A:1, B:2 0.004": every address tried, then the request time.
                    found.append(line.rsplit("upstream=", 1)[1].rstrip().rsplit(" ", 1)[0])
        return found

    def log_offset(self) -> int:
        return self.nginx_log.stat().st_size if self.nginx_log.exists() else 0


def tcp_ready(port: int) -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on 127.0.0.1:``port``."""

    def probe() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    return probe


@contextlib.contextmanager
def scaleout(state: Path) -> Iterator[ScaleOut]:
    """Start the topology in ``state`` (logs under ``state/logs``), stop it afterwards."""
    topology = ScaleOut(state)
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()
