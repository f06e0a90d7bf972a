"""The proxy's Socket.IO token guard against the real OpenWebUI, spoken by hand (Engine.IO v4).

Attacker A is signed in at the demo IdP and holds victim V's OpenWebUI token. OpenWebUI's
Socket.IO server authenticates from tokens inside the packets and never compares them with
the trusted email header, so a frame carrying V's token that reaches it makes A's socket V's.
python-engineio and python-socketio read packet types with ``int()`` of one character (any
Unicode decimal digit counts) and JSON-decode an Engine.IO body that is a JSON *string*; each
spelling below uses one of those. The tests show:

- directly at OpenWebUI (no proxy), every spelling reaches a handler as V: the attack is real
  and the frames are well formed;
- through the proxy, each one with V's token closes the socket with 1008 and nothing that
  comes back names V;
- through the proxy, each one with A's *own* token is relayed and answered as A, so the
  channel works and the guard decodes these spellings rather than refusing odd frames.

The probe of whom a socket is: ``events:chat`` ``join`` of a chat answers ``true`` only when the
socket's user may read that chat; ``user-join`` acknowledges with the token's user's id.

The same over HTTP long-polling, against a second OpenWebUI with
``ENABLE_WEBSOCKET_SUPPORT=false`` (fixture ``polling_gate``): python-engineio reads a POST body
starting with ``d=`` as JSONP and URL-decodes it before splitting packets. Directly at
OpenWebUI such a body with V's token makes the session V's; through the proxy every spelling
with V's token is a 403 and the session stays A's, and A's own token in the same spellings is
answered as A. Long-polling also gets the ``Origin`` check.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import httpx
import pytest
from playwright.sync_api import sync_playwright

from demo import openwebui
from demo.stack import (
    Stack,
    StackError,
    child_environment,
    console_script,
    free_ports,
    http_ready,
    spawn,
)
from tests.e2e.conftest import fresh_email, idp_login, owui_url, sign_in_through_proxy
from tests.e2e.pageload import progress
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS

pytestmark = pytest.mark.e2e

SOCKET_PATH = "/ws/socket.io/?EIO=4&transport=websocket"
POLICY_VIOLATION = 1008
JOIN_ACK, PROBE_ACK = 7, 8


def _user_join(token: str, ack: int | None = JOIN_ACK) -> str:
    """A Socket.IO EVENT body (without its type digit): ``user-join`` with ``token``."""
    return f"{'' if ack is None else ack}" + json.dumps(["user-join", {"auth": {"token": token}}])


@dataclass(frozen=True)
class Spelling:
    """One way of writing a token-carrying Engine.IO frame."""

    frame: Callable[[str], str]
    connect: bool  # it is the Socket.IO CONNECT itself (else it follows a plain CONNECT)
    acks: bool  # it asks for an acknowledgement (id JOIN_ACK)


SPELLINGS: dict[str, Spelling] = {
    # The plain forms, the guard's baseline job.
    "ascii-connect": Spelling(lambda t: "40" + json.dumps({"token": t}), True, False),
    "ascii-user-join": Spelling(lambda t: "42" + _user_join(t), False, True),
    # (i) Arabic-Indic four and two: int("\u0664") == 4, int("\u0662") == 2.
    "arabic-indic-user-join": Spelling(lambda t: "\u0664\u0662" + _user_join(t), False, True),
    # (ii) Fullwidth four and zero: a CONNECT whose auth is the token.
    "fullwidth-connect": Spelling(lambda t: "\uff14\uff10" + json.dumps({"token": t}), True, False),
    # (iii) An Engine.IO MESSAGE whose body is a JSON string holding the Socket.IO packet,
    # with and without an ack id.
    "json-string-user-join": Spelling(lambda t: "4" + json.dumps("2" + _user_join(t)), False, True),
    "json-string-user-join-no-ack": Spelling(
        lambda t: "4" + json.dumps("2" + _user_join(t, None)), False, False
    ),
}


@dataclass
class Person:
    id: str
    token: str
    chat_id: str  # a chat of their own, for the events:chat probe


class Closed(Exception):
    """The WebSocket closed; ``code`` is the close code, ``frames`` what came before it."""

    def __init__(self, code: int | None, frames: list[str]) -> None:
        super().__init__(f"closed with {code} after {frames!r}")
        self.code = code
        self.frames = frames


class EngineIO:
    """A hand-driven Engine.IO v4 client on one WebSocket (answers pings itself)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[str] = []  # every text frame received, in order

    async def receive(self, timeout: float = 20) -> str:
        """The next text frame other than a ping; :class:`Closed` if the socket closes."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.seen.append(msg.data)
                if msg.data == "2":  # Engine.IO ping
                    await self.ws.send_str("3")
                    continue
                return str(msg.data)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                raise Closed(self.ws.close_code, list(self.seen))
            # binary frames: not used by OpenWebUI's JSON-only serializer; ignore

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def open(self) -> dict[str, Any]:
        frame = await self.receive()
        assert frame.startswith("0{"), frame
        return dict(json.loads(frame[1:]))

    async def connected(self) -> None:
        """Wait for the namespace CONNECT answer (``40{"sid": ...}``)."""
        frame = await self.receive()
        assert frame.startswith('40{"sid"'), frame

    async def ack(self, ack_id: int) -> list[Any]:
        """Wait for the acknowledgement ``43<ack_id>[...]`` and return its arguments."""
        prefix = f"43{ack_id}"
        while True:
            frame = await self.receive()
            if frame.startswith(prefix) and frame[len(prefix) : len(prefix) + 1] == "[":
                return list(json.loads(frame[len(prefix) :]))

    async def probe(self, chat_id: str) -> bool:
        """May this socket's user read ``chat_id``? (OpenWebUI's events:chat join answers.)"""
        body = json.dumps(["events:chat", {"chat_id": chat_id, "data": {"type": "join"}}])
        await self.send(f"42{PROBE_ACK}{body}")
        return (await self.ack(PROBE_ACK)) == [True]


async def _session(url: str, headers: dict[str, str], script: Callable[[EngineIO], Any]) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url + SOCKET_PATH, headers=headers, autoping=True) as ws,
    ):
        eio = EngineIO(ws)
        await eio.open()
        return await script(eio)


def _run(url: str, headers: dict[str, str], script: Callable[[EngineIO], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(_session(url, headers, script), timeout=60))


def _new_chat(client: httpx.Client, headers: dict[str, str]) -> str:
    chat = {"title": "socket guard", "models": [], "messages": [],
            "history": {"messages": {}, "currentId": None}}  # fmt: skip
    response = client.post("/api/v1/chats/new", json={"chat": chat}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def victim(gate: Stack) -> Person:
    """V: signed in directly at OpenWebUI (their token is what A stole), with one chat."""
    email = fresh_email("socket-victim")
    signed_in = openwebui.sign_in(owui_url(gate), email)
    token = str(signed_in["token"])
    with httpx.Client(base_url=owui_url(gate), timeout=30) as client:
        chat_id = _new_chat(client, {"Authorization": f"Bearer {token}", "X-User-Email": email})
    return Person(id=str(signed_in["id"]), token=token, chat_id=chat_id)


@dataclass
class Attacker(Person):
    headers: dict[str, str]  # IdP session cookie and our Origin, for the WebSocket upgrade


@pytest.fixture(scope="module")
def attacker(gate: Stack) -> Attacker:
    """A: signed in at the demo IdP, with their own OpenWebUI token and a chat of their own."""
    student = sign_in_through_proxy(gate, fresh_email("socket-attacker"))
    with student as client:
        me = client.get("/api/v1/auths/", headers=student.auth())
        assert me.status_code == 200, me.text
        chat_id = _new_chat(client, student.auth())
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    # The stack sets OWUI_PROXY_PUBLIC_URL, so the proxy wants exactly that Origin.
    headers = {"Cookie": cookie, "Origin": gate.public_url}
    return Attacker(id=str(me.json()["id"]), token=student.token, chat_id=chat_id, headers=headers)


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_each_spelling_acts_as_the_token_owner_at_openwebui_directly(
    gate: Stack, victim: Person, name: str
) -> None:
    """The control: without the proxy, V's token in this spelling makes the socket V's."""
    spelling = SPELLINGS[name]

    async def script(eio: EngineIO) -> None:
        if not spelling.connect:
            await eio.send("40")  # an anonymous CONNECT (always_connect): nobody yet
            await eio.connected()  # (probing now would get it disconnected: no user)
        await eio.send(spelling.frame(victim.token))
        if spelling.connect:
            await eio.connected()
        if spelling.acks:
            (joined,) = await eio.ack(JOIN_ACK)
            assert joined["id"] == victim.id
        elif not spelling.connect:
            # Without an ack nothing says when user-join is done, and python-socketio runs
            # each event in its own task: give it time before probing (a probe on a socket
            # with no user yet would get it disconnected).
            await asyncio.sleep(2)
        assert await eio.probe(victim.chat_id) is True

    _run(owui_url(gate), {}, script)


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_the_victims_token_in_each_spelling_closes_the_socket(
    gate: Stack, attacker: Attacker, victim: Person, name: str
) -> None:
    spelling = SPELLINGS[name]

    async def script(eio: EngineIO) -> Closed:
        if not spelling.connect:
            await eio.send("40" + json.dumps({"token": attacker.token}))
            await eio.connected()
        before = len(eio.seen)
        await eio.send(spelling.frame(victim.token))
        try:
            # Whatever comes back, until the close; a socket still open after 10 s of
            # silence, or an answer naming V, is the failure (reported with what came).
            while not any(victim.id in frame for frame in eio.seen[before:]):
                await eio.receive(timeout=10)
        except Closed as closed:
            return Closed(closed.code, closed.frames[before:])
        except TimeoutError:  # still open: whose is it now? (for the failure message)
            mine = await eio.probe(victim.chat_id)
            return Closed(None, [*eio.seen[before:], f"(V's chat readable on this socket: {mine})"])
        return Closed(None, eio.seen[before:])

    closed = _run(gate.public_url, attacker.headers, script)
    assert closed.code == POLICY_VIOLATION, closed
    assert not any(victim.id in frame for frame in closed.frames), closed.frames
    assert not any(frame.startswith(f"43{JOIN_ACK}") for frame in closed.frames), closed.frames


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_the_attackers_own_token_in_each_spelling_is_answered_as_the_attacker(
    gate: Stack, attacker: Attacker, victim: Person, name: str
) -> None:
    """The channel works through the proxy, and each spelling is read, not just refused."""
    spelling = SPELLINGS[name]

    async def script(eio: EngineIO) -> list[Any] | None:
        if not spelling.connect:
            await eio.send("40" + json.dumps({"token": attacker.token}))
            await eio.connected()
        await eio.send(spelling.frame(attacker.token))
        if spelling.connect:
            await eio.connected()
        joined = await eio.ack(JOIN_ACK) if spelling.acks else None
        # The socket is A's: A's chat yes, V's chat no.
        assert await eio.probe(attacker.chat_id) is True
        assert await eio.probe(victim.chat_id) is False
        return joined

    joined = _run(gate.public_url, attacker.headers, script)
    if spelling.acks:
        assert joined is not None
        assert joined[0]["id"] == attacker.id


# --- HTTP long-polling: OpenWebUI with ENABLE_WEBSOCKET_SUPPORT=false ---------------------------

POLLING_PATH = "/ws/socket.io/?EIO=4&transport=polling"


class Polling:
    """A hand-driven Engine.IO v4 long-polling session (answers pings itself).

    Reads (GET) carry no ``Origin``, as a browser's same-origin reads; writes (POST) carry
    ``origin`` when given, as a browser's do.
    """

    def __init__(self, client: httpx.Client, origin: str | None = None) -> None:
        self.client = client
        self.origin = origin
        self.sid = ""
        self.seen: list[str] = []  # every packet received, in order

    def open(self) -> None:
        response = self.client.get(POLLING_PATH)
        assert response.status_code == 200, response.text
        assert response.text.startswith("0{"), response.text
        self.sid = json.loads(response.text[1:])["sid"]

    def post(self, body: str) -> httpx.Response:
        headers = {"Content-Type": "text/plain;charset=UTF-8"}
        if self.origin is not None:
            headers["Origin"] = self.origin
        return self.client.post(f"{POLLING_PATH}&sid={self.sid}", content=body, headers=headers)

    def until(self, wanted: Callable[[str], bool], timeout: float = 20) -> str:
        """Read until a packet ``wanted`` accepts arrives; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.client.get(f"{POLLING_PATH}&sid={self.sid}", timeout=60)
            assert response.status_code == 200, (response.text, self.seen)
            for packet in response.text.split("\x1e"):
                self.seen.append(packet)
                if packet == "2":  # Engine.IO ping
                    assert self.post("3").status_code == 200
                elif wanted(packet):
                    return packet
                assert packet not in ("1", "41"), f"closed: {self.seen}"
        raise AssertionError(f"nothing wanted within {timeout} s: {self.seen}")

    def join(self, token: str) -> dict[str, Any]:
        """An anonymous CONNECT, then ``user-join`` with ``token``; its acknowledgement."""
        assert self.post("40").status_code == 200
        self.until(lambda p: p.startswith('40{"sid"'))
        assert self.post("42" + _user_join(token)).text == "OK"
        (joined,) = self.ack(JOIN_ACK)
        return dict(joined)

    def ack(self, ack_id: int) -> list[Any]:
        prefix = f"43{ack_id}["
        packet = self.until(lambda p: p.startswith(prefix))
        return list(json.loads(packet[len(prefix) - 1 :]))

    def probe(self, chat_id: str) -> bool:
        """May this session's user read ``chat_id``? (OpenWebUI's events:chat join answers.)"""
        body = json.dumps(["events:chat", {"chat_id": chat_id, "data": {"type": "join"}}])
        assert self.post(f"42{PROBE_ACK}{body}").status_code == 200
        return self.ack(PROBE_ACK) == [True]


def _jsonp(payload: str, plus: bool = False) -> str:
    """A JSONP body as python-engineio reads it: ``d=`` and the URL-encoded payload."""
    return "d=" + (quote_plus(payload) if plus else quote(payload))


# Each a POST body that hands ``token`` to OpenWebUI, as CONNECT or in user-join.
POLLING_SPELLINGS: dict[str, Callable[[str], str]] = {
    "plain-user-join": lambda t: "42" + _user_join(t),
    "jsonp-connect": lambda t: _jsonp("40" + json.dumps({"token": t})),
    "jsonp-user-join": lambda t: _jsonp("42" + _user_join(t)),
    "jsonp-plus-user-join": lambda t: _jsonp("42" + _user_join(t), plus=True),
    "jsonp-second-packet": lambda t: _jsonp('42["no-handler",{}]\x1e42' + _user_join(t)),
}


@pytest.fixture(scope="module")
def polling_victim(polling_gate: Stack) -> Person:
    """V on the long-polling OpenWebUI, signed in directly, with a chat of their own."""
    email = fresh_email("poll-victim")
    signed_in = openwebui.sign_in(owui_url(polling_gate), email)
    token = str(signed_in["token"])
    with httpx.Client(base_url=owui_url(polling_gate), timeout=30) as client:
        chat_id = _new_chat(client, {"Authorization": f"Bearer {token}", "X-User-Email": email})
    return Person(id=str(signed_in["id"]), token=token, chat_id=chat_id)


@pytest.fixture(scope="module")
def polling_attacker(polling_gate: Stack) -> Iterator[tuple[Person, httpx.Client]]:
    """A on the long-polling OpenWebUI, signed in at the IdP, talking through its proxy."""
    student = sign_in_through_proxy(polling_gate, fresh_email("poll-attacker"))
    with student as client:
        me = client.get("/api/v1/auths/", headers=student.auth())
        assert me.status_code == 200, me.text
        chat_id = _new_chat(client, student.auth())
        yield Person(id=str(me.json()["id"]), token=student.token, chat_id=chat_id), client


def test_jsonp_body_acts_as_the_token_owner_at_openwebui_directly(
    polling_gate: Stack, polling_victim: Person
) -> None:
    """The control: without the proxy, V's token in a ``d=`` body makes the session V's."""
    with httpx.Client(base_url=owui_url(polling_gate), timeout=30) as client:
        session = Polling(client)
        session.open()
        assert session.post("40").status_code == 200  # an anonymous CONNECT: nobody yet
        session.until(lambda p: p.startswith('40{"sid"'))
        body = POLLING_SPELLINGS["jsonp-user-join"](polling_victim.token)
        assert session.post(body).text == "OK"
        (joined,) = session.ack(JOIN_ACK)
        assert joined["id"] == polling_victim.id
        assert session.probe(polling_victim.chat_id) is True


@pytest.mark.parametrize("name", list(POLLING_SPELLINGS))
def test_the_victims_token_in_a_polling_body_is_refused(
    polling_gate: Stack,
    polling_attacker: tuple[Person, httpx.Client],
    polling_victim: Person,
    name: str,
) -> None:
    attacker, client = polling_attacker
    session = Polling(client, origin=polling_gate.public_url)
    session.open()
    assert session.join(attacker.token)["id"] == attacker.id
    refused = session.post(POLLING_SPELLINGS[name](polling_victim.token))
    assert refused.status_code == 403, refused.text
    # The session is still A's: A's chat yes, V's chat no, and nothing named V.
    assert session.probe(attacker.chat_id) is True
    assert session.probe(polling_victim.chat_id) is False
    assert not any(polling_victim.id in packet for packet in session.seen), session.seen


@pytest.mark.parametrize("name", list(POLLING_SPELLINGS))
def test_the_attackers_own_token_in_a_polling_body_is_answered_as_the_attacker(
    polling_gate: Stack,
    polling_attacker: tuple[Person, httpx.Client],
    polling_victim: Person,
    name: str,
) -> None:
    attacker, client = polling_attacker
    session = Polling(client, origin=polling_gate.public_url)
    session.open()
    if name == "jsonp-connect":
        assert session.post(POLLING_SPELLINGS[name](attacker.token)).text == "OK"
        session.until(lambda p: p.startswith('40{"sid"'))  # the real Socket.IO answer
        # OpenWebUI answers CONNECT before its connect handler has read the token
        # (always_connect), and a probe on a session without a user disconnects it.
        time.sleep(1)
    else:
        assert session.post("40").status_code == 200
        session.until(lambda p: p.startswith('40{"sid"'))
        assert session.post(POLLING_SPELLINGS[name](attacker.token)).text == "OK"
        (joined,) = session.ack(JOIN_ACK)
        assert joined["id"] == attacker.id
    assert session.probe(attacker.chat_id) is True
    assert session.probe(polling_victim.chat_id) is False


def test_long_polling_gets_the_origin_check(
    polling_gate: Stack, polling_attacker: tuple[Person, httpx.Client]
) -> None:
    """Another site's page may neither read nor write a session, nor load one as a script."""
    attacker, client = polling_attacker
    evil = {"Origin": "http://evil.example"}
    assert client.get(POLLING_PATH, headers=evil).status_code == 403
    assert client.get(POLLING_PATH + "&j=0").status_code == 403  # JSONP: a <script> source
    session = Polling(client, origin=polling_gate.public_url)
    session.open()  # same-origin reads carry no Origin: they pass
    own = "40" + json.dumps({"token": attacker.token})
    write = f"{POLLING_PATH}&sid={session.sid}"
    assert client.post(write, content=own, headers=evil).status_code == 403
    assert client.post(write, content=own).status_code == 403  # a write without Origin
    assert session.post(own).text == "OK"  # the control: our Origin
    session.until(lambda p: p.startswith('40{"sid"'))


# --- Engine.IO sessions belong to whoever opened them ------------------------------------------


def test_a_session_id_alone_is_the_session_at_openwebui_directly(
    polling_gate: Stack, polling_victim: Person
) -> None:
    """The control: python-engineio serves a session to anyone presenting its id, as the user
    who opened it (V joined it; another client with only the id acts as V)."""
    with (
        httpx.Client(base_url=owui_url(polling_gate), timeout=30) as owner,
        httpx.Client(base_url=owui_url(polling_gate), timeout=30) as intruder,
    ):
        session = Polling(owner)
        session.open()
        assert session.join(polling_victim.token)["id"] == polling_victim.id
        stolen = Polling(intruder)
        stolen.sid = session.sid
        assert stolen.probe(polling_victim.chat_id) is True


def test_another_person_cannot_use_your_session_through_the_proxy(
    polling_gate: Stack, polling_attacker: tuple[Person, httpx.Client]
) -> None:
    """Intruder I, signed in too, presents A's session id (sealed, as in A's URLs, or bare):
    nothing of it is relayed, and A's session stays A's alone."""
    owner, client = polling_attacker
    session = Polling(client, origin=polling_gate.public_url)
    session.open()
    assert "." in session.sid  # the browser holds the sealed id
    assert session.join(owner.token)["id"] == owner.id
    intruder = sign_in_through_proxy(polling_gate, fresh_email("poll-intruder"))
    probe = json.dumps(["events:chat", {"chat_id": owner.chat_id, "data": {"type": "join"}}])
    with intruder as other:
        for sid in (session.sid, session.sid.rpartition(".")[0]):
            target = f"{POLLING_PATH}&sid={sid}"
            assert other.get(target).status_code == 403
            written = other.post(
                target,
                content=f"42{PROBE_ACK}{probe}",
                headers={"Origin": polling_gate.public_url, "Content-Type": "text/plain"},
            )
            assert written.status_code == 403
    assert session.probe(owner.chat_id) is True  # A's session works, and answered A only
    assert not any(packet.startswith(f"43{PROBE_ACK}[") and packet != f"43{PROBE_ACK}[true]"
                   for packet in session.seen)  # fmt: skip


@pytest.fixture(scope="module")
def two_worker_proxy(polling_gate: Stack) -> Iterator[str]:
    """An ``owui-proxy`` with two workers on one port in front of the long-polling OpenWebUI."""
    host = polling_gate.config.host
    public, admin = free_ports(host, 2)
    url = f"http://{host}:{public}"
    assert polling_gate.openwebui is not None
    env = child_environment(
        {
            "OWUI_PROXY_UPSTREAM": polling_gate.openwebui.url,
            "OWUI_PROXY_LISTEN": f"{host}:{public}",
            "OWUI_PROXY_ADMIN_LISTEN": f"{host}:{admin}",
            "OWUI_PROXY_AUTH": "forward",
            "OWUI_PROXY_FORWARD_AUTH_URL": f"{polling_gate.idp_url}/oauth2/auth",
            "OWUI_PROXY_PUBLIC_URL": url,
            "OWUI_PROXY_WORKERS": "2",
        }
    )
    log = polling_gate.logs / "proxy-two-workers.log"
    try:
        service = spawn(
            "two-worker proxy",
            "owui-proxy with OWUI_PROXY_WORKERS=2 (SO_REUSEPORT)",
            [str(console_script("owui-proxy"))],
            env=env,
            url=url,
            log_path=log,
            ready=http_ready(f"http://{host}:{admin}/healthz", want=200),
        )
    except StackError as exc:
        pytest.fail(f"could not start the two-worker proxy: {exc}", pytrace=False)
    yield url
    service.stop()


def test_a_session_is_bound_across_the_workers_of_one_proxy(
    polling_gate: Stack, two_worker_proxy: str
) -> None:
    """SO_REUSEPORT spreads one browser's polling requests over both workers: each worker
    accepts the opener's seal and refuses everyone else's use of the id."""
    owner_email, intruder_email = fresh_email("poll-workers"), fresh_email("poll-workers-i")
    no_reuse = httpx.Limits(max_keepalive_connections=0)  # a new connection every request
    with (
        httpx.Client(
            base_url=two_worker_proxy,
            cookies=idp_login(polling_gate, owner_email),
            limits=no_reuse,
            timeout=60,
        ) as owner_client,
        httpx.Client(
            base_url=two_worker_proxy,
            cookies=idp_login(polling_gate, intruder_email),
            limits=no_reuse,
            timeout=60,
        ) as intruder,
    ):
        signed_in = owner_client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
        assert signed_in.status_code == 200, signed_in.text
        owner_client.cookies.delete("token")
        session = Polling(owner_client, origin=two_worker_proxy)
        session.open()
        assert session.join(signed_in.json()["token"])["id"] == signed_in.json()["id"]
        for _ in range(6):  # pings answered, packets read: over both workers
            assert session.post("42" + json.dumps(["usage", {}])).text == "OK"
        refused = [intruder.get(f"{POLLING_PATH}&sid={session.sid}").status_code for _ in range(10)]
        assert refused == [403] * 10
    lines = [json.loads(line) for line in _log_lines(polling_gate, "proxy-two-workers.log")]
    workers = {line["request_id"][:16] for line in lines if line.get("event") == "access"}
    assert len(workers) == 2, workers


def _log_lines(the_stack: Stack, name: str) -> list[str]:
    text = (the_stack.logs / name).read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.startswith("{")]


@pytest.mark.browser
def test_the_web_ui_runs_socketio_over_long_polling_through_the_proxy(polling_gate: Stack) -> None:
    """OpenWebUI's own client in Chromium: its same-origin reads carry no ``Origin`` and its
    writes do, so the long-polling ``Origin`` check passes it; its CONNECT and ``user-join``
    carry the user's own token, so the guard passes them."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium", pytrace=False)
    polls: list[Any] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on("response", lambda r: polls.append(r) if "/ws/socket.io/" in r.url else None)
            page.goto(polling_gate.public_url + "/")  # the proxy sends it to the IdP
            page.fill("#email", fresh_email("poll-browser"))
            page.fill("#name", "Poll Browser")
            page.get_by_role("button", name="Sign in").click()
            # The IdP sends it back to the stack's own URL; its cookie is good for ours too.
            progress(page).until(
                lambda: not page.url.startswith(polling_gate.idp_url), "away from the IdP"
            )
            page.goto(polling_gate.public_url + "/")
            progress(page).app()
            deadline = time.monotonic() + 60
            while not any(
                r.request.method == "POST" and "user-join" in (r.request.post_data or "")
                for r in polls
            ):
                assert time.monotonic() < deadline, [(r.request.method, r.status) for r in polls]
                page.wait_for_timeout(500)
            seen = [
                (r.request.method, r.status, r.request.all_headers().get("origin"), r.url)
                for r in polls
            ]
        finally:
            chromium.close()
    assert all(status == 200 for _, status, _, _ in seen), seen
    reads = [origin for method, _, origin, _ in seen if method == "GET"]
    writes = [origin for method, _, origin, _ in seen if method == "POST"]
    assert reads, seen
    assert writes, seen
    assert all(origin is None for origin in reads), seen
    assert all(origin == polling_gate.public_url for origin in writes), seen
