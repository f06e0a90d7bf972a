"""Podman for the container tier: the private set-up of scripts/lib.sh, local images only.

``ensure_podman`` in scripts/lib.sh installs podman, runc and mmdebstrap, writes podman's
configuration, storage and network folder under the cache folder
(``~/.cache/owui-gate/podman``), and makes the base image the Containerfile pins from
Debian. This module drives podman with that configuration and pulls nothing
(``--pull=never``): every image is built here, the owui-gate image from
``deploy/container/Containerfile`` and the stand-ins from ``tests/deploy/images/``. Builds
reuse podman's layer cache, so a rerun rebuilds only what changed.

One test session at a time uses it (:meth:`Podman.exclusive`): the compose project has fixed
names and subnets, and two runs on one machine (a developer's and CI's) would collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.openwebui import cache_dir
from tests.deploy.edge import REPO

CONTAINERFILE = REPO / "deploy" / "container" / "Containerfile"
IMAGES = REPO / "tests" / "deploy" / "images"
OWUI_GATE_IMAGE = "localhost/owui-gate:local"
BASE_LABEL = "owui-gate.base"
SETUP_HINT = "run scripts/test, or `. scripts/lib.sh && ensure_podman`"


class PodmanUnavailable(RuntimeError):
    """Podman or its private set-up is missing; the message says what and how to fix it."""


def base_image() -> str:
    """The image the Containerfile's first ``FROM`` pins, as podman stores it."""
    for line in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            return f"docker.io/library/{words[1]}"
    raise AssertionError(f"{CONTAINERFILE} has no FROM line")


@dataclass(frozen=True)
class Podman:
    directory: Path

    @classmethod
    def find(cls) -> Podman:
        """The set-up ``ensure_podman`` made, checked; :class:`PodmanUnavailable` if not."""
        directory = cache_dir() / "podman"
        if shutil.which("podman") is None:
            raise PodmanUnavailable(f"podman is not installed ({SETUP_HINT})")
        if os.geteuid() != 0:
            raise PodmanUnavailable("the container tier runs rootful podman: run it as root")
        for name in ("containers.conf", "storage.conf"):
            if not (directory / name).is_file():
                raise PodmanUnavailable(f"{directory / name} is missing ({SETUP_HINT})")
        podman = cls(directory)
        labels = podman.inspect("image", base_image()).get("Labels") or {}
        if BASE_LABEL not in labels:
            raise PodmanUnavailable(f"the base image {base_image()} is missing ({SETUP_HINT})")
        return podman

    def env(self) -> dict[str, str]:
        return os.environ | {
            "CONTAINERS_CONF": str(self.directory / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.directory / "storage.conf"),
        }

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``podman <kind> inspect NAME``'s object, or ``{}`` when there is none."""
        result = self(kind, "inspect", name, check=False)
        if result.returncode != 0:
            return {}
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found[0] if found else {}

    def build(self, tag: str, containerfile: Path, context: Path, timeout: float = 1800) -> None:
        """Build with the layer cache; ``--format docker`` keeps HEALTHCHECK (OCI drops it)."""
        self(
            "build",
            "--pull=never",
            "--format=docker",
            "--layers",
            "--file",
            str(containerfile),
            "--tag",
            tag,
            str(context),
            timeout=timeout,
        )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the machine's container tier (waits for another session to finish)."""
        with (self.directory / "tier.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
