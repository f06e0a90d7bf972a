"""The provisioner through the real internal listener (``proxy.internal``) to the fake.

What the provisioner sends must pass the proxy's own checks: its service token, its
allowlist on the raw target (query strings such as ``query=[demo/intro]`` included), its
identity validation of the act-as email and percent-encoded name; and the proxy's refusals
must come back as the provisioner's clear errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from provisioner.check import run_checks
from provisioner.client import OpenWebUI, Transport, make_http_client
from provisioner.course import Course
from provisioner.errors import (
    ActAsDenied,
    AdminAccount,
    EndpointNotAllowed,
    PublicListener,
    ServiceTokenRefused,
)
from provisioner.provision import Provisioner
from provisioner.settings import Settings
from provisioner.threads import MARKER_KEY, build_chat, tag
from provisioner.webhook import create_app
from proxy.app import create_app as create_public_app
from proxy.internal import create_internal_app
from proxy.settings import DEFAULT_INTERNAL_ALLOW
from proxy.settings import Settings as ProxySettings
from proxy.upstream import Upstream
from tests.fakes import FakeAuthService
from tests.provisioner.cli_helpers import finish, start
from tests.provisioner.conftest import CLOCK_SPEED
from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI, FastClock
from tests.provisioner.test_webhook import KEY, NOW, headers

EMAIL = "ada@example.edu"

MakeListener = Callable[..., Any]


@pytest.fixture
def bare_fake(clock: FastClock) -> FakeOpenWebUI:
    owui = FakeOpenWebUI(listener=False, clock=clock)
    owui.add_user("admin@example.edu", role="admin")
    return owui


@pytest.fixture
async def listener(
    bare_fake: FakeOpenWebUI, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[MakeListener]:
    """Start the real internal listener in front of the fake; returns provisioner settings."""
    upstreams: list[Upstream] = []
    owui: TestServer = await aiohttp_server(bare_fake.app(), host="127.0.0.1")
    tokens = tmp_path / "internal-tokens"
    tokens.write_text(f"# provisioner\n{SERVICE_TOKEN}\n", encoding="utf-8")
    tokens.chmod(0o600)
    mine = tmp_path / "provision-token"

    async def make(
        token: str = SERVICE_TOKEN,
        allow: tuple[str, ...] = DEFAULT_INTERNAL_ALLOW,
        domains: tuple[str, ...] = (),
    ) -> Settings:
        proxy_settings = ProxySettings(
            upstream=f"http://127.0.0.1:{owui.port}",
            auth="forward",
            forward_auth_url="http://127.0.0.1:9/oauth2/auth",
            internal_listen="127.0.0.1:8001",
            internal_tokens_file=tokens,
            internal_allow=allow,
            allowed_email_domains=domains,
        )
        upstream = Upstream.open(proxy_settings)
        upstreams.append(upstream)
        server = await aiohttp_server(
            create_internal_app(proxy_settings, upstream), host="127.0.0.1"
        )
        mine.write_text(token + "\n", encoding="utf-8")
        mine.chmod(0o600)
        return Settings(
            url=f"http://127.0.0.1:{server.port}",
            token_file=mine,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )

    yield make
    for upstream in upstreams:
        await upstream.close()


async def provision(
    settings: Settings, course: Course, name: str | None = None, email: str = EMAIL
) -> list[Any]:
    token = settings.token_file.read_text(encoding="utf-8").strip()
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, token, http))
        sleep = FastClock(CLOCK_SPEED).sleep  # the fake's clock runs at this speed too
        return await Provisioner(api, settings, sleep=sleep).provision_user([course], email, name)


async def test_provisioning_through_the_real_listener(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course
) -> None:
    settings = await listener()
    first = await provision(settings, course, "Zoë Ångström")
    again = await provision(settings, course)

    assert [r.status for r in first] == ["created", "created"]
    assert [r.status for r in again] == ["existing", "existing"]
    assert bare_fake.users[EMAIL].name == "Zoë Ångström"
    assert sorted((c.title, c.archived) for c in bare_fake.chats_of(EMAIL)) == [
        (f"Module 1: Intro {tag('demo', 'intro', 'hidden')}", True),
        (f"Module 2: Next {tag('demo', 'next', 'hidden')}", True),
    ]
    # One look at every chat of the user, whole, through the listener's default allowlist.
    assert bare_fake.count("GET", "/api/v1/chats/all") >= 2


async def test_an_admin_is_refused_as_such_and_gets_nothing(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course
) -> None:
    """The listener withholds admins' tokens; the provisioner says so, not 'allowlist'."""
    settings = await listener()
    with pytest.raises(AdminAccount, match=r"admin@example\.edu is an OpenWebUI admin"):
        await provision(settings, course, email="admin@example.edu")
    assert bare_fake.chats_of("admin@example.edu") == []


async def test_webhook_for_an_admin_is_2xx_skipped_so_the_sender_stops_retrying(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course, aiohttp_client: Any
) -> None:
    settings = await listener()
    token = settings.token_file.read_text(encoding="utf-8").strip()
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, token, http))
        provisioner = Provisioner(api, settings, sleep=FastClock(CLOCK_SPEED).sleep)
        client = await aiohttp_client(
            create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
        )
        body = json.dumps({"email": "admin@example.edu"}).encode()
        response = await client.post("/webhooks/signup", data=body, headers=headers(body))
        assert response.status == 200
        assert "never acts as admin accounts" in (await response.json())["skipped"]
    assert bare_fake.chats_of("admin@example.edu") == []


async def test_webhook_for_someone_the_access_rules_refuse_is_2xx_skipped(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course, aiohttp_client: Any
) -> None:
    """A retry can never succeed (the rules refuse the email): the sender is told to stop,
    with the reason, and nobody is created."""
    settings = await listener(domains=("school.edu",))
    token = settings.token_file.read_text(encoding="utf-8").strip()
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, token, http))
        provisioner = Provisioner(api, settings, sleep=FastClock(CLOCK_SPEED).sleep)
        client = await aiohttp_client(
            create_app([course], (KEY,), provisioner, deadline_s=5, clock=lambda: NOW)
        )
        body = json.dumps({"email": EMAIL}).encode()
        response = await client.post("/webhooks/signup", data=body, headers=headers(body))
        assert response.status == 200
        answer = await response.json()
        assert "OWUI_PROXY_ALLOWED_EMAIL_DOMAINS" in answer["skipped"]
    assert bare_fake.users.get(EMAIL) is None


async def test_a_refused_service_token(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course
) -> None:
    settings = await listener(token="not-the-token-" + "x" * 30)
    with pytest.raises(ServiceTokenRefused, match="OWUI_PROXY_INTERNAL_TOKENS_FILE"):
        await provision(settings, course)
    assert bare_fake.calls == []


async def test_an_endpoint_the_listener_does_not_allow(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course
) -> None:
    allow = tuple(rule for rule in DEFAULT_INTERNAL_ALLOW if not rule.startswith("DELETE"))
    settings = await listener(allow=allow)
    user = bare_fake.add_user(EMAIL)
    ids = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b")
    for chat_id in ids:
        bare_fake.add_chat(
            user, build_chat(course, course.modules[0]), created_at=1, chat_id=chat_id
        )
    with pytest.raises(
        EndpointNotAllowed,
        match=rf"DELETE /api/v1/chats/{ids[1]} \(403: refused by the internal allowlist",
    ):
        await provision(settings, course)
    assert set(bare_fake.chats) == set(ids)


async def test_a_person_outside_the_allowed_domains_is_named_with_the_right_setting(
    listener: MakeListener, bare_fake: FakeOpenWebUI, course: Course
) -> None:
    """The access rule refuses the email, not the endpoint: the advice names the domain
    setting, never the endpoint allowlist."""
    settings = await listener(domains=("school.edu",))
    with pytest.raises(ActAsDenied) as info:
        await provision(settings, course)
    message = str(info.value)
    assert "the proxy refuses to act as ada@example.edu" in message
    assert "is not in an allowed domain (school.edu)" in message
    assert "add their domain to OWUI_PROXY_ALLOWED_EMAIL_DOMAINS" in message
    assert "add it to the proxy's OWUI_PROXY_INTERNAL_ALLOW" not in message
    assert bare_fake.users.get(EMAIL) is None


@pytest.fixture
async def public_listener(bare_fake: FakeOpenWebUI, aiohttp_server: Any) -> str:
    """The proxy's real public listener in front of the fake, with a forward-auth service
    that knows nobody: the URL an operator might give the provisioner by mistake."""
    owui: TestServer = await aiohttp_server(bare_fake.app(), host="127.0.0.1")
    auth: TestServer = await aiohttp_server(FakeAuthService().app(), host="127.0.0.1")
    public_settings = ProxySettings(
        upstream=f"http://127.0.0.1:{owui.port}",
        auth="forward",
        forward_auth_url=f"http://127.0.0.1:{auth.port}/oauth2/auth",
    )
    server: TestServer = await aiohttp_server(create_public_app(public_settings), host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def test_the_public_listener_is_named_as_such_not_blamed_on_openwebui(
    public_listener: str, bare_fake: FakeOpenWebUI, course: Course, tmp_path: Path
) -> None:
    token_file = tmp_path / "provision-token"
    token_file.write_text(SERVICE_TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    settings = Settings(url=public_listener, token_file=token_file, max_attempts=1)
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        stranger = OpenWebUI(Transport(settings, "not-the-token-" + "x" * 30, http))
        findings = await run_checks(api, public_listener, stranger)
        with pytest.raises(PublicListener, match="OWUI_PROXY_INTERNAL_LISTEN"):
            await Provisioner(api, settings).provision_user([course], EMAIL)
    assert [(f.ok, f.what.split(" (")[0]) for f in findings] == [
        (False, f"{public_listener} is the proxy's public listener, not its internal one")
    ]
    assert "OpenWebUI" not in findings[0].what.replace("OpenWebUI was not asked", "")
    assert "OWUI_PROXY_INTERNAL_LISTEN" in findings[0].fix
    assert bare_fake.users.get(EMAIL) is None


async def test_check_finds_a_url_that_answers_without_the_service_token(
    bare_fake: FakeOpenWebUI, aiohttp_server: Any, tmp_path: Path
) -> None:
    """OpenWebUI itself (no proxy in front) answers any token: check says it is not the
    internal listener."""
    owui: TestServer = await aiohttp_server(bare_fake.app(), host="127.0.0.1")
    url = f"http://127.0.0.1:{owui.port}"
    settings = Settings(url=url, token_file=tmp_path / "unused", max_attempts=1)
    async with make_http_client(settings) as http:
        api = OpenWebUI(Transport(settings, SERVICE_TOKEN, http))
        stranger = OpenWebUI(Transport(settings, "not-the-token-" + "x" * 30, http))
        findings = await run_checks(api, url, stranger)
    failed = [f for f in findings if not f.ok]
    assert [f.what for f in failed] == [
        f"{url} answered a call with a wrong service token: it is not the proxy's internal "
        "listener (OpenWebUI itself?)"
    ]


async def test_concurrent_processes_through_the_real_listener(
    listener: MakeListener, bare_fake: FakeOpenWebUI, env: dict[str, str], course_file: Path
) -> None:
    settings = await listener()
    env |= {
        "OWUI_PROVISION_URL": settings.url,
        "OWUI_PROVISION_TOKEN_FILE": str(settings.token_file),
    }
    bare_fake.slow("POST", "/api/v1/chats/new", 0.2)
    processes = [await start(env, "user", str(course_file), EMAIL) for _ in range(4)]
    results = await asyncio.gather(*(finish(p) for p in processes))

    assert [r.rc for r in results] == [0, 0, 0, 0], [r.err for r in results]
    for module in ("intro", "next"):
        found = [c for c in bare_fake.chats_of(EMAIL) if c.chat[MARKER_KEY]["module"] == module]
        assert [c.archived for c in found] == [True]
