"""A real OpenWebUI for the demo and the e2e tests: install it, start it, stop it.

The release is 0.12.4 (the one CI runs) unless ``$OWUI_GATE_OPENWEBUI_VERSION`` names another
(``scripts/compat`` runs the e2e tier against several, see docs/compatibility.md). Each release
lives in its own virtual environment in a cache folder outside the clone
(``~/.cache/owui-gate/openwebui-<release>``, or under ``$OWUI_GATE_CACHE``), because it weighs
about 7 GB and must never share the project's dependencies. The first caller installs it
under a file lock, so two installers started at once (two test sessions, the demo and the
tests) neither clash nor install twice; everyone else reuses it.

Each start gets a fresh ``DATA_DIR``, a free loopback port, the offline settings from
``docs/openwebui.md`` and trusted-header mode, and logs to a file kept for post-mortems. The
process runs in its own process group so that stopping it also stops whatever it spawned.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from demo.processes import spawn_group, stop_group
from proxy.openwebui_release import signup_trap

VERSION = "0.12.4"  # the pinned release: CI, the demo and the bench run this one by default
VERSION_ENV = "OWUI_GATE_OPENWEBUI_VERSION"
CACHE_ENV = "OWUI_GATE_CACHE"
_RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
EMAIL_HEADER = "X-User-Email"
NAME_HEADER = "X-User-Name"
# A marker written after a complete install; a venv without it is checked, then adopted or redone.
_STAMP = ".owui-gate-installed"

Progress = Callable[[str], None]


class OpenWebUIError(RuntimeError):
    """Installing, starting or talking to OpenWebUI failed; the message says what to look at."""


def _progress_stderr(message: str) -> None:
    print(f"[openwebui] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The cache folder: ``$OWUI_GATE_CACHE`` or ``~/.cache/owui-gate``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "owui-gate"


def version() -> str:
    """The release to run: ``$OWUI_GATE_OPENWEBUI_VERSION`` (``X.Y.Z``) or the pinned one."""
    configured = os.environ.get(VERSION_ENV, "").strip()
    if not configured:
        return VERSION
    if not _RELEASE.fullmatch(configured):
        raise OpenWebUIError(
            f"{VERSION_ENV}={configured!r} is not a release like 0.12.4 "
            "(three numbers separated by dots, as on PyPI's open-webui page)"
        )
    return configured


def venv_dir(release: str | None = None) -> Path:
    """OpenWebUI's own virtual environment for ``release`` inside the cache folder."""
    return cache_dir() / f"openwebui-{release or version()}"


def executable(release: str | None = None) -> Path:
    """The ``open-webui`` command inside that environment."""
    return venv_dir(release) / "bin" / "open-webui"


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('open-webui'))"
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def is_installed(release: str | None = None) -> bool:
    """Whether a complete install is present (cheap: only looks for files)."""
    return (venv_dir(release) / _STAMP).is_file() and executable(release).exists()


@contextlib.contextmanager
def _install_lock(release: str, progress: Progress) -> Iterator[None]:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"openwebui-{release}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another process is installing OpenWebUI; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed(progress: Progress = _progress_stderr, release: str | None = None) -> Path:
    """Make sure ``open-webui==<release>`` is installed in the cache; return its executable.

    ``release`` defaults to :func:`version`. Takes a few minutes and about 7-8 GB the first
    time (torch and CUDA wheels come with it).
    """
    release = release or version()
    if is_installed(release):
        return executable(release)
    venv = venv_dir(release)
    with _install_lock(release, progress):
        if is_installed(release):  # someone else finished while we waited for the lock
            return executable(release)
        found = _installed_version(venv)
        if found == release and executable(release).exists():
            progress(f"adopting the existing OpenWebUI {release} in {venv}")
        else:
            progress(f"installing open-webui=={release} into {venv} (a few minutes, ~7-8 GB)")
            _install(venv, release, progress)
            found = _installed_version(venv)
            if found != release:
                raise OpenWebUIError(
                    f"after installing, {venv} reports open-webui {found!r}, not {release}"
                )
        (venv / _STAMP).write_text(f"open-webui=={release}\n", encoding="utf-8")
        progress(f"OpenWebUI {release} ready in {venv}")
    return executable(release)


def _install(venv: Path, release: str, progress: Progress) -> None:
    try:
        if not (venv / "bin" / "python").exists():
            # The real interpreter: a venv made from inside our venv would chain to it.
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-q", "-U", "pip"], check=True)
    except subprocess.CalledProcessError as exc:
        raise OpenWebUIError(f"creating the venv {venv} failed: {exc}") from exc
    command = [*pip, "install", "--progress-bar", "off", f"open-webui=={release}"]
    last: collections.deque[str] = collections.deque(maxlen=30)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None  # set by stdout=PIPE
        for line in process.stdout:
            last.append(line.rstrip())
            # pip's "Collecting x" / "Downloading y" lines are the progress worth showing.
            if line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
                progress(line.rstrip())
    if process.returncode != 0:
        # Every release from 0.5 to 0.12 asks for Python >=3.11,<3.13; pip names the range
        # ("Requires-Python") when a release wants another interpreter than the venv's.
        raise OpenWebUIError(
            f"pip install open-webui=={release} failed (exit {process.returncode}) with "
            f"{sys.version.split()[0]}; if pip names a Requires-Python range, run this with "
            "an interpreter in it:\n" + "\n".join(last)
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def offline_environment(
    *,
    data_dir: Path,
    port: int,
    openai_base_url: str | None,
    secret_key: str,
) -> dict[str, str]:
    """The environment OpenWebUI runs with here: offline, loopback, trusted-header mode."""
    env = {
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "WEBUI_SECRET_KEY": secret_key,
        "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": EMAIL_HEADER,
        "WEBUI_AUTH_TRUSTED_NAME_HEADER": NAME_HEADER,
        "DEFAULT_USER_ROLE": "user",
        "ENABLE_OLLAMA_API": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
        "RAG_RERANKING_MODEL_AUTO_UPDATE": "False",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "ANONYMIZED_TELEMETRY": "False",
        "SCARF_NO_ANALYTICS": "true",
        "DO_NOT_TRACK": "true",
        # Models of an OpenAI connection have no access grants until an admin adds some; the
        # demo and the tests let every user use them.
        "BYPASS_MODEL_ACCESS_CONTROL": "True",
    }
    if openai_base_url is None:
        env["ENABLE_OPENAI_API"] = "False"
    else:
        env |= {
            "ENABLE_OPENAI_API": "True",
            "OPENAI_API_BASE_URLS": openai_base_url,
            "OPENAI_API_KEYS": "unused",
        }
    return env


@dataclass
class OpenWebUI:
    """A running OpenWebUI process."""

    url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of its log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 240.0) -> None:
        """Wait until ``GET /health`` answers ``{"status": true}``; raise if it dies or hangs."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise OpenWebUIError(
                        f"OpenWebUI exited with {self.process.returncode} while starting; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):  # not up, or not JSON yet
                    response = client.get(f"{self.url}/health")
                    if response.status_code == 200 and response.json().get("status") is True:
                        return
                time.sleep(0.5)
        raise OpenWebUIError(
            f"OpenWebUI did not answer /health within {timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM its process group, then SIGKILL whatever is left after ``timeout``."""
        stop_group(self.process, timeout)


def start(
    *,
    data_dir: Path,
    log_path: Path,
    openai_base_url: str | None = None,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    progress: Progress = _progress_stderr,
) -> OpenWebUI:
    """Start OpenWebUI on ``127.0.0.1`` (not yet healthy: call :meth:`OpenWebUI.wait_healthy`)."""
    command = ensure_installed(progress)
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Our own settings and the caller's virtualenv must not leak into OpenWebUI's process.
    for name in list(env):
        if name.startswith(("OWUI_", "VIRTUAL_ENV")):
            del env[name]
    env |= offline_environment(
        data_dir=data_dir,
        port=port,
        openai_base_url=openai_base_url,
        secret_key=secrets.token_urlsafe(32),
    )
    env["PYTHONUNBUFFERED"] = "1"  # its log (and access log) reaches the file as it happens
    env |= dict(extra_env or {})
    process = spawn_group(
        [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=data_dir,
        log_path=log_path,
    )
    progress(f"starting OpenWebUI on http://127.0.0.1:{port} (log {log_path})")
    return OpenWebUI(
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data_dir,
        log_path=log_path,
        process=process,
    )


def sign_in(url: str, email: str, name: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Sign in to OpenWebUI directly with the trusted headers (creates the user if missing).

    Only for the operator's first sign-in and for tests: in production only the proxy talks to
    OpenWebUI. Returns OpenWebUI's answer ``{id, email, name, role, token, ...}``.
    """
    headers = {EMAIL_HEADER: email}
    if name is not None:
        headers[NAME_HEADER] = quote(name, safe="")  # OpenWebUI URL-decodes the name
    response = httpx.post(
        f"{url}/api/v1/auths/signin",
        headers=headers,
        json={"email": "", "password": ""},
        timeout=timeout,
    )
    if response.status_code != 200:
        raise OpenWebUIError(
            f"trusted-header sign-in as {email} failed: "
            f"{response.status_code} {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


def create_operator_admin(url: str, email: str, name: str = "Operator") -> dict[str, Any]:
    """Create the first account, which OpenWebUI makes ``admin``; refuse if users exist already.

    Must happen before any user signs in, or a student would become the admin.
    """
    config = httpx.get(f"{url}/api/config", timeout=30.0).json()
    if not config.get("onboarding"):
        raise OpenWebUIError(f"{url} already has users: the first account is not ours to create")
    user = sign_in(url, email, name)
    if user.get("role") != "admin":
        raise OpenWebUIError(f"the first account {email} came out {user.get('role')!r}, not admin")
    return user


def apply_signup_fix(url: str, admin_token: str) -> bool:
    """On a release before 0.8.0 with sign-ups off, turn them on as docs/compatibility.md says.

    Those releases refuse the trusted-header sign-in of a new user while sign-ups are off,
    and turn them off after the first account. Turning them on also opens OpenWebUI's
    password sign-up, which the proxy refuses on its public listener; OpenWebUI itself stays
    on loopback. Returns whether anything was changed.
    """
    config = httpx.get(f"{url}/api/config", timeout=30.0).json()
    if not signup_trap(config):
        return False
    auth = {"Authorization": f"Bearer {admin_token}"}
    current = httpx.get(f"{url}/api/v1/auths/admin/config", headers=auth, timeout=30.0)
    current.raise_for_status()
    changed = httpx.post(
        f"{url}/api/v1/auths/admin/config",
        headers=auth,
        json={**current.json(), "ENABLE_SIGNUP": True},
        timeout=30.0,
    )
    changed.raise_for_status()
    return True
