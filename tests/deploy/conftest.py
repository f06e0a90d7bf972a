"""Fixtures for the deployment-kit tests: a test CA and certificate, nginx, the proxy."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import trustme

from tests.conftest import IN_CI
from tests.deploy.edge import REPO, SERVER_NAME, nginx_binary
from tests.deploy.podman import CONTAINERFILE, OWUI_GATE_IMAGE, Podman, PodmanUnavailable


def refuse(reason: str) -> NoReturn:
    """A tier that cannot run here: a failure under CI=true, a skip on a developer machine."""
    if IN_CI:
        pytest.fail(f"cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class TestTLS:
    """A trustme CA and a server certificate for ``SERVER_NAME``, written to files."""

    __test__ = False  # not a test class, despite the name

    ca: trustme.CA
    cert: Path
    key: Path
    ca_pem: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def make_tls(directory: Path, server_name: str = SERVER_NAME) -> TestTLS:
    ca = trustme.CA()
    server = ca.issue_cert(server_name)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca_pem = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(key))
    server.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server.cert_chain_pems[1:]:
        with cert.open("ab") as out:
            out.write(extra.bytes())
    ca.cert_pem.write_to_path(str(ca_pem))
    key.chmod(0o600)
    return TestTLS(ca, cert, key, ca_pem)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestTLS:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """Debian's nginx; without it the nginx tier cannot run (a failure under CI=true)."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    return binary


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """Podman with the private set-up of scripts/lib.sh, held by this session alone."""
    try:
        found = Podman.find()
    except PodmanUnavailable as exc:
        refuse(str(exc))
    with found.exclusive():
        yield found


@pytest.fixture(scope="session")
def owui_gate_image(podman: Podman) -> str:
    """The owui-gate image, built from deploy/container/Containerfile (layers cached)."""
    podman.build(OWUI_GATE_IMAGE, CONTAINERFILE, REPO)
    return OWUI_GATE_IMAGE
