"""A secret file anyone may write is refused like one anyone may read (review round 3b).

Whoever can write the internal listener's token file adds a token of their own and acts as
anyone after the next SIGHUP; the hook secret forges first-sign-in events; the session
secret and the pseudonym key are theirs to choose. Every loader goes through
proxy.secretfile, so each is checked here.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner.webhook import load_secrets
from proxy.eio_sessions import read_session_secret
from proxy.pseudonym import load_key
from proxy.secretfile import SecretFileError, read_secret_lines
from proxy.tokens import load_tokens
from proxy.webhooks import read_secret_file

WHSEC = "whsec_" + base64.b64encode(os.urandom(32)).decode()
LOADERS: list[tuple[str, Callable[[Path], Any], str]] = [
    ("tokens", load_tokens, "x" * 48),
    ("hook secret", read_secret_file, WHSEC),
    ("receiver secrets", load_secrets, WHSEC),
    ("pseudonym key", load_key, "k" * 48),
    ("session secret", read_session_secret, "s" * 48),
    ("secret lines", read_secret_lines, "x" * 48),
]


@pytest.mark.parametrize(("what", "load", "content"), LOADERS, ids=[r[0] for r in LOADERS])
@pytest.mark.parametrize("mode", [0o602, 0o622, 0o666 & ~0o004, 0o702])
def test_a_world_writable_secret_file_is_refused(tmp_path, what, load, content, mode) -> None:
    path = tmp_path / "secret"
    path.write_text(content + "\n", encoding="ascii")
    path.chmod(mode)
    with pytest.raises(Exception, match="world-writable") as caught:  # each has its own type
        load(path)
    assert "world-writable" in str(caught.value)
    assert str(path) in str(caught.value)
    assert content not in str(caught.value)


@pytest.mark.parametrize(("what", "load", "content"), LOADERS, ids=[r[0] for r in LOADERS])
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o440])
def test_a_private_secret_file_still_loads(tmp_path, what, load, content, mode) -> None:
    path = tmp_path / "secret"
    path.write_text(content + "\r\n", encoding="ascii")
    path.chmod(mode)
    assert load(path)


def test_the_error_type_is_the_module_s_own(tmp_path) -> None:
    path = tmp_path / "secret"
    path.write_text("x" * 48 + "\n", encoding="ascii")
    path.chmod(0o602)
    with pytest.raises(SecretFileError):
        read_secret_lines(path)
