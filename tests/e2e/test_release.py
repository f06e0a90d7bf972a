"""The release policy (``proxy/openwebui_release.py``) against the real OpenWebUI running here.

Each test first finds out how this release really behaves, directly and without the proxy,
then checks that owui-gate does the right thing about it. On the pinned release (CI) that is
"serve, no trap"; ``scripts/compat`` runs the same tests on older releases, where the answers
differ (docs/compatibility.md):

- a release without the "User mismatch" check answers another user's token as that user;
  the proxy must then refuse to start (exit 2, the reason on stderr), and serve otherwise;
- the Socket.IO guard's token check holds either way: it compares whose the token is itself;
- a release that refuses new trusted-header users while sign-ups are off (before 0.8.0) is
  detected from ``/api/config`` exactly when it really does so, and ``owui-provision check``
  names it with the fix;
- with the fix (sign-ups on) password sign-up still cannot be reached through the proxy.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from demo import openwebui
from demo.stack import Stack, child_environment, console_script
from proxy.headers import HeaderPolicy
from proxy.identity import Identity
from proxy.openwebui_release import assess, signup_trap
from proxy.owners import Owners
from proxy.settings import Settings
from proxy.socketio import TokenGuard
from proxy.upstream import Upstream
from tests.e2e.conftest import (
    OPERATOR_EMAIL,
    direct_token,
    find_user,
    fresh_email,
    idp_login,
    operator_headers,
    owui_url,
    provision,
)

pytestmark = pytest.mark.e2e


def _config(the_stack: Stack) -> dict[str, Any]:
    config: dict[str, Any] = httpx.get(f"{owui_url(the_stack)}/api/config", timeout=30).json()
    return config


def _answers_anothers_token(the_stack: Stack) -> bool:
    """Does OpenWebUI answer the operator's token as the operator, with a student's email
    header alongside? (Releases with the "User mismatch" check say 401.)"""
    student = fresh_email()
    direct_token(the_stack, student)  # the student exists
    response = httpx.get(
        f"{owui_url(the_stack)}/api/v1/auths/",
        headers={**operator_headers(the_stack), openwebui.EMAIL_HEADER: student},
        timeout=30,
    )
    if response.status_code == 401:
        return False
    assert response.status_code == 200, response.text[:300]
    assert response.json()["email"] == OPERATOR_EMAIL  # answered as the token's user
    return True


def _free_listen() -> str:
    return f"127.0.0.1:{openwebui.free_port()}"


def test_the_proxy_serves_this_release_only_if_openwebui_checks_whose_a_token_is(
    stack: Stack,
) -> None:
    fails_open = _answers_anothers_token(stack)
    admin = _free_listen()
    env = child_environment(
        {
            "OWUI_PROXY_UPSTREAM": owui_url(stack),
            "OWUI_PROXY_LISTEN": _free_listen(),
            "OWUI_PROXY_ADMIN_LISTEN": admin,
            "OWUI_PROXY_AUTH": "forward",
            # Any server that answers below 500 passes /readyz's auth-service probe; this
            # test is about the release, so OpenWebUI's own /health stands in for one.
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{owui_url(stack)}/health",
        }
    )
    process = subprocess.Popen(
        [str(console_script("owui-proxy"))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if fails_open:
            _out, err = process.communicate(timeout=60)
            assert process.returncode == 2, err
            version = _config(stack)["version"]
            assert f"OpenWebUI {version} has no 'User mismatch' check" in err
            return
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://{admin}/readyz", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if ready.status_code == 200:
                break
            time.sleep(0.2)
        assert ready is not None, process.communicate(timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=30)


def test_the_socketio_guard_compares_whose_a_token_is_itself(stack: Stack) -> None:
    """In-process against the real OpenWebUI: no reliance on its mismatch check."""
    student = fresh_email()
    student_token = direct_token(stack, student)
    settings = Settings(
        upstream=owui_url(stack),
        auth="forward",
        forward_auth_url="http://127.0.0.1:9/oauth2/auth",
    )

    async def check() -> tuple[bool, bool]:
        upstream = Upstream.open(settings)
        try:
            guard = TokenGuard(Owners(upstream, HeaderPolicy.from_settings(settings)))
            identity = Identity(email=student)
            anothers = await guard.belongs(stack.operator_token, identity)
            own = await guard.belongs(student_token, identity)
            return anothers, own
        finally:
            await upstream.close()

    anothers, own = asyncio.run(check())
    assert (anothers, own) == (False, True)


@contextmanager
def _signups(the_stack: Stack, enabled: bool) -> Iterator[None]:
    """OpenWebUI's ENABLE_SIGNUP set to ``enabled`` for the block, then put back."""
    url = f"{owui_url(the_stack)}/api/v1/auths/admin/config"
    headers = operator_headers(the_stack)
    before = httpx.get(url, headers=headers, timeout=30)
    before.raise_for_status()
    saved = before.json()
    httpx.post(url, headers=headers, json={**saved, "ENABLE_SIGNUP": enabled}, timeout=30)
    try:
        yield
    finally:
        httpx.post(url, headers=headers, json=saved, timeout=30).raise_for_status()


def test_the_signup_trap_is_detected_exactly_when_it_is_real(proxy: Stack) -> None:
    with _signups(proxy, enabled=False):
        config = _config(proxy)
        newcomer = fresh_email()
        response = httpx.post(
            f"{owui_url(proxy)}/api/v1/auths/signin",
            headers={openwebui.EMAIL_HEADER: newcomer},
            json={"email": "", "password": ""},
            timeout=30,
        )
        trapped = response.status_code == 403
        assert trapped or response.status_code == 200, response.text[:300]
        assert signup_trap(config) is trapped
        check = provision(proxy, "check")
        assert (check.returncode != 0) is trapped, check.stdout + check.stderr
        assert ("refuses the trusted-header sign-in of new users" in check.stdout) is trapped
        if trapped:
            assert "fix: as the OpenWebUI admin, turn on" in check.stdout
            warnings = assess(config).warnings
            assert any("Enable New Sign Ups" in warning for warning in warnings)
    # The harness applied the fix on such a release (sign-ups on): new users sign in, and
    # owui-provision check is content.
    check = provision(proxy, "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_password_signup_stays_closed_through_the_proxy_with_signups_on(gate: Stack) -> None:
    email, direct = fresh_email("signup"), fresh_email("signup-direct")
    form = {"password": "Passw0rd!x", "name": "Sneaky"}
    with _signups(gate, enabled=True):
        # The door is open at OpenWebUI itself (which only the proxy can reach in production).
        opened = httpx.post(
            f"{owui_url(gate)}/api/v1/auths/signup", json={**form, "email": direct}, timeout=30
        )
        assert opened.status_code == 200, opened.text[:300]
        cookies = idp_login(gate, fresh_email())
        with httpx.Client(base_url=gate.public_url, cookies=cookies, timeout=30) as client:
            response = client.post("/api/v1/auths/signup", json={**form, "email": email})
        assert response.status_code == 403, response.text[:300]
        assert find_user(gate, email) is None
