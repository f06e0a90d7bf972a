"""deploy/compose/compose.yaml, brought up with podman-compose and used through nginx.

The whole shipped topology runs (tests/deploy/compose_project.py says how): Debian's nginx
with the shipped site config, the owui-gate proxy and webhook receiver from the image built
out of deploy/container/, the real OpenWebUI 0.12.4, Debian's squid as the egress proxy, and
a stand-in for oauth2-proxy, the one piece that cannot be installed here: it speaks
oauth2-proxy's /oauth2/ contract (forward-auth answers, login start, callback, sign-out)
with a form in place of the identity provider.

- A new user signs in through nginx and the proxy (the login pages served under /oauth2/ on
  the chat host) and finds their course threads: the proxy's first-sign-in hook reached the
  receiver, which provisioned through the internal listener.
- OpenWebUI, the internal and admin listeners and the receiver answer inside the proxy's
  network namespace only: not from the host, not from another container on any network the
  namespace is on. The proxy's public listener is the one port that answers there.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.deploy import clients
from tests.deploy.compose_project import (
    SERVER_NAME,
    Project,
    build_images,
    prepare,
    wait_for,
)
from tests.deploy.edge import REPO
from tests.deploy.podman import Podman, base_image

pytestmark = [pytest.mark.podman, pytest.mark.e2e]

OPERATOR = "operator@example.edu"
PRIVATE_PORTS = (8080, 8001, 9000, 8090)  # OpenWebUI, internal, admin, webhook receiver
PUBLIC_PORT = 8000
PAGE = {"Accept": "text/html"}  # a browser's page load (the proxy redirects those to log in)
COURSE = tomllib.loads((REPO / "examples" / "welcome.toml").read_text(encoding="utf-8"))
# Tries TCP connections; prints {"host:port": "open" | the error's name} as JSON.
PROBE = """
import json, socket, sys
found = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        found[target] = "open"
    except OSError as exc:
        found[target] = type(exc).__name__
print(json.dumps(found))
"""


def probe(*targets: str) -> dict[str, str]:
    """The same probe, from the host."""
    found = {}
    for target in targets:
        host, port = target.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            found[target] = "open"
        except OSError as exc:
            found[target] = type(exc).__name__
    return found


def addresses(project: Project, service: str) -> dict[str, str]:
    """The service's address on each network it is attached to, by the file's name."""
    networks = project.inspect(service)["NetworkSettings"]["Networks"] or {}
    prefix = project.network("")
    return {name.removeprefix(prefix): net["IPAddress"] for name, net in networks.items()}


def base_url(project: Project) -> str:
    return f"https://{SERVER_NAME}:{project.https_port}"


def http(project: Project) -> aiohttp.ClientSession:
    return clients.session(project.tls.client_context())


async def sign_in(
    session: aiohttp.ClientSession, project: Project, email: str, groups: str = ""
) -> dict[str, Any]:
    """A browser's first visit: the proxy's login redirect, the auth service's pages under
    /oauth2/ on the chat host, back to OpenWebUI, and OpenWebUI's trusted sign-in."""
    base = base_url(project)
    first = await session.get(f"{base}/", headers=PAGE, allow_redirects=False)
    assert first.status == 302, await first.text()
    login = urlsplit(first.headers["Location"])
    assert (login.scheme, login.hostname, login.path) == ("https", SERVER_NAME, "/oauth2/start")
    form = await session.get(f"{base}{login.path}?{login.query}")
    assert form.status == 200
    assert "oauth2-proxy stand-in" in await form.text()
    rd = parse_qs(login.query)["rd"][0]
    assert rd == f"https://{SERVER_NAME}/"
    back = await session.post(
        f"{base}/oauth2/callback",
        data={"rd": rd, "email": email, "name": email.split("@")[0].title(), "groups": groups},
        allow_redirects=False,
    )
    assert back.status == 302
    assert back.headers["Location"] == rd
    page = await session.get(f"{base}/", headers=PAGE)
    assert page.status == 200
    assert "<html" in (await page.text()).lower()
    signin = await session.post(f"{base}/api/v1/auths/signin", json={"email": "", "password": ""})
    assert signin.status == 200, await signin.text()
    account: dict[str, Any] = await signin.json()
    return account


def openwebui_health(project: Project) -> bool | None:
    """OpenWebUI's /health, asked from inside the proxy's network namespace."""
    if project.inspect("open-webui")["State"]["Status"] != "running":
        project.keep_logs()
        raise AssertionError(f"OpenWebUI stopped; logs in {project.log_dir}")
    check = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=3).read().decode())"
    )
    result = project.exec("owui-proxy", "python", "-c", check)
    return True if '"status":true' in result.stdout.replace(" ", "") else None


@pytest.fixture(scope="module")
def project(
    podman: Podman, owui_gate_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    started = time.monotonic()
    build_images(podman)
    log_dir = REPO / "artifacts" / "deploy" / f"compose-{int(time.time())}"
    log_dir.mkdir(parents=True, exist_ok=True)
    running = prepare(podman, tmp_path_factory.mktemp("compose"), log_dir)
    running.compose("down", "--volumes", "--timeout=10")  # an interrupted run's leftovers
    try:
        running.compose("up", "--detach")
        running.find_containers()
        wait_for(lambda: openwebui_health(running), "healthy OpenWebUI", 420, running)
        # README, "Before the first start": the operator signs in first (the first account
        # OpenWebUI creates is its admin), through the proxy like everyone else.
        operator = asyncio.run(operator_sign_in(running))
        assert operator["role"] == "admin"
        (log_dir / "timing.json").write_text(
            json.dumps({"setup_s": round(time.monotonic() - started, 1)}), encoding="utf-8"
        )
        yield running
    finally:
        running.keep_logs()
        running.compose("down", "--volumes", "--timeout=10")


async def operator_sign_in(project: Project) -> dict[str, Any]:
    async with http(project) as session:
        return await sign_in(session, project, OPERATOR)


async def test_a_new_user_signs_in_and_finds_their_course_threads(project: Project) -> None:
    email = f"student-{int(time.time())}@example.edu"
    modules = sorted(module["title"] for module in COURSE["modules"])
    async with http(project) as session:
        account = await sign_in(session, project, email)
        assert account["email"] == email
        assert account["role"] == "user"
        base = base_url(project)

        # The proxy announced the first sign-in; the receiver provisions as the user.
        async def threads() -> list[str]:
            answer = await session.get(f"{base}/api/v1/chats/archived")
            assert answer.status == 200, await answer.text()
            chats = await answer.json()
            # A thread's title is the module's, then an invisible tag (docs/provisioner.md).
            return sorted(
                next((m for m in modules if chat["title"].startswith(m)), chat["title"])
                for chat in chats
            )

        deadline = time.monotonic() + 120
        titles: list[str] = []
        while time.monotonic() < deadline:
            titles = await threads()
            if len(titles) >= len(modules):
                break
            await asyncio.sleep(1)
        assert titles == modules, f"archived threads {titles}; logs in {project.log_dir}"

        # A client's own identity header changes nothing: the proxy injects the verified one.
        me = await session.get(f"{base}/api/v1/auths/", headers={"X-User-Email": OPERATOR})
        assert (await me.json())["email"] == email


def test_openwebui_and_the_receiver_share_the_proxys_namespace_and_have_no_address(
    project: Project,
) -> None:
    proxy_id = project.inspect("owui-proxy")["Id"]
    for service in ("open-webui", "owui-provision"):
        container = project.inspect(service)
        assert container["HostConfig"]["NetworkMode"] == f"container:{proxy_id}", service
        # Podman lists the namespace's addresses for it: the proxy's, none of its own.
        assert addresses(project, service) == addresses(project, "owui-proxy"), service
        assert not container["HostConfig"]["PortBindings"], service


def test_the_private_listeners_answer_inside_the_namespace_only(
    project: Project, podman: Podman
) -> None:
    pod = addresses(project, "owui-proxy")
    assert set(pod) == {"edge", "owui-egress"}
    # Inside the namespace every listener is there, so the refusals below mean something.
    inside = project.exec(
        "owui-proxy", "python", "-c", PROBE, *(f"127.0.0.1:{p}" for p in PRIVATE_PORTS)
    )
    assert set(json.loads(inside.stdout).values()) == {"open"}, inside.stdout + inside.stderr

    private = [f"{address}:{port}" for address in pod.values() for port in PRIVATE_PORTS]
    public = f"{pod['edge']}:{PUBLIC_PORT}"
    # From the host, which has an address on every bridge, internal ones included.
    from_host = probe(*private, public)
    assert from_host.pop(public) == "open"
    assert "open" not in from_host.values(), from_host
    # From another container on each network the namespace is on, and on nginx's.
    for network in ("edge", "owui-egress", "front"):
        seen = podman(
            "run",
            "--rm",
            f"--network={project.network(network)}",
            base_image(),
            "python3",
            "-c",
            PROBE,
            *private,
            public,
            timeout=120,
        )
        found = json.loads(seen.stdout)
        reached_public = found.pop(public)
        assert "open" not in found.values(), (network, found)
        if network == "edge":
            assert reached_public == "open", "nginx's network must reach the public listener"
        else:
            assert reached_public != "open", (network, reached_public)


async def test_nginx_sends_oauth2_to_the_auth_service_and_everything_else_to_the_proxy(
    project: Project,
) -> None:
    base = base_url(project)
    before = project.logs("oauth2-proxy").count("\n")
    async with http(project) as session:
        for path in ("/oauth2x/start", "/api/oauth2/start", "/oauth/oidc/login", "/"):
            answer = await session.get(f"{base}{path}", headers=PAGE, allow_redirects=False)
            # The proxy answered (its request id), refusing or sending the browser to log in.
            assert "X-Request-ID" in answer.headers, path
            assert answer.status in (302, 401, 403), (path, answer.status)
        start = await session.get(f"{base}/oauth2/start?rd=%2F")
        assert "X-Request-ID" not in start.headers
        assert "oauth2-proxy stand-in" in await start.text()
    # podman reads the stand-in's output on its own time: wait for the last request's line.
    deadline = time.monotonic() + 30
    served = project.logs("oauth2-proxy").splitlines()[before:]
    while "GET /oauth2/start" not in served and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        served = project.logs("oauth2-proxy").splitlines()[before:]
    # The auth service saw the login page and the proxy's forward-auth questions, nothing else.
    paths = {line.split()[1] for line in served if line.startswith(("GET ", "POST "))}
    assert paths == {"/oauth2/start", "/oauth2/auth"}, served


def test_the_namespace_has_no_way_out_but_the_egress_proxy(project: Project) -> None:
    squid = addresses(project, "egress")["owui-egress"]
    outside = project.exec("owui-proxy", "python", "-c", PROBE, f"{squid}:3128", "192.0.2.1:443")
    found = json.loads(outside.stdout)
    assert found[f"{squid}:3128"] == "open"
    assert found["192.0.2.1:443"] != "open"  # no route out of internal networks


def test_the_shipped_secrets_are_read_by_the_images_user_only(project: Project) -> None:
    """The secrets are bind-mounted with their host modes: root-owned, group 10001 (the
    image's), 0640. Both owui-gate containers run as uid 10001 and read them."""
    compose_dir = project.compose_dir
    for name in ("internal-tokens", "provision-token", "hook-secret"):
        stat = (compose_dir / "secrets" / name).stat()
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (0, 10001, 0o640), name
    for service in ("owui-proxy", "owui-provision"):
        status = project.exec(service, "cat", "/proc/1/status").stdout
        assert "Uid:\t10001\t" in status, service
    assert (
        Path(compose_dir / "compose.yaml").read_text()
        == (REPO / "deploy" / "compose" / "compose.yaml").read_text()
    ), "the test runs the shipped file, unchanged"
