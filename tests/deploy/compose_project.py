"""deploy/compose/compose.yaml brought up with podman-compose, as an operator would.

The shipped ``deploy/`` folder is copied byte for byte into a temporary project folder,
next to what its README asks the operator to prepare (certificate, secrets, course), and
run with ``podman-compose -f compose.yaml -f test-override.yaml up -d``. The override adds
only what this machine needs:

- nginx's published ports moved to free loopback ports (443 and 80 may be taken here);
- OpenWebUI's code: the e2e tier's cached ``open-webui==0.12.4`` virtual environment (and
  the interpreter it was made with) mounted read-only into the image
  ``tests/deploy/images/openwebui.Containerfile`` builds, plus the offline settings the
  e2e tier runs OpenWebUI with (no model downloads, no OpenAI or Ollama connection).

Every image carries the exact name the compose file pins, built here (nothing is pulled):
owui-gate from ``deploy/container/Containerfile``; nginx and squid from Debian's packages;
OpenWebUI as above; and oauth2-proxy, which cannot be installed here, as a small stand-in
speaking its ``/oauth2/`` contract (``tests/deploy/images/oauth2_proxy_standin.py``).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from demo import openwebui
from tests.deploy.conftest import TestTLS, make_tls
from tests.deploy.edge import REPO, free_port
from tests.deploy.podman import IMAGES, Podman

COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
PROJECT = "owui-gate"  # the file's `name:`
SERVER_NAME = "chat.example.edu"
T = TypeVar("T")
IMAGE_UID = "10001"  # the owui-gate image's user and group
# Stand-in images by the compose service whose pinned image name they carry.
STAND_INS = {
    "nginx": "nginx.Containerfile",
    "egress": "squid.Containerfile",
    "oauth2-proxy": "oauth2-proxy.Containerfile",
    "open-webui": "openwebui.Containerfile",
}
# What OpenWebUI must not try here: downloads and model connections (demo/openwebui.py).
OFFLINE_KEYS = (
    "OFFLINE_MODE",
    "HF_HUB_OFFLINE",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE",
    "RAG_RERANKING_MODEL_AUTO_UPDATE",
    "ENABLE_VERSION_UPDATE_CHECK",
    "ENABLE_OLLAMA_API",
    "ENABLE_OPENAI_API",
)


def shipped() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return spec


def qualified(image: str) -> str:
    """The name podman stores a short image name under (as docker.io does)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def build_images(podman: Podman) -> dict[str, str]:
    """Build the stand-ins under the compose file's names; service -> image name."""
    services = shipped()["services"]
    built = {}
    for service, containerfile in STAND_INS.items():
        name = qualified(services[service]["image"])
        podman.build(name, IMAGES / containerfile, IMAGES)
        built[service] = name
    return built


def interpreter_prefix(venv: Path) -> Path:
    """Where the venv's Python lives (``sys.base_prefix``), to mount it at the same path."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Path(result.stdout.strip())


def override(https_port: int, venv: Path) -> str:
    """The test's compose override (see the module docstring), as YAML text."""
    volumes = [f"{venv}:{venv}:ro"]
    prefix = interpreter_prefix(venv)
    if prefix != Path("/usr"):  # Debian's own Python is in the image already
        volumes.append(f"{prefix}:{prefix}:ro")
    offline = openwebui.offline_environment(
        data_dir=Path("/app/backend/data"), port=8080, openai_base_url=None, secret_key=""
    )
    environment = {key: offline[key] for key in OFFLINE_KEYS}
    environment["OWUI_GATE_OPENWEBUI_VENV"] = str(venv)
    # JSON strings are YAML scalars; `!override` replaces the list instead of merging it.
    return "\n".join(
        [
            "services:",
            "  nginx:",
            f"    ports: !override [{json.dumps(f'127.0.0.1:{https_port}:443')}]",
            "  open-webui:",
            "    environment:",
            *(f"      {key}: {json.dumps(value)}" for key, value in environment.items()),
            "    volumes:",
            *(f"      - {json.dumps(volume)}" for volume in volumes),
            "",
        ]
    )


def write_secret(path: Path, text: str, *, owner: str = "0", group: str = "0") -> None:
    path.write_text(text, encoding="ascii")
    shutil.chown(path, int(owner), int(group))
    path.chmod(0o640 if group != "0" else 0o600)


@dataclass
class Project:
    """A running compose project and what the test knows about it."""

    podman: Podman
    directory: Path
    https_port: int
    tls: TestTLS
    log_dir: Path
    containers: dict[str, str] = field(default_factory=dict)  # service -> container name

    @property
    def compose_dir(self) -> Path:
        return self.directory / "deploy" / "compose"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [
            str(Path(sys.executable).parent / "podman-compose"),
            "-f",
            "compose.yaml",
            "-f",
            "test-override.yaml",
            *args,
        ]
        result = subprocess.run(
            command,
            cwd=self.compose_dir,
            env=self.podman.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        (self.log_dir / "podman-compose.log").open("a").write(
            f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}\n"
        )
        if result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def find_containers(self) -> None:
        listed = self.podman(
            "ps", "--all", "--format=json", f"--filter=label=io.podman.compose.project={PROJECT}"
        ).stdout
        for container in json.loads(listed or "[]"):
            service = container["Labels"]["com.docker.compose.service"]
            self.containers[service] = container["Names"][0]

    def exec(
        self, service: str, *argv: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", self.containers[service], *argv, timeout=timeout, check=False)

    def inspect(self, service: str) -> dict[str, Any]:
        return self.podman.inspect("container", self.containers[service])

    def logs(self, service: str) -> str:
        result = self.podman("logs", self.containers[service], check=False)
        return result.stdout + result.stderr

    def keep_logs(self) -> None:
        for service in self.containers:
            (self.log_dir / f"{service}.log").write_text(self.logs(service), encoding="utf-8")

    def network(self, name: str) -> str:
        """The podman network podman-compose made for the file's network ``name``."""
        return f"{PROJECT}_{name}"


def prepare(podman: Podman, directory: Path, log_dir: Path) -> Project:
    """The project folder: the shipped deploy/ plus what its README asks for."""
    shutil.copytree(REPO / "deploy", directory / "deploy")
    compose_dir = directory / "deploy" / "compose"
    tls = make_tls(directory / "tls-ca", SERVER_NAME)
    (compose_dir / "tls").mkdir()
    shutil.copy(tls.cert, compose_dir / "tls" / "fullchain.pem")
    shutil.copy(tls.key, compose_dir / "tls" / "privkey.pem")
    secret_dir = compose_dir / "secrets"
    secret_dir.mkdir()
    token = secrets.token_urlsafe(36)
    hook = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    # Root-owned, group 10001 (the image's), mode 0640: the proxy and the receiver read
    # them, nobody else on the host does.
    write_secret(secret_dir / "internal-tokens", token + "\n", group=IMAGE_UID)
    write_secret(secret_dir / "provision-token", token + "\n", group=IMAGE_UID)
    write_secret(secret_dir / "hook-secret", hook + "\n", group=IMAGE_UID)
    write_secret(secret_dir / "open-webui.env", f"WEBUI_SECRET_KEY={secrets.token_urlsafe(48)}\n")
    write_secret(
        secret_dir / "oauth2-proxy.env",
        f"OAUTH2_PROXY_CLIENT_SECRET={secrets.token_urlsafe(24)}\n"
        f"OAUTH2_PROXY_COOKIE_SECRET={secrets.token_urlsafe(24)}\n",
    )
    shutil.copy(REPO / "examples" / "welcome.toml", compose_dir / "course.toml")
    https_port = free_port()
    venv = openwebui.ensure_installed()
    (compose_dir / "test-override.yaml").write_text(
        override(https_port, venv.parent.parent), encoding="utf-8"
    )
    return Project(podman, directory, https_port, tls, log_dir)


def wait_for(check: Callable[[], T | None], what: str, timeout: float, project: Project) -> T:
    """Poll ``check()`` until it returns a value; on timeout, fail with the logs kept."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(1)
    project.keep_logs()
    raise AssertionError(f"no {what} within {timeout:.0f} s; logs in {project.log_dir}")
