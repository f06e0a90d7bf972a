"""A typo in OpenWebUI's environment stops the proxy, against a real OpenWebUI 0.12.4.

A second OpenWebUI is started the way an operator with a typo would start it: the trusted
header's variable misspelt (``WEBUI_AUTH_TRUSTED_EMAIL_HEADR``), the real one empty. It then
runs its own password sign-in and ignores the identity the proxy injects. The test first
shows that on the real server (its ``/api/config`` says so, and a trusted-header sign-in is
not honoured), then that ``owui-proxy`` refuses to start against it: exit 2, the setting to
fix named on stderr. Before, the proxy started and relayed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from demo import openwebui
from demo.stack import child_environment, console_script
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def misconfigured() -> Iterator[openwebui.OpenWebUI]:
    state = ARTIFACTS / "misconfigured-openwebui"
    webui = openwebui.start(
        data_dir=state / "data",
        log_path=state / "openwebui.log",
        extra_env={
            "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": "",
            "WEBUI_AUTH_TRUSTED_EMAIL_HEADR": openwebui.EMAIL_HEADER,  # the typo
        },
    )
    try:
        webui.wait_healthy()
        yield webui
    finally:
        webui.stop()


def test_openwebui_with_a_misspelt_trusted_header_ignores_the_injected_identity(
    misconfigured: openwebui.OpenWebUI,
) -> None:
    config = httpx.get(f"{misconfigured.url}/api/config", timeout=30).json()
    assert config["features"]["auth_trusted_header"] is False
    signin = httpx.post(
        f"{misconfigured.url}/api/v1/auths/signin",
        headers={openwebui.EMAIL_HEADER: "ada@example.edu"},
        json={"email": "", "password": ""},
        timeout=30,
    )
    assert signin.status_code != 200, signin.text[:300]  # a password sign-in, refused


def test_the_proxy_refuses_to_start_against_it(misconfigured: openwebui.OpenWebUI) -> None:
    env = child_environment(
        {
            "OWUI_PROXY_UPSTREAM": misconfigured.url,
            "OWUI_PROXY_LISTEN": f"127.0.0.1:{openwebui.free_port()}",
            "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{openwebui.free_port()}",
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{misconfigured.url}/health",
        }
    )
    done = subprocess.run(
        [str(console_script("owui-proxy"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not in trusted-header mode" in done.stderr
    assert "WEBUI_AUTH_TRUSTED_EMAIL_HEADER" in done.stderr
