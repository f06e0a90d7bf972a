"""The demo IdP served in-process: login, forward-auth, logout, and first-login webhooks
delivered to a real in-process receiver that checks the signature itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from demo import session as sessions
from demo.idp import COOKIE_NAME, IdpConfig, config_from_args, create_app, parse_listen
from demo.users import SeenUsers
from proxy.webhooks import new_secret

PUBLIC = "http://127.0.0.1:8000"
COOKIE_KEY = b"k" * 32
SECRET = new_secret()


@dataclass
class Receiver:
    """A webhook endpoint that verifies what it gets, per the Standard Webhooks spec.
    ``statuses`` are answered in turn (the last one repeats); ``gate`` can hold answers."""

    statuses: list[int] = field(default_factory=lambda: [204])
    received: list[dict[str, Any]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            msg_id = request.headers["webhook-id"]
            timestamp = request.headers["webhook-timestamp"]
            key = base64.b64decode(SECRET.removeprefix("whsec_"))
            expected = base64.b64encode(
                hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
            ).decode()
            signatures = [s.partition(",")[2] for s in request.headers["webhook-signature"].split()]
            self.received.append(
                {
                    "id": msg_id,
                    "valid": expected in signatures,
                    "fresh": abs(time.time() - int(timestamp)) < 300,
                    "event": json.loads(body),
                }
            )
            if self.gate is not None:
                await self.gate.wait()
            status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
            return web.Response(status=status)

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app


Make = Callable[..., Awaitable[Any]]


@pytest.fixture
def make_idp(aiohttp_client, aiohttp_server) -> Make:
    async def make(receiver: Receiver | None = None, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "public_url": PUBLIC,
            "cookie_key": COOKIE_KEY,
            "retry_delays": (0.05, 0.05, 0.05),
        }
        if receiver is not None:
            server = await aiohttp_server(receiver.app())
            values["webhook_url"] = str(server.make_url("/hook"))
            values["webhook_secret"] = SECRET
        values.update(overrides)
        return await aiohttp_client(create_app(IdpConfig(**values)))

    return make


async def login(client: Any, email: str, name: str = "", groups: str = "", rd: str = "") -> Any:
    form = {"email": email, "name": name, "groups": groups, "rd": rd}
    return await client.post("/login", data=form, allow_redirects=False)


def set_cookie(response: Any) -> Any:
    cookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie[COOKIE_NAME]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- login, forward-auth, logout --------------------------------------------------------------


async def test_login_page_says_demo_and_carries_rd_escaped(make_idp: Make) -> None:
    client = await make_idp()
    response = await client.get("/login", params={"rd": f"{PUBLIC}/c/1?a=1&b='x'"})
    text = await response.text()
    assert response.status == 200
    assert "DEMO identity provider" in text
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "value='http://127.0.0.1:8000/c/1?a=1&amp;b=&#x27;x&#x27;'" in text


async def test_login_sets_a_signed_session_cookie_and_returns_to_rd(make_idp: Make) -> None:
    client = await make_idp()
    response = await login(client, "Ada@Example.edu", "Ada Lovelace", rd=f"{PUBLIC}/c/42")
    assert response.status == 303
    assert response.headers["Location"] == f"{PUBLIC}/c/42"
    morsel = set_cookie(response)
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # the public URL is plain http on loopback
    found = sessions.decode(COOKIE_KEY, morsel.value, time.time())
    assert found is not None
    assert (found.email, found.name) == ("ada@example.edu", "Ada Lovelace")


async def test_cookie_is_secure_when_the_public_url_is_https(make_idp: Make) -> None:
    client = await make_idp(public_url="https://chat.example.edu")
    response = await login(client, "ada@example.edu")
    assert set_cookie(response)["secure"] is True


async def test_forward_auth_answers_like_oauth2_proxy(make_idp: Make) -> None:
    client = await make_idp()
    async with client.get("/oauth2/auth") as response:
        assert response.status == 401
        assert "X-Auth-Request-Email" not in response.headers
    await login(client, "ada@example.edu", "Ada Lovelace", groups="students, cs101")
    async with client.get("/oauth2/auth") as response:
        assert response.status == 202
        assert response.headers["X-Auth-Request-Email"] == "ada@example.edu"
        assert response.headers["X-Auth-Request-User"] == "Ada Lovelace"
        assert response.headers["X-Auth-Request-Groups"] == "students,cs101"
        assert response.headers["Cache-Control"] == "no-store"


async def test_forward_auth_without_name_or_groups(make_idp: Make) -> None:
    client = await make_idp()
    await login(client, "grace@example.edu")
    async with client.get("/oauth2/auth") as response:
        assert response.status == 202
        assert "X-Auth-Request-User" not in response.headers
        assert "X-Auth-Request-Groups" not in response.headers


def _forge_payload(value: str) -> str:
    payload, _, mac = value.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["e"] = "admin@example.edu"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_forge_payload, id="payload-changed"),
        pytest.param(lambda v: v[:-2] + ("AA" if v[-2:] != "AA" else "BB"), id="mac-changed"),
        pytest.param(lambda v: v.partition(".")[0], id="mac-removed"),
        pytest.param(
            lambda v: sessions.encode(
                b"another key of thirty-two bytes!",
                sessions.Session("ada@example.edu", None, (), 2**40),
            ),
            id="other-key",
        ),
        pytest.param(
            lambda v: sessions.encode(
                COOKIE_KEY, sessions.Session("ada@example.edu", None, (), int(time.time()) - 1)
            ),
            id="expired",
        ),
        pytest.param(lambda v: "garbage", id="garbage"),
    ],
)
async def test_tampered_cookie_is_401(make_idp: Make, tamper: Callable[[str], str]) -> None:
    client = await make_idp()
    value = set_cookie(await login(client, "ada@example.edu")).value
    async with client.get("/oauth2/auth", headers={"Cookie": f"{COOKIE_NAME}={value}"}) as ok:
        assert ok.status == 202  # the untouched cookie works, so the 401 below is the tamper
    client.session.cookie_jar.clear()
    headers = {"Cookie": f"{COOKIE_NAME}={tamper(value)}"}
    async with client.get("/oauth2/auth", headers=headers) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    "rd",
    [
        pytest.param("https://evil.test/phish", id="other-host"),
        pytest.param("//evil.test/", id="scheme-relative"),
        pytest.param("http://127.0.0.1:8000@evil.test/", id="userinfo"),
    ],
)
async def test_open_redirect_is_refused(make_idp: Make, rd: str) -> None:
    client = await make_idp()
    response = await login(client, "ada@example.edu", rd=rd)
    assert response.status == 303
    assert response.headers["Location"] == PUBLIC
    page = await (await client.get("/login", params={"rd": rd})).text()
    assert "evil" not in page


async def test_bad_email_is_a_form_error_and_no_cookie(make_idp: Make) -> None:
    client = await make_idp()
    response = await login(client, "not an email", "Eve")
    assert response.status == 400
    assert "not a plausible address" in await response.text()
    assert "Set-Cookie" not in response.headers


async def test_cross_site_login_post_is_refused(make_idp: Make) -> None:
    client = await make_idp()
    form = {"email": "eve@example.edu"}
    response = await client.post(
        "/login", data=form, headers={"Origin": "https://evil.test"}, allow_redirects=False
    )
    assert response.status == 403
    assert "Set-Cookie" not in response.headers


async def test_logout_clears_the_cookie_and_offers_sign_in(make_idp: Make) -> None:
    client = await make_idp()
    await login(client, "ada@example.edu")
    assert (await client.get("/oauth2/auth")).status == 202
    response = await client.get("/logout")
    assert response.status == 200
    cleared = set_cookie(response)
    assert cleared.value == ""
    assert cleared["max-age"] == "0"
    text = await response.text()
    assert "signed out" in text
    assert "href='/login?rd=http%3A%2F%2F127.0.0.1%3A8000'" in text
    assert (await client.get("/oauth2/auth")).status == 401


# --- first-login webhooks -------------------------------------------------------------------


async def test_first_login_sends_exactly_one_signed_user_created(make_idp: Make) -> None:
    receiver = Receiver()
    client = await make_idp(receiver)
    await login(client, "Ada@Example.edu", "Ada King Lovelace", groups="cs101")
    await eventually(lambda: len(receiver.received) == 1)
    await login(client, "ada@example.edu", "Ada")  # a second login: no event
    await login(client, "grace@example.edu", "Grace Hopper")  # another user: one more
    await eventually(lambda: len(receiver.received) == 2)
    await asyncio.sleep(0.2)  # nothing else trickles in
    assert len(receiver.received) == 2
    first = receiver.received[0]
    assert first["valid"]
    assert first["fresh"]
    event = first["event"]
    assert event["type"] == "user.created"
    data = event["data"]
    assert data["email_addresses"][0]["email_address"] == "ada@example.edu"
    assert data["primary_email_address_id"] == data["email_addresses"][0]["id"]
    assert (data["first_name"], data["last_name"]) == ("Ada", "King Lovelace")
    assert data["id"].startswith("user_")
    assert data["public_metadata"] == {"groups": ["cs101"]}
    assert receiver.received[1]["event"]["data"]["email_addresses"][0]["email_address"] == (
        "grace@example.edu"
    )
    assert receiver.received[0]["id"] != receiver.received[1]["id"]


async def test_delivery_is_retried_with_the_same_id(make_idp: Make) -> None:
    receiver = Receiver(statuses=[500, 503, 200])
    client = await make_idp(receiver)
    await login(client, "ada@example.edu")
    await eventually(lambda: len(receiver.received) == 3)
    await asyncio.sleep(0.2)  # a 2xx ends it
    assert len(receiver.received) == 3
    assert len({r["id"] for r in receiver.received}) == 1
    assert all(r["valid"] for r in receiver.received)


async def test_delivery_never_blocks_the_login(make_idp: Make) -> None:
    receiver = Receiver(gate=asyncio.Event())
    client = await make_idp(receiver)
    response = await login(client, "ada@example.edu", rd=f"{PUBLIC}/x")
    await eventually(lambda: len(receiver.received) == 1)
    assert response.status == 303  # answered while the receiver is still holding the webhook
    assert receiver.gate is not None
    receiver.gate.set()


async def test_delivery_gives_up_after_the_last_retry(make_idp: Make) -> None:
    receiver = Receiver(statuses=[500])
    client = await make_idp(receiver, retry_delays=(0.01, 0.01))
    await login(client, "ada@example.edu")
    await eventually(lambda: len(receiver.received) == 3)
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 3


async def test_seen_users_survive_a_restart_with_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    assert SeenUsers(path).first_login("ada@example.edu") is True
    again = SeenUsers(path)
    assert again.first_login("ada@example.edu") is False
    assert again.first_login("grace@example.edu") is True
    assert json.loads(path.read_text()) == {"emails": ["ada@example.edu", "grace@example.edu"]}
    assert SeenUsers().first_login("ada@example.edu") is True  # in memory: a fresh start


# --- loopback only, loudly a demo -------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        pytest.param("127.0.0.1:4180", ("127.0.0.1", 4180), id="ipv4-loopback"),
        pytest.param("127.0.0.2:4180", ("127.0.0.2", 4180), id="ipv4-loopback-range"),
        pytest.param("[::1]:4180", ("::1", 4180), id="ipv6-loopback"),
        pytest.param("localhost:4180", ("localhost", 4180), id="localhost"),
        pytest.param("0.0.0.0:4180", None, id="all-ipv4"),
        pytest.param("[::]:4180", None, id="all-ipv6"),
        pytest.param("192.168.1.10:4180", None, id="lan"),
        pytest.param("idp.example.edu:4180", None, id="hostname"),
        pytest.param(":4180", None, id="no-host"),
        pytest.param("127.0.0.1", None, id="no-port"),
    ],
)
def test_parse_listen_refuses_non_loopback(listen: str, expected: tuple[str, int] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
            parse_listen(listen)
    else:
        assert parse_listen(listen) == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refuses_a_public_bind_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo.idp", "--listen", "0.0.0.0:4180"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "loopback only" in result.stderr


async def test_runs_as_its_own_process_and_says_it_is_a_demo(tmp_path: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo.idp",
        "--listen",
        f"127.0.0.1:{port}",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "demo IdP did not start"
                    await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _, stderr = await proc.communicate()
    assert "DEMO IDENTITY PROVIDER - NOT FOR PRODUCTION" in stderr.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--public-url", "chat.example.edu"], "not an http(s) URL", id="public-url"),
        pytest.param(["--webhook-url", "http://127.0.0.1:1/h"], "go together", id="url-no-secret"),
        pytest.param(
            ["--webhook-url", "ftp://x/h", "--webhook-secret-file", "{secret}"],
            "--webhook-url 'ftp://x/h' is not an http(s) URL",
            id="webhook-url",
        ),
        pytest.param(
            ["--webhook-url", "http://127.0.0.1:1/h", "--webhook-secret-file", "{bad_secret}"],
            "starts with 'whsec_'",
            id="bad-webhook-secret",
        ),
        pytest.param(
            ["--cookie-secret-file", "{short}"], "at least 32 bytes", id="short-cookie-secret"
        ),
        pytest.param(["--cookie-secret-file", "{missing}"], "cannot read", id="missing-file"),
    ],
)
def test_command_line_problems_stop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    files = {
        "secret": tmp_path / "secret",
        "bad_secret": tmp_path / "bad",
        "short": tmp_path / "short",
        "missing": tmp_path / "missing",
    }
    files["secret"].write_text(SECRET)
    files["bad_secret"].write_text("hunter2")
    files["short"].write_text("too short")
    argv = [a.format(**files) for a in args]
    with pytest.raises(SystemExit) as stopped:
        config_from_args(argv)
    assert message in f"{stopped.value.code} {capsys.readouterr().err}"


def test_command_line_builds_the_config(tmp_path: Path) -> None:
    secret_file, cookie_file = tmp_path / "secret", tmp_path / "cookie"
    secret_file.write_text(SECRET + "\n")
    cookie_file.write_bytes(b"c" * 40)
    config = config_from_args(
        [
            "--listen", "[::1]:4999",
            "--public-url", "https://chat.example.edu/",
            "--webhook-url", "http://127.0.0.1:8090/webhooks/signup",
            "--webhook-secret-file", str(secret_file),
            "--cookie-secret-file", str(cookie_file),
        ]
    )  # fmt: skip
    assert (config.host, config.port) == ("::1", 4999)
    assert config.public_url == "https://chat.example.edu"
    assert config.webhook_secret == SECRET
    assert config.cookie_key == b"c" * 40
