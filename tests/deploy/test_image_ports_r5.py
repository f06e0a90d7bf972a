"""The owui-gate image declares the public listener's port only.

``EXPOSE`` is what ``docker run -P`` / ``podman run -P`` (and tools that map "all exposed
ports") publish, on every address of the host. The image also declared the internal act-as
listener's port (8001) and the admin listener's (9000). With the listeners on 0.0.0.0, as in
the Kubernetes base's ConfigMap, ``-P`` put the act-as listener and the unauthenticated
/metrics on the host's public interfaces, where the docs say nothing but nginx or the
monitoring network reaches them. Run with real podman on the image built from
deploy/container/Containerfile.
"""

from __future__ import annotations

import secrets

import pytest

from tests.deploy.podman import Podman

pytestmark = pytest.mark.podman

PUBLIC = "8000/tcp"


def test_the_image_declares_only_the_public_port(podman: Podman, owui_gate_image: str) -> None:
    config = podman.inspect("image", owui_gate_image).get("Config") or {}
    assert set(config.get("ExposedPorts") or {}) == {PUBLIC}


def test_publish_all_publishes_only_the_public_listener(
    podman: Podman, owui_gate_image: str
) -> None:
    name = f"owgt-ports-{secrets.token_hex(4)}"
    podman(
        "run", "-d", "--rm", "--name", name, "-P",
        "-e", "OWUI_PROXY_INTERNAL_LISTEN=0.0.0.0:8001",
        "-e", "OWUI_PROXY_ADMIN_LISTEN=0.0.0.0:9000",
        owui_gate_image, "python", "-c", "import time; time.sleep(60)",
    )  # fmt: skip
    try:
        published = podman("port", name).stdout.splitlines()
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
    assert [line.split(" -> ")[0] for line in published] == [PUBLIC], published
