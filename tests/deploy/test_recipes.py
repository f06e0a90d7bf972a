"""docs/access.md's first-sign-in recipe, run as written.

The shell block under "Setting it up" is read from the document and split the way a reader
uses it: its commands run (with ``/etc/owui-gate`` and ``/tmp`` moved to a scratch folder,
against the accounts ``owui-gate.sysusers`` creates, tests/deploy/accounts.py), its
``OWUI_PROXY_*`` lines join the proxy's settings, and its ``owui-provision`` command line
starts the receiver. Ports the recipe names are moved to free ones, the same everywhere.
The proxy's other settings (its upstream, identity source and internal listener) are the
test's: the provisioner's fake OpenWebUI (tests/provisioner/fake_owui.py) and the fake
forward-auth service. A person signing in through the proxy then gets their threads.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.accounts import Accounts
from tests.deploy.edge import REPO, free_port, stop, wait_tcp
from tests.fakes import FakeAuthService
from tests.provisioner.fake_owui import FakeOpenWebUI, FastClock

ACCESS = REPO / "docs" / "access.md"
EMAIL = "kate@example.edu"
COURSES = {"course-a.toml": "welcome.toml", "course-b.toml": "year-9.toml"}
BIN = Path(sys.executable).parent


def recipe() -> str:
    """The shell block of access.md's "Setting it up", continuation lines joined."""
    text = ACCESS.read_text(encoding="utf-8")
    section = text[text.index("### Setting it up") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "access.md's recipe has no sh block"
    return block.group(1).replace("\\\n", " ")


def split(block: str) -> tuple[list[str], dict[str, str], list[str], dict[str, str]]:
    """(shell commands, the proxy's settings, the receiver's argv, the receiver's env)."""
    commands, proxy_env, receiver, receiver_env = [], {}, [], {}
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if re.fullmatch(r"OWUI_PROXY_[A-Z_]+=\S+", line):
            key, _, value = line.partition("=")
            proxy_env[key] = value
        elif "owui-provision" in words:
            at = words.index("owui-provision")
            receiver_env = dict(w.split("=", 1) for w in words[:at])
            receiver = words[at:]
        else:
            commands.append(line)
    return commands, proxy_env, receiver, receiver_env


@pytest.fixture
def scratch() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the recipe's install -o root needs root")
    with tempfile.TemporaryDirectory(prefix="owgt-recipe-") as folder:
        yield Path(folder)


@pytest.fixture
async def fakes(aiohttp_server: Any) -> tuple[FakeOpenWebUI, str, str]:
    """The fake OpenWebUI (an operator already in) and the forward-auth service: URLs."""
    owui = FakeOpenWebUI(listener=False, clock=FastClock(100))
    owui.add_user("operator@example.edu", role="admin")
    auth = FakeAuthService(
        users={"kate-session": {"X-Auth-Request-Email": EMAIL, "X-Auth-Request-Groups": "year-9"}}
    )
    upstream = await aiohttp_server(owui.app(), host="127.0.0.1")
    forward = await aiohttp_server(auth.app(), host="127.0.0.1")
    return owui, f"http://127.0.0.1:{upstream.port}", f"http://127.0.0.1:{forward.port}"


def started(argv: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OWUI_")}
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=clean | env, stdout=out, stderr=out, cwd=log.parent)
    try:
        wait_tcp("127.0.0.1", port, timeout=30)
    except TimeoutError as exc:
        stop(process)
        raise AssertionError(f"{argv[0]} did not start:\n{log.read_text()}") from exc
    return process


async def test_access_md_recipe_runs_as_written(
    scratch: Path, fakes: tuple[FakeOpenWebUI, str, str]
) -> None:
    owui, upstream, forward = fakes
    etc = scratch / "owui-gate"
    etc.mkdir()
    ports = {"8090": str(free_port()), "8001": str(free_port())}
    moved = {"/etc/owui-gate/": f"{etc}/", "/tmp/": f"{scratch}/"}  # noqa: S108
    block = re.sub("|".join(map(re.escape, moved)), lambda m: moved[m[0]], recipe())
    block = re.sub(r"127\.0\.0\.1:(8090|8001)\b", lambda m: f"127.0.0.1:{ports[m[1]]}", block)
    commands, proxy_env, receiver, receiver_env = split(block)
    assert set(proxy_env) == {"OWUI_PROXY_SIGNIN_HOOK_URL", "OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE"}
    assert receiver[:2] == ["owui-provision", "webhook"], receiver

    # Its commands, as root on a host with the kit's accounts.
    ran = Accounts.create(scratch / "root").shell("\n".join(commands), cwd=scratch)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # What the rest of the set-up provides: the service token (docs/internal-listener.md)
    # and the course files the command line names.
    token = "t" * 48
    for name in ("internal-tokens", "provision-token"):
        (etc / name).write_text(token + "\n", encoding="ascii")
        (etc / name).chmod(0o600)
    for name, example in COURSES.items():
        shutil.copy(REPO / "examples" / example, scratch / name)

    public, admin = free_port(), free_port()
    proxy = started(
        [str(BIN / "owui-proxy")],
        {
            "OWUI_PROXY_UPSTREAM": upstream,
            "OWUI_PROXY_LISTEN": f"127.0.0.1:{public}",
            "OWUI_PROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "OWUI_PROXY_INTERNAL_LISTEN": f"127.0.0.1:{ports['8001']}",
            "OWUI_PROXY_INTERNAL_TOKENS_FILE": str(etc / "internal-tokens"),
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{forward}/oauth2/auth",
            **proxy_env,
        },
        scratch / "proxy.log",
        public,
    )
    hook = proxy_env["OWUI_PROXY_SIGNIN_HOOK_URL"]
    try:
        webhook = started(
            [str(BIN / receiver[0]), *receiver[1:]],
            receiver_env,
            scratch / "receiver.log",
            int(hook.rsplit(":", 1)[1].split("/")[0]),
        )
        try:
            session = {"_oauth2_proxy": "kate-session"}
            async with httpx.AsyncClient(timeout=30, cookies=session) as client:
                signin = await client.post(
                    f"http://127.0.0.1:{public}/api/v1/auths/signin",
                    json={"email": "", "password": ""},
                )
                assert signin.status_code == 200, signin.text
                # The receiver answers the hook once the threads exist; the proxy counts it.
                sent = 'owui_proxy_signin_hook_events_total{outcome="sent"} 1.0'
                for _ in range(300):
                    metrics = (await client.get(f"http://127.0.0.1:{admin}/metrics")).text
                    if sent in metrics:
                        break
                    await asyncio.sleep(0.1)
                mine = [c for c in owui.chats.values() if c.user_id == signin.json()["id"]]
        finally:
            stop(webhook)
    finally:
        stop(proxy)
    logs = "".join((scratch / n).read_text() for n in ("proxy.log", "receiver.log"))
    # A thread's title is its module's, then an invisible tag (docs/provisioner.md).
    modules = course_modules()
    titles = [next((m for m in modules if c.title.startswith(m)), c.title) for c in mine]
    assert sorted(titles) == sorted(modules), logs[-4000:]
    assert all(c.archived for c in mine)
    assert sent in metrics, logs[-4000:]


def course_modules() -> list[str]:
    """Module titles of both courses (Kate is in year-9, so she gets both)."""
    titles = []
    for example in COURSES.values():
        course = tomllib.loads((REPO / "examples" / example).read_text(encoding="utf-8"))
        titles += [module["title"] for module in course["modules"]]
    return titles
