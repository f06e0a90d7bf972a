"""Fixtures of the e2e tier: a real OpenWebUI and every owui-gate piece as a real process.

The release is 0.12.4 unless ``$OWUI_GATE_OPENWEBUI_VERSION`` names another; the tests about
OpenWebUI's behaviour are marked ``openwebui`` (:data:`OPENWEBUI_BEHAVIOUR`), and
``scripts/compat`` runs those against several releases (docs/compatibility.md).

One OpenWebUI for the whole session (it takes 15-60 s to start), built by the same
:class:`demo.stack.Stack` the demo uses: the model server, then OpenWebUI (installed into the
cache folder on first use) whose first account is an operator admin created by the harness,
so no test user is ever an admin. The proxy, the webhook receiver and the demo IdP are started
from their console scripts in the project venv by the fixtures that need them. Tests isolate
themselves with fresh emails.

A missing piece is an error, never a skip: under ``CI=true`` nothing may skip, and locally a
silently skipped e2e tier proves nothing either. Logs of every process are kept under
``artifacts/e2e/latest/stack/logs`` for post-mortems.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from demo import openwebui
from demo.stack import Stack, StackConfig, StackError, child_environment, console_script
from proxy.openwebui_release import assess

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS_ROOT = REPO / "artifacts" / "e2e"
# One folder per test session (sessions in the same clone may overlap: several people or
# agents at once); `latest` points at the newest. Folders of sessions that ended are pruned.
ARTIFACTS = ARTIFACTS_ROOT / f"session-{os.getpid()}"
COURSE_FILE = Path(__file__).with_name("course.toml")
COURSE: dict[str, Any] = tomllib.loads(COURSE_FILE.read_text(encoding="utf-8"))
# Served by the receiver next to COURSE: only users in its group get it (first-sign-in tests).
GROUP_COURSE_FILE = Path(__file__).with_name("course-year9.toml")
GROUP_COURSE: dict[str, Any] = tomllib.loads(GROUP_COURSE_FILE.read_text(encoding="utf-8"))
OPERATOR_EMAIL = "operator@example.com"
# OpenWebUI honours these only when configured; the e2e OpenWebUI is, so that a groups or role
# header leaking through the proxy would be an observable escalation, not a silently ignored one.
OPENWEBUI_EXTRA = {
    "WEBUI_AUTH_TRUSTED_GROUPS_HEADER": "X-User-Groups",
    "WEBUI_AUTH_TRUSTED_ROLE_HEADER": "X-User-Role",
}
STAFF_GROUP = "staff"
# The modules about OpenWebUI's own behaviour (marked ``openwebui``): what scripts/compat runs
# against each release. Not the harness's install machinery, the demo or the OIDC chain.
OPENWEBUI_BEHAVIOUR = (
    "test_release.py",
    "test_provisioning.py",
    "test_webhook.py",
    "test_spoofing.py",
    "test_api_keys.py",
    "test_internal_listener.py",
    "test_internal_guard.py",
    "test_socketio_guard.py",
    "test_streaming.py",
    "test_browser.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "openwebui: about OpenWebUI's behaviour; scripts/compat runs these per release"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in OPENWEBUI_BEHAVIOUR:
            item.add_marker(pytest.mark.openwebui)


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Model server + OpenWebUI + the operator admin (and a 'staff' group for leak checks)."""
    _prune_old_sessions()
    state = ARTIFACTS / "stack"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    latest = ARTIFACTS_ROOT / "latest"
    with contextlib.suppress(OSError):  # another session may be repointing it right now
        latest.unlink(missing_ok=True)
        latest.symlink_to(ARTIFACTS.name)
    config = StackConfig(
        state_dir=state,
        public_port=0,
        course=COURSE_FILE,
        extra_courses=(GROUP_COURSE_FILE,),
        operator_email=OPERATOR_EMAIL,
        token_delay=0.1,
        openwebui_env=OPENWEBUI_EXTRA,
    )
    the_stack = Stack(config)
    problem = None
    try:
        the_stack.prepare()
        the_stack.start_model_server()
        the_stack.start_openwebui()
        response = httpx.post(
            f"{owui_url(the_stack)}/api/v1/groups/create",
            headers=operator_headers(the_stack),
            # Explicit permissions: 0.6.13 and older (scripts/compat) crash signing in a member
            # of a group whose permissions are null.
            json={
                "name": STAFF_GROUP,
                "description": "must never be joined through a header",
                "permissions": {},
            },
            timeout=30,
        )
        response.raise_for_status()
    except (StackError, openwebui.OpenWebUIError, httpx.HTTPError) as exc:
        problem = f"the e2e harness could not start OpenWebUI: {exc}"
    except BaseException:  # Ctrl-C while starting: leave nothing running
        the_stack.stop()
        raise
    if problem is not None:  # failed outside the except block: one clear message, no chain
        the_stack.stop()
        fail(problem)
    yield the_stack
    the_stack.stop()


def _prune_old_sessions() -> None:
    """Remove the artifacts of earlier sessions whose process is gone."""
    for folder in ARTIFACTS_ROOT.glob("session-*"):
        pid = folder.name.removeprefix("session-")
        if folder == ARTIFACTS or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue  # alive, someone else's


def _run_service(the_stack: Stack, key: str, start: Callable[[], None]) -> Iterator[Stack]:
    problem = None
    try:
        start()
    except StackError as exc:
        problem = f"could not start {key}: {exc}"
    if problem is not None:
        fail(problem)
    yield the_stack
    service = the_stack.services.pop(key, None)
    if service is not None:
        service.stop()


@pytest.fixture(scope="session")
def proxy(stack: Stack) -> Iterator[Stack]:
    """``owui-proxy`` in forward-auth mode to the demo IdP, with the internal listener.

    Against a release the proxy refuses by design (scripts/compat runs old ones), the tests
    needing it are skipped with that reason; test_release.py checks that the refusal is
    right for this release. The pinned release is never refused: CI (no skips) proves it.
    """
    config = httpx.get(f"{owui_url(stack)}/api/config", timeout=30).json()
    refusal = assess(config).refusal
    if refusal is not None:
        pytest.skip(f"the proxy refuses this release by design: {refusal}")
    yield from _run_service(stack, "proxy", stack.start_proxy)


@pytest.fixture(scope="session")
def webhook(proxy: Stack) -> Iterator[Stack]:
    """``owui-provision webhook`` with the e2e course, acting through the internal listener."""
    yield from _run_service(proxy, "webhook", proxy.start_webhook)


@pytest.fixture(scope="session")
def gate(webhook: Stack) -> Iterator[Stack]:
    """Everything: proxy, webhook receiver and ``owui-demo-idp`` (which signs up new users)."""
    yield from _run_service(webhook, "idp", webhook.start_idp)


# --- helpers ----------------------------------------------------------------------------------


def owui_url(the_stack: Stack) -> str:
    assert the_stack.openwebui is not None
    return the_stack.openwebui.url


def operator_headers(the_stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {the_stack.operator_token}"}


def fresh_email(prefix: str = "student") -> str:
    """An email no other test (or earlier run on this OpenWebUI) has used."""
    return f"{prefix}-{secrets.token_hex(5)}@example.com"


def find_user(the_stack: Stack, email: str) -> dict[str, Any] | None:
    """The OpenWebUI user with this email, asked as the operator (admin); None if absent."""
    response = httpx.get(
        f"{owui_url(the_stack)}/api/v1/users/",
        params={"query": email},
        headers=operator_headers(the_stack),
        timeout=30,
    )
    response.raise_for_status()
    matches = [u for u in response.json()["users"] if u["email"] == email.lower()]
    return matches[0] if matches else None


def direct_token(the_stack: Stack, email: str) -> str:
    """A user's OpenWebUI token, by signing in directly (creates the user if missing)."""
    return str(openwebui.sign_in(owui_url(the_stack), email)["token"])


def direct_client(the_stack: Stack, email: str) -> httpx.Client:
    """A client talking to OpenWebUI directly as ``email``: the tests' independent view."""
    token = direct_token(the_stack, email)
    return httpx.Client(
        base_url=owui_url(the_stack),
        headers={"Authorization": f"Bearer {token}", "X-User-Email": email},
        timeout=30,
    )


def archived_chats(the_stack: Stack, email: str) -> list[dict[str, Any]]:
    """Every archived chat of ``email`` with its full content, seen directly in OpenWebUI."""
    chats: list[dict[str, Any]] = []
    with direct_client(the_stack, email) as client:
        page = 1
        while True:
            response = client.get("/api/v1/chats/archived", params={"page": page})
            response.raise_for_status()
            batch = response.json()
            if not batch:
                break
            chats.extend(batch)
            page += 1
        full = []
        for chat in chats:
            response = client.get(f"/api/v1/chats/{chat['id']}")
            response.raise_for_status()
            full.append(response.json())
    return full


def first_message(chat: dict[str, Any]) -> dict[str, Any]:
    """The root message of a chat's history (the one without a parent)."""
    messages = chat["chat"]["history"]["messages"]
    roots = [m for m in messages.values() if m.get("parentId") is None]
    assert len(roots) == 1, f"chat {chat['id']} has {len(roots)} root messages"
    root: dict[str, Any] = roots[0]
    return root


def module_of(title: str) -> dict[str, Any] | None:
    """The e2e course module whose title a chat title shows (the provisioner may append a tag)."""
    for module in COURSE["modules"]:
        if title == module["title"] or title.startswith(module["title"] + " "):
            return dict(module)
    return None


def assert_course_threads(the_stack: Stack, email: str) -> None:
    """Exactly one archived thread per module of the e2e course, each opening with its text."""
    chats = archived_chats(the_stack, email)
    by_module: dict[str, list[dict[str, Any]]] = {}
    for chat in chats:
        module = module_of(chat["title"])
        assert module is not None, f"unexpected archived chat {chat['title']!r} for {email}"
        by_module.setdefault(module["id"], []).append(chat)
    counts = {m["id"]: len(by_module.get(m["id"], [])) for m in COURSE["modules"]}
    assert counts == {m["id"]: 1 for m in COURSE["modules"]}, f"threads per module for {email}"
    for module in COURSE["modules"]:
        (chat,) = by_module[module["id"]]
        assert chat["archived"] is True
        first = first_message(chat)
        assert first["role"] == "assistant"
        assert first["content"] == module["first_message"]


def provision(
    the_stack: Stack, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``owui-provision ARGS`` against the stack's internal listener (``env``: more
    ``OWUI_PROVISION_*`` settings)."""
    return subprocess.run(
        [str(console_script("owui-provision")), *args],
        env=child_environment({**the_stack.provision_env(), **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Browserless:
    """A user signed in at the demo IdP, talking to the proxy's public listener with httpx."""

    email: str
    client: httpx.Client  # base_url = the proxy, carries the IdP session cookie
    token: str  # the user's OpenWebUI token, obtained through the proxy

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __enter__(self) -> httpx.Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def idp_login(the_stack: Stack, email: str, name: str | None = None) -> httpx.Cookies:
    """Sign in at the demo IdP's login form like a browser; return the session cookies."""
    with httpx.Client(base_url=the_stack.idp_url, timeout=30) as client:
        form = {"email": email, "name": name or email.split("@")[0]}
        response = client.post("/login", data={**form, "rd": the_stack.public_url + "/"})
        assert response.status_code in (302, 303), (response.status_code, response.text[:300])
        return client.cookies


def sign_in_through_proxy(the_stack: Stack, email: str, name: str | None = None) -> Browserless:
    """IdP login, then OpenWebUI's trusted-header sign-in through the public listener."""
    cookies = idp_login(the_stack, email, name)
    client = httpx.Client(base_url=the_stack.public_url, cookies=cookies, timeout=60)
    response = client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body = response.json()
    assert body["email"] == email.lower()
    # The sign-in also set OpenWebUI's token cookie; tests send the token explicitly instead.
    client.cookies.delete("token")
    return Browserless(email=email.lower(), client=client, token=str(body["token"]))


@pytest.fixture(scope="module")
def polling_gate(gate: Stack) -> Iterator[Stack]:
    """A second OpenWebUI with ``ENABLE_WEBSOCKET_SUPPORT=false`` (Socket.IO over HTTP
    long-polling only) and its own proxy, sharing ``gate``'s IdP and model server.

    Module-scoped: a module that needs it pays for one more OpenWebUI start (30-60 s).
    """
    config = StackConfig(
        state_dir=ARTIFACTS / "polling-stack",
        public_port=0,
        course=COURSE_FILE,
        operator_email=OPERATOR_EMAIL,
        openwebui_env={**OPENWEBUI_EXTRA, "ENABLE_WEBSOCKET_SUPPORT": "false"},
    )
    shutil.rmtree(config.state_dir, ignore_errors=True)
    second = Stack(config)
    problem = None
    try:
        second.prepare()
        second.model_url, second.idp_url = gate.model_url, gate.idp_url
        second.start_openwebui()
        second.start_proxy()
    except (StackError, openwebui.OpenWebUIError, httpx.HTTPError) as exc:
        problem = f"the e2e harness could not start the long-polling OpenWebUI: {exc}"
    except BaseException:
        second.stop()
        raise
    if problem is not None:
        second.stop()
        fail(problem)
    yield second
    second.stop()
