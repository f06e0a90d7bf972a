"""The demo: every owui-gate piece running on loopback, around a real OpenWebUI.

``python -m demo.stack`` (``scripts/demo`` sets up the venvs and runs it) starts, in order:

1. a small OpenAI-compatible model server (``demo.model_server``): the LLM;
2. OpenWebUI (0.12.4, or ``$OWUI_GATE_OPENWEBUI_VERSION``) in trusted-header mode, loopback
   only, with that model server as its OpenAI connection; then creates the operator's admin
   account directly, first, so that no user who signs in later becomes admin (and, on a
   release before 0.8.0, turns sign-ups on as docs/compatibility.md says);
3. the proxy (``owui-proxy``): the only ingress, forward-auth to the demo IdP, with an internal
   act-as listener whose service token is generated here, and its first-sign-in hook: the
   first time it sees a user, a signed ``user.seen`` event goes to the receiver;
4. the provisioner's webhook receiver (``owui-provision webhook``) with the example courses
   (one for everyone, one for the ``year-9`` group);
5. the demo identity provider (``owui-demo-idp``): login page, forward-auth endpoint, logout.
   Like the IdPs schools have, it sends no signup webhook: provisioning starts at the proxy.

It prints the URL to open and what each process is; Ctrl-C or SIGTERM stops everything in
reverse order. ``--check`` starts everything, verifies it end to end, stops and exits 0 (used
by the e2e tests). The e2e tests build on :class:`Stack` too, so the demo is what is tested.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from demo import openwebui
from demo.model_server import MODEL_ID
from demo.processes import spawn_group, stop_group
from proxy.webhooks import new_secret

REPO = Path(__file__).resolve().parent.parent
DEFAULT_COURSE = REPO / "examples" / "welcome.toml"
GROUP_COURSE = REPO / "examples" / "year-9.toml"
CHECK_GROUP = "year-9"


class StackError(RuntimeError):
    """A demo process could not be started or died; the message names it and its log."""


def console_script(name: str) -> Path:
    """A console script of this project, next to the running interpreter (the project venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StackError(
            f"{name} is not installed next to {sys.executable}: "
            "install the project first (scripts/demo or scripts/test do it)"
        )
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any owui-gate settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_")}
    env.update(extra)
    return env


@dataclass
class Service:
    """One running process of the stack."""

    name: str
    role: str
    url: str
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
        stop_group(self.process, timeout)


def spawn(
    name: str,
    role: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    url: str,
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float = 30.0,
) -> Service:
    """Start ``argv`` in its own process group, logging to ``log_path``; wait until ``ready()``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = spawn_group(argv, env=env, cwd=REPO, log_path=log_path)
    service = Service(name=name, role=role, url=url, log_path=log_path, process=process)
    deadline = time.monotonic() + timeout
    while True:
        if not service.alive():
            raise StackError(
                f"{name} exited with {process.returncode} while starting; "
                f"log {log_path}:\n{_tail(log_path)}"
            )
        if ready():
            return service
        if time.monotonic() > deadline:
            service.stop()
            raise StackError(
                f"{name} was not ready within {timeout:.0f} s; log {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.2)


def http_ready(url: str, *, want: int | None = None) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers at all (or with status ``want``)."""

    def probe() -> bool:
        try:
            status = httpx.get(url, timeout=2.0).status_code
        except httpx.HTTPError:
            return False
        return status == want if want is not None else True

    return probe


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` (all held open until all are chosen)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def write_secret(path: Path, value: str) -> Path:
    """Write a secret file readable by its owner only (mode 600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return path


@dataclass
class StackConfig:
    """What the stack is built from."""

    state_dir: Path
    public_port: int = 8000  # 0: any free port
    operator_email: str = "operator@example.com"
    operator_name: str = "Operator"
    course: Path = DEFAULT_COURSE
    # More course files for the receiver (each may be for some groups only).
    extra_courses: tuple[Path, ...] = ()
    # True: the proxy's first-sign-in hook triggers provisioning (any IdP works so); False:
    # the demo IdP sends a Clerk-style signup webhook on first login instead.
    signin_hook: bool = True
    token_delay: float = 0.05
    host: str = "127.0.0.1"
    # Extra OpenWebUI settings (the e2e tests turn on the role and groups headers, so that a
    # leaked header would be an observable escalation rather than ignored).
    openwebui_env: Mapping[str, str] = field(default_factory=dict)
    # Extra proxy settings (OWUI_PROXY_...), over the stack's own.
    proxy_env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """The running demo. Start with :meth:`start`, stop with :meth:`stop` (or use ``with``)."""

    config: StackConfig
    openwebui: openwebui.OpenWebUI | None = None
    services: dict[str, Service] = field(default_factory=dict)
    operator_token: str = field(default="", repr=False)
    openwebui_version: str = ""  # as OpenWebUI's /api/config names it, once started
    public_port: int = 0
    public_url: str = ""
    internal_url: str = ""
    admin_url: str = ""
    idp_url: str = ""
    webhook_url: str = ""
    model_url: str = ""
    service_token_file: Path = field(default_factory=Path)
    webhook_secret_file: Path = field(default_factory=Path)

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def courses(self) -> tuple[Path, ...]:
        return (self.config.course, *self.config.extra_courses)

    @property
    def logs(self) -> Path:
        return self.config.state_dir / "logs"

    def start(self, progress: Callable[[str], None] = print) -> None:
        """Start everything, in dependency order."""
        self.prepare()
        self.start_model_server()
        progress("starting OpenWebUI (30-60 s; the first run installs it, several minutes)")
        self.start_openwebui()
        self.start_idp()  # first: the proxy is ready only once its auth service answers
        self.start_proxy()
        self.start_webhook()

    def prepare(self) -> None:
        """Pick the ports and write the secrets every later step refers to."""
        cfg = self.config
        for course in self.courses:
            if not course.is_file():
                raise StackError(f"course file {course} does not exist")
        host = cfg.host
        secrets_dir = cfg.state_dir / "secrets"
        self.service_token_file = write_secret(
            secrets_dir / "internal-tokens", secrets.token_urlsafe(48)
        )
        self.webhook_secret_file = write_secret(secrets_dir / "webhook-secret", new_secret())
        port = cfg.public_port or openwebui.free_port(host)
        model, idp, admin, internal, webhook = (openwebui.free_port(host) for _ in range(5))
        self.public_port = port
        self.public_url = f"http://{host}:{port}"
        self.model_url = f"http://{host}:{model}/v1"
        self.idp_url = f"http://{host}:{idp}"
        self.admin_url = f"http://{host}:{admin}"
        self.internal_url = f"http://{host}:{internal}"
        self.webhook_url = f"http://{host}:{webhook}/webhooks/signup"

    def start_model_server(self) -> None:
        """The model server: what OpenWebUI's OpenAI connection points at."""
        listen = self.model_url.removeprefix("http://").removesuffix("/v1")
        self.services["model"] = spawn(
            "model server",
            f"demo.model_server: streams the model '{MODEL_ID}' (production: OpenAI, vLLM, ...)",
            [sys.executable, "-m", "demo.model_server", "--listen", listen,
             "--token-delay", str(self.config.token_delay)],
            env=child_environment({}),
            url=self.model_url,
            log_path=self.logs / "model-server.log",
            ready=http_ready(f"{self.model_url}/models", want=200),
        )  # fmt: skip

    def start_openwebui(self) -> None:
        """OpenWebUI, then its first (admin) account, before anyone else can sign in."""
        cfg = self.config
        self.openwebui = openwebui.start(
            data_dir=cfg.state_dir / "openwebui-data",
            log_path=self.logs / "openwebui.log",
            openai_base_url=self.model_url,
            extra_env=cfg.openwebui_env,
        )
        self.openwebui.wait_healthy()
        config = httpx.get(f"{self.openwebui.url}/api/config", timeout=30.0).json()
        if config.get("onboarding"):
            admin = openwebui.create_operator_admin(
                self.openwebui.url, cfg.operator_email, cfg.operator_name
            )
        else:  # a reused state folder: the operator was made admin on its first run
            admin = openwebui.sign_in(self.openwebui.url, cfg.operator_email)
            if admin.get("role") != "admin":
                raise StackError(f"{cfg.operator_email} is not the admin of this data folder")
        self.operator_token = str(admin["token"])
        # Releases before 0.8.0 need sign-ups on for new users (docs/compatibility.md).
        if openwebui.apply_signup_fix(self.openwebui.url, self.operator_token):
            print("[openwebui] turned sign-ups on: this release needs it", file=sys.stderr)
        self.openwebui_version = str(
            httpx.get(f"{self.openwebui.url}/api/config", timeout=30.0).json().get("version")
        )

    def start_proxy(self) -> None:
        """The proxy: public, admin and internal listeners."""
        assert self.openwebui is not None, "start OpenWebUI first"
        host = self.config.host
        proxy_env = child_environment(
            {
                "OWUI_PROXY_UPSTREAM": self.openwebui.url,
                "OWUI_PROXY_LISTEN": f"{host}:{self.public_port}",
                "OWUI_PROXY_ADMIN_LISTEN": self.admin_url.removeprefix("http://"),
                "OWUI_PROXY_AUTH": "forward",
                "OWUI_PROXY_FORWARD_AUTH_URL": f"{self.idp_url}/oauth2/auth",
                "OWUI_PROXY_PUBLIC_URL": self.public_url,
                "OWUI_PROXY_LOGIN_URL": f"{self.idp_url}/login",
                "OWUI_PROXY_LOGOUT_URL": f"{self.idp_url}/logout",
                "OWUI_PROXY_INTERNAL_LISTEN": self.internal_url.removeprefix("http://"),
                "OWUI_PROXY_INTERNAL_TOKENS_FILE": str(self.service_token_file),
            }
            | self.signin_hook_env()
            | dict(self.config.proxy_env)
        )
        self.services["proxy"] = spawn(
            "proxy",
            "owui-proxy, the only ingress: asks the IdP who you are, sets X-User-Email "
            "(production: the same, behind nginx/TLS)",
            [str(console_script("owui-proxy"))],
            env=proxy_env,
            url=self.public_url,
            log_path=self.logs / "proxy.log",
            # Alive, not ready: /readyz also waits for the auth service, which the e2e
            # fixtures start after the proxy (the demo starts it first).
            ready=http_ready(f"{self.admin_url}/healthz", want=200),
        )

    def signin_hook_env(self) -> dict[str, str]:
        """The proxy's first-sign-in hook, pointed at the receiver (when the config wants it)."""
        if not self.config.signin_hook:
            return {}
        return {
            "OWUI_PROXY_SIGNIN_HOOK_URL": self.webhook_url,
            "OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE": str(self.webhook_secret_file),
        }

    def start_webhook(self) -> None:
        """The provisioner's webhook receiver, acting through the internal listener."""
        listen = self.webhook_url.removeprefix("http://").split("/", 1)[0]
        self.services["webhook"] = spawn(
            "provisioner webhook",
            "owui-provision webhook: signed user.seen event -> course threads, through the "
            "internal listener (production: the same, private network)",
            [str(console_script("owui-provision")), "webhook", *map(str, self.courses),
             "--listen", listen, "--secret-file", str(self.webhook_secret_file)],
            env=child_environment(self.provision_env()),
            url=self.webhook_url,
            log_path=self.logs / "webhook.log",
            ready=http_ready(self.webhook_url),
        )  # fmt: skip

    def start_idp(self) -> None:
        """The demo identity provider."""
        self.services["idp"] = spawn(
            "demo IdP",
            "owui-demo-idp: login page, forward-auth, logout "
            "(production: oauth2-proxy, Authelia, authentik, ...)",
            self.idp_command(),
            env=child_environment({}),
            url=f"{self.idp_url}/login",
            log_path=self.logs / "idp.log",
            ready=http_ready(f"{self.idp_url}/login", want=200),
        )

    def idp_command(self) -> list[str]:
        """The demo IdP's command line."""
        command = [
            str(console_script("owui-demo-idp")),
            "--listen", self.idp_url.removeprefix("http://"),
            "--public-url", self.public_url,
            # Who signed in before: with a reused --state-dir, returning users are not new.
            "--state-file", str(self.config.state_dir / "idp-users.json"),
        ]  # fmt: skip
        if not self.config.signin_hook:
            command += ["--webhook-url", self.webhook_url]
            command += ["--webhook-secret-file", str(self.webhook_secret_file)]
        return command

    def provision_env(self) -> dict[str, str]:
        """Environment for ``owui-provision`` to act through this stack's internal listener."""
        return {
            "OWUI_PROVISION_URL": self.internal_url,
            "OWUI_PROVISION_TOKEN_FILE": str(self.service_token_file),
        }

    def dead(self) -> list[Service]:
        """Services that have exited."""
        return [service for service in self.services.values() if not service.alive()]

    def stop(self) -> None:
        """Stop every process, last started first."""
        for key in reversed(list(self.services)):
            self.services.pop(key).stop()
        if self.openwebui is not None:
            self.openwebui.stop()
            self.openwebui = None

    def describe(self) -> str:
        """What is running where, for people: the URL to open first, OpenWebUI's side last."""
        assert self.openwebui is not None
        extra = {
            "internal": (
                "internal listener",
                self.internal_url,
                "owui-proxy's act-as door for the provisioner, service token required "
                "(production: loopback, unix socket or private network)",
            ),
            "admin": ("proxy admin", f"{self.admin_url}/readyz", "/healthz, /readyz, /metrics"),
            "openwebui": (
                f"OpenWebUI {self.openwebui_version}",
                self.openwebui.url,
                "trusted-header mode, loopback only: reach it through the proxy",
            ),
        }
        running = {key: (s.name, s.url, s.role) for key, s in self.services.items()}
        order = ["proxy", "internal", "admin", "idp", "webhook", "model", "openwebui"]
        rows = [row for key in order if (row := running.get(key) or extra.get(key))]
        return "\n".join(f"  {name:<20} {url}\n  {'':<20} {role}" for name, url, role in rows)


def check(stack: Stack, timeout: float = 90.0) -> None:
    """End-to-end smoke test of a running stack; raises :class:`StackError` on a problem.

    ``owui-provision check`` passes; an anonymous API call through the proxy is refused; a new
    user (in the ``year-9`` group) signing in at the demo IdP and then reaching OpenWebUI
    through the proxy finds one archived thread per module of every course for them,
    reading them through the proxy's public listener like the browser would. Nothing but the
    proxy's first-sign-in hook tells the provisioner about that user.
    """
    result = subprocess.run(
        [str(console_script("owui-provision")), "check"],
        env=child_environment(stack.provision_env()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"owui-provision check failed:\n{result.stdout}{result.stderr}")
    response = httpx.get(f"{stack.public_url}/api/config", timeout=10.0)
    if response.status_code != 401:
        raise StackError(
            f"an anonymous request through the proxy got {response.status_code}, expected 401"
        )
    modules = 0
    for course in stack.courses:
        data = tomllib.loads(course.read_text(encoding="utf-8"))
        groups = data["course"].get("groups", [])
        if not groups or CHECK_GROUP in groups:
            modules += len(data["modules"])
    email = f"demo-check-{secrets.token_hex(4)}@example.com"
    with httpx.Client(timeout=30.0) as client:
        login = client.post(
            f"{stack.idp_url}/login",
            data={
                "email": email,
                "name": "Demo Check",
                "groups": CHECK_GROUP,
                "rd": f"{stack.public_url}/",
            },
        )
        if login.status_code not in (302, 303):
            raise StackError(f"demo IdP login answered {login.status_code}")
        signin = client.post(
            f"{stack.public_url}/api/v1/auths/signin", json={"email": "", "password": ""}
        )
        if signin.status_code != 200 or signin.json().get("email") != email:
            raise StackError(f"sign-in through the proxy answered {signin.status_code}")
        auth = {"Authorization": f"Bearer {signin.json()['token']}"}
        deadline = time.monotonic() + timeout
        found = 0
        while time.monotonic() < deadline:
            listed = client.get(f"{stack.public_url}/api/v1/chats/archived", headers=auth)
            found = len(listed.json()) if listed.status_code == 200 else 0
            if found == modules:
                return
            if found > modules:
                break
            time.sleep(1)
    raise StackError(
        f"{email} signed in, but has {found} course threads where {modules} were expected; "
        f"see {stack.logs}/webhook.log and proxy.log"
    )


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the main loop like Ctrl-C does."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not interrupt the clean-up the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    code, state_dir, temporary = _run(argv)
    if code == 0 and temporary:
        shutil.rmtree(state_dir, ignore_errors=True)
    elif code != 0:
        print(f"logs kept in {state_dir / 'logs'}", file=sys.stderr)
    return code


def _run(argv: Sequence[str] | None) -> tuple[int, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m demo.stack", description="Run the owui-gate demo on loopback."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="proxy port, 0 for any (default %(default)s)",
    )
    parser.add_argument(
        "--course", type=Path, default=DEFAULT_COURSE, help="the course for everyone (TOML)"
    )
    parser.add_argument(
        "--extra-course",
        type=Path,
        action="append",
        default=[GROUP_COURSE],
        help="more course files, e.g. for some groups only (repeatable; default %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where data, logs and secrets go; reuse one to keep users and chats across runs "
        "(default: a fresh temporary folder, removed after a clean stop)",
    )
    parser.add_argument(
        "--check", action="store_true", help="start, verify end to end, stop; exit 0 if all is well"
    )
    args = parser.parse_args(argv)
    temporary = args.state_dir is None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="owui-gate-demo-"))
    stack = Stack(
        StackConfig(
            state_dir=state_dir,
            public_port=args.port,
            course=args.course,
            extra_courses=tuple(args.extra_course),
        )
    )
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        with stack:
            if args.check:
                check(stack)
                print("demo stack OK: every process started, a new user got the course threads")
                return 0, state_dir, temporary
            print(_banner(stack), flush=True)
            while not (dead := stack.dead()):
                time.sleep(1)
            for service in dead:
                print(
                    f"{service.name} exited ({service.process.returncode}); see "
                    f"{service.log_path}:\n{_tail(service.log_path)}",
                    file=sys.stderr,
                )
            return 1, state_dir, temporary
    except _Stop:
        print("\nstopped: every process of the demo has exited", flush=True)
        return 0, state_dir, temporary
    except (StackError, openwebui.OpenWebUIError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1, state_dir, temporary


def _banner(stack: Stack) -> str:
    return (
        f"\nowui-gate demo is running.  Open {stack.public_url}\n\n"
        f"{stack.describe()}\n\n"
        "Sign in on the demo IdP's page with any new email (add the group year-9 for the\n"
        "second course): the proxy sees you for the first time and its sign-in hook makes the\n"
        "provisioner create your course threads (user menu > Settings > Archived Chats).\n"
        f"The operator (admin) is {stack.config.operator_email}: sign in as that to be admin.\n"
        "Provision someone by hand:\n"
        f"  OWUI_PROVISION_URL={stack.internal_url} "
        f"OWUI_PROVISION_TOKEN_FILE={stack.service_token_file} \\\n"
        f"  .venv/bin/owui-provision user {stack.config.course} ada@example.edu --name 'Ada'\n"
        f"Logs: {stack.logs}\n"
        "Ctrl-C stops everything."
    )


if __name__ == "__main__":
    sys.exit(main())
