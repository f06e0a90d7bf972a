"""owui-gate in front of a scaled-out OpenWebUI: two processes on PostgreSQL and Redis.

The topology (``tests/e2e/scaleout.py``) is real processes: Debian's PostgreSQL and Redis,
two OpenWebUI 0.12.4 processes, nginx with the shipped ``deploy/nginx/owui-gate-scaleout.conf``
(a user stays on one process), a two-worker owui-proxy in front. What it costs to start and
hold in memory is written to ``artifacts/e2e/session-<pid>/scaleout/cost.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import socketio  # type: ignore[import-untyped]

from demo import openwebui
from demo.model_server import reply_tokens
from demo.stack import child_environment, console_script
from tests.e2e import socketchat
from tests.e2e.conftest import ARTIFACTS, COURSE, COURSE_FILE, module_of
from tests.e2e.scaleout import ScaleOut, ScaleOutError, scaleout

pytestmark = pytest.mark.e2e

PROCESSES = ("owui_a", "owui_b")


@pytest.fixture(scope="module")
def topology() -> Iterator[ScaleOut]:
    state = ARTIFACTS / "scaleout"
    state.mkdir(parents=True, exist_ok=True)
    problem = None
    began = time.monotonic()
    try:
        with scaleout(state) as running:
            running.cost["total"] = {"start_s": round(time.monotonic() - began, 1)}
            running.measure_memory()
            yield running
            (state / "cost.json").write_text(json.dumps(running.cost, indent=2) + "\n")
    except (ScaleOutError, openwebui.OpenWebUIError) as exc:
        problem = f"the scale-out topology did not start: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _email(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.com"


def _provision(topology: ScaleOut, internal: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(console_script("owui-provision")), *args],
        env=child_environment(topology.provision_env(internal)),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def _direct(topology: ScaleOut, process: str, email: str) -> httpx.Client:
    """``email`` talking to one OpenWebUI process directly (the tests' independent view)."""
    token = openwebui.sign_in(topology.url(process), email)["token"]
    return httpx.Client(
        base_url=topology.url(process),
        headers={"Authorization": f"Bearer {token}", "X-User-Email": email},
        timeout=30,
    )


@pytest.fixture(scope="module")
def provisioned(topology: ScaleOut, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five `owui-provision bulk` processes at once over the same two new users: three through
    the sticky proxy, two through one whose nginx spreads each user's calls over both
    OpenWebUI processes, so creates, deletes and archive toggles race across processes."""
    emails = [_email("scale") for _ in range(2)]
    roster = tmp_path_factory.mktemp("roster") / "users.csv"
    roster.write_text("email\n" + "\n".join(emails) + "\n", encoding="utf-8")
    routes = ["internal", "internal_rr", "internal", "internal_rr", "internal"]
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(routes)) as pool:
        runs = list(
            pool.map(
                lambda route: _provision(topology, route, "bulk", str(COURSE_FILE), str(roster)),
                routes,
            )
        )
    topology.cost["provisioning"] = {"five_bulk_runs_s": round(time.monotonic() - began, 1)}
    return {"emails": emails, "runs": runs}


def test_five_concurrent_provisioners_leave_one_archived_thread_per_module(
    topology: ScaleOut, provisioned: dict[str, Any]
) -> None:
    """Seen through each OpenWebUI process's API: exactly one archived thread per module."""
    for run in provisioned["runs"]:
        assert run.returncode == 0, run.stderr
    modules = {m["id"]: m for m in COURSE["modules"]}
    for email in provisioned["emails"]:
        for process in PROCESSES:
            with _direct(topology, process, email) as client:
                archived = client.get("/api/v1/chats/archived").json()
                active = client.get("/api/v1/chats/list").json()
                counts = Counter(
                    module["id"] for c in archived if (module := module_of(c["title"]))
                )
                assert counts == dict.fromkeys(modules, 1), (email, process, archived)
                assert [c for c in active if module_of(c["title"])] == []
                for chat in archived:
                    full = client.get(f"/api/v1/chats/{chat['id']}").json()
                    root = [m for m in full["chat"]["history"]["messages"].values()
                            if m.get("parentId") is None]  # fmt: skip
                    module = module_of(chat["title"])
                    assert module is not None
                    assert [m["content"] for m in root] == [module["first_message"]]


def test_postgres_holds_exactly_those_threads(
    topology: ScaleOut, provisioned: dict[str, Any]
) -> None:
    """The rows themselves: one archived chat per (user, module), and every chat id any of
    the five processes reported is the one left standing (the winner rule held)."""
    emails = provisioned["emails"]
    rows = topology.psql(
        'SELECT u.email, c.id, c.title, c.archived FROM chat c JOIN "user" u ON u.id = c.user_id'
    )
    assert rows.returncode == 0, rows.stderr
    found = [row for line in rows.stdout.splitlines() if (row := line.split("|"))[0] in emails]
    per_module = Counter((email, module_of(title)["id"]) for email, _, title, _ in found)  # type: ignore[index]
    assert per_module == {(e, m["id"]): 1 for e in emails for m in COURSE["modules"]}
    assert {archived for *_, archived in found} == {"t"}
    survivors = {chat_id for _, chat_id, _, _ in found}
    reported = {
        line["chat_id"]
        for run in provisioned["runs"]
        for line in map(json.loads, filter(None, run.stdout.splitlines()))
    }
    assert reported == survivors


def _logged(topology: ScaleOut, path: str, since: int, count: int) -> list[str]:
    """:meth:`ScaleOut.upstream_of` once nginx has logged ``count`` requests for ``path``
    (30 s at most): it writes a request's line after sending the answer, so a loaded
    machine can hand the answer on through the proxy before nginx has written it."""
    deadline = time.monotonic() + 30
    while len(found := topology.upstream_of(path, since=since)) < count:
        assert time.monotonic() < deadline, f"nginx logged {len(found)} of {count} for {path}"
        time.sleep(0.1)
    return found


def _sign_in_through_proxy(topology: ScaleOut, email: str) -> tuple[str, httpx.Cookies]:
    """Demo IdP login, then OpenWebUI's trusted-header sign-in through the two-worker proxy."""
    with httpx.Client(timeout=30) as client:
        login = client.post(
            f"{topology.url('idp')}/login",
            data={"email": email, "name": "Scale", "rd": topology.url("public") + "/"},
        )
        assert login.status_code in (302, 303), login.text[:300]
        signin = client.post(
            f"{topology.url('public')}/api/v1/auths/signin", json={"email": "", "password": ""}
        )
        assert signin.status_code == 200, signin.text[:300]
        client.cookies.delete("token")
        return str(signin.json()["token"]), client.cookies


async def _events_via_other_process(
    topology: ScaleOut, email: str, token: str, cookies: httpx.Cookies
) -> tuple[str, str, list[dict[str, Any]]]:
    """Hold the user's socket through the proxy; trigger a completion on the OTHER process,
    directly on its port; collect the events that reach the socket."""
    # nginx logs a WebSocket when it closes; the user's plain requests show where they are
    # pinned now, and the socket's own line is checked against it afterwards.
    offset = topology.log_offset()
    async with httpx.AsyncClient(base_url=topology.url("public"), cookies=cookies) as client:
        me = await client.get("/api/v1/auths/", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
    (holder,) = set(_logged(topology, "/api/v1/auths/", offset, 1))
    other = next(p for p in PROCESSES if topology.url(p).removeprefix("http://") != holder)
    offset = topology.log_offset()
    sio = await socketchat.connect(topology.url("public"), token, cookies)
    timed, done = socketchat.collect_events(sio)
    try:
        await sio.call("user-join", {"auth": {"token": token}}, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "X-User-Email": email}
        async with httpx.AsyncClient(
            base_url=topology.url(other), headers=headers, timeout=60
        ) as client:
            chat_id = await socketchat.background_completion(client, sio.get_sid("/"), "scale")
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await sio.disconnect()
    # nginx writes the socket's line once it has seen the close, on its own time.
    deadline = time.monotonic() + 30
    while not topology.upstream_of("/ws/socket.io/", since=offset):
        assert time.monotonic() < deadline, "nginx logged no line for the closed socket"
        await asyncio.sleep(0.1)
    assert topology.upstream_of("/ws/socket.io/", since=offset) == [holder]
    events = [e["data"] for _, e in timed if e["chat_id"] == chat_id]
    return holder, topology.url(other), events


def test_socketio_event_from_one_process_reaches_the_socket_held_by_the_other(
    topology: ScaleOut,
) -> None:
    """Redis carries OpenWebUI's `user:{id}` room events between processes; the socket goes
    through the proxy with its token guard on, the trigger straight to the other process."""
    email = _email("scale-socket")
    token, cookies = _sign_in_through_proxy(topology, email)
    holder, other, events = asyncio.run(_events_via_other_process(topology, email, token, cookies))
    assert other.removeprefix("http://") != holder
    deltas = [
        e["data"]["delta"]
        for e in events
        if e.get("type") == "response:completion"
        and e["data"].get("type") == "response.output_text.delta"
    ]
    assert "".join(deltas) == "".join(reply_tokens())


def test_a_user_stays_on_one_process(topology: ScaleOut) -> None:
    """Every request of one user, through the proxy, is served by the same OpenWebUI process."""
    email = _email("scale-sticky")
    token, cookies = _sign_in_through_proxy(topology, email)
    offset = topology.log_offset()
    with httpx.Client(base_url=topology.url("public"), cookies=cookies, timeout=30) as client:
        for _ in range(10):
            response = client.get("/api/v1/auths/", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
    assert len(set(_logged(topology, "/api/v1/auths/", offset, 10))) == 1


async def _connect(topology: ScaleOut, token: str, cookies: httpx.Cookies) -> socketio.AsyncClient:
    sio = await socketchat.connect(topology.url("public"), token, cookies)
    await sio.call("user-join", {"auth": {"token": token}}, timeout=30)
    return sio


async def _socket_through_a_death(
    topology: ScaleOut, token: str, cookies: httpx.Cookies, victim: str
) -> tuple[float, dict[str, Any]]:
    """A socket held by ``victim`` when it is killed: how long until the client hears, and
    what a new connection through the proxy gets."""
    held = await _connect(topology, token, cookies)
    dropped = asyncio.Event()

    async def on_disconnect(*reason: object) -> None:
        dropped.set()

    held.on("disconnect", on_disconnect)
    began = time.monotonic()
    os.killpg(topology.owui[victim].process.pid, signal.SIGKILL)
    await asyncio.wait_for(dropped.wait(), timeout=30)
    heard = time.monotonic() - began
    again = await _connect(topology, token, cookies)
    try:
        joined = await again.call("user-join", {"auth": {"token": token}}, timeout=30)
    finally:
        await again.disconnect()
    return heard, joined


def test_when_one_process_dies_its_users_move_to_the_other(topology: ScaleOut) -> None:
    """SIGKILL the process a user is pinned to while the user holds a socket on it: the
    socket closes at once, a new one through the proxy is served by the survivor, and the
    user's requests (sign-in included) are answered by the survivor (nginx skips the refused
    process; the first request pays one refused connection). Runs last: it leaves one dead."""
    email = _email("scale-failover")
    token, cookies = _sign_in_through_proxy(topology, email)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=topology.url("public"), cookies=cookies, timeout=30) as client:
        offset = topology.log_offset()
        me = client.get("/api/v1/auths/", headers=auth)
        assert me.status_code == 200
        (pinned,) = set(_logged(topology, "/api/v1/auths/", offset, 1))
        victim = next(p for p in PROCESSES if topology.url(p).endswith(pinned))
        survivor = topology.url(next(p for p in PROCESSES if p != victim)).removeprefix("http://")
        heard, joined = asyncio.run(_socket_through_a_death(topology, token, cookies, victim))
        assert topology.owui[victim].process.wait(10) is not None
        assert joined == {"id": me.json()["id"], "name": "Scale"}
        offset = topology.log_offset()
        began = time.monotonic()
        answers = [client.get("/api/v1/auths/", headers=auth).status_code for _ in range(5)]
        took = time.monotonic() - began
        signin = client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
    assert answers == [200] * 5
    assert signin.status_code == 200
    # The proxy stays ready: its upstream (nginx) answers; nginx knows the rest.
    assert httpx.get(f"{topology.url('admin')}/readyz", timeout=10).status_code == 200
    served = _logged(topology, "/api/v1/auths/", offset, 5)
    # Within fail_timeout nginx goes straight to the survivor; a request that tries the dead
    # process first shows both addresses.
    assert set(served) <= {survivor, f"{pinned}, {survivor}"}
    assert served[-1] == survivor
    topology.cost["failover"] = {
        "socket_closed_s": round(heard, 2),
        "five_requests_s": round(took, 2),
    }


def test_cost_is_recorded(topology: ScaleOut) -> None:
    """Start times and memory of every piece were measured (docs/deployment.md quotes them)."""
    for name in ("postgres", "redis", "owui_a", "owui_b", "proxy", "nginx"):
        assert topology.cost[name]["start_s"] >= 0
        assert topology.cost[name]["rss_mib"] > 0, name
