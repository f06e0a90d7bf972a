"""Engine.IO sessions are bound to the person who opened them (sealed session ids).

The seals as a table, then the app against the fake OpenWebUI (whose long-polling handshake
answers ``0{"sid": "eio-N"}``), then real proxy processes: two workers sharing one port
(``SO_REUSEPORT`` spreads one browser's polling requests over both), and two proxies behind
one name sharing ``session_secret_file``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.eio_sessions import SessionSeals, is_handshake
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE
from tests.proxy.test_process import ProxyProcess, start_proxy  # noqa: F401 (fixture)

SEALS = SessionSeals(b"k" * 32)
BOB, ALICE = "bob@example.edu", "alice@example.edu"
OPEN = "/ws/socket.io/?EIO=4&transport=polling"


def test_a_seal_opens_for_its_person_only() -> None:
    sealed = SEALS.seal("S1", BOB)
    assert sealed.startswith("S1.")
    assert SEALS.unseal(sealed, BOB) == "S1"
    assert SEALS.unseal(sealed, ALICE) is None
    assert SEALS.unseal("S1", BOB) is None  # a bare id
    assert SEALS.unseal(sealed[:-1] + ("A" if sealed[-1] != "A" else "B"), BOB) is None
    assert SessionSeals(b"x" * 32).unseal(sealed, BOB) is None  # another proxy's secret
    assert SEALS.unseal("S2" + sealed[2:], BOB) is None  # the mac is the id's


QUERY_ROWS = [
    ("no session: a handshake, as sent", "EIO=4&transport=polling", "EIO=4&transport=polling"),
    ("sealed id unsealed", "EIO=4&sid={bob}", "EIO=4&sid=S1"),
    ("name percent-encoded", "EIO=4&s%69d={bob}", "EIO=4&sid=S1"),
    ("value percent-encoded", "sid={bob_encoded}&EIO=4", "sid=S1&EIO=4"),
    ("a bare id", "EIO=4&sid=S1", None),
    ("another person's seal", "EIO=4&sid={alice}", None),
    ("two ids (engineio reads the first)", "sid={bob}&sid=S2", None),
    ("an empty id", "EIO=4&sid=", None),
    ("a name alone", "EIO=4&sid", None),
    ("plus is a space in the name", "si+d=x&sid={bob}", "si+d=x&sid=S1"),
]


@pytest.mark.parametrize(
    ("query", "relayed"), [r[1:] for r in QUERY_ROWS], ids=[r[0] for r in QUERY_ROWS]
)
def test_unsealed_query(query: str, relayed: str | None) -> None:
    values = {
        "bob": SEALS.seal("S1", BOB),
        "alice": SEALS.seal("S1", ALICE),
        "bob_encoded": quote(SEALS.seal("S1", BOB), safe=""),
    }
    assert SEALS.unsealed_query(query.format(**values), BOB) == relayed


@settings(max_examples=300, derandomize=True, database=None)
@given(query=st.text(alphabet="sid=&%+.S1x269", max_size=30))
def test_what_engineio_reads_is_what_was_checked(query: str) -> None:
    """Whatever the query, python-engineio's reading of what is relayed names only a session
    sealed for this person (or none, for a handshake)."""
    from urllib.parse import parse_qs

    relayed = SEALS.unsealed_query(query, BOB)
    if relayed is None:
        return
    sid = parse_qs(relayed).get("sid", [None])[0]
    if sid is None:
        assert is_handshake(query) or "sid" not in parse_qs(query)
    else:
        assert SEALS.seal(sid, BOB) in {v for vs in parse_qs(query).values() for v in vs}


def test_the_handshake_answer_is_sealed() -> None:
    body = b'0{"sid":"S1","upgrades":["websocket"],"pingInterval":25000}\x1e40'
    sealed = SEALS.sealed_handshake(body, BOB)
    first, _, rest = sealed.partition(b"\x1e")
    assert rest == b"40"
    opened = json.loads(first[1:])
    assert SEALS.unseal(opened["sid"], BOB) == "S1"
    assert opened["upgrades"] == ["websocket"]
    for other in (b'___eio[0]("0{...}");', b"0{not json", b'0{"sid":1}', b"", b"40"):
        assert SEALS.sealed_handshake(other, BOB) == other  # no seal: the session is unusable


# --- the app ------------------------------------------------------------------------------------


async def _open(proxy: Any, cookie: dict[str, str]) -> str:
    """A long-polling handshake through the proxy; the (sealed) id the browser gets."""
    response = await proxy.get(OPEN, headers=cookie)
    assert response.status == 200
    text = await response.text()
    assert text.startswith("0{")
    return str(json.loads(text[1:])["sid"])


def _to_openwebui(fake_upstream: Any) -> list[str]:
    return [s.raw_path for s in fake_upstream.seen if s.raw_path.startswith("/ws/socket.io")]


async def test_the_opener_polls_and_writes_in_their_session(proxy, fake_upstream) -> None:
    sid = await _open(proxy, BOB_COOKIE)
    assert sid.startswith("eio-1.")
    read = await proxy.get(f"{OPEN}&sid={sid}", headers=BOB_COOKIE)
    assert read.status == 200
    write = await proxy.post(f"{OPEN}&sid={sid}", data=b"40", headers=BOB_COOKIE)
    assert write.status == 200
    assert _to_openwebui(fake_upstream)[1:] == [f"{OPEN}&sid=eio-1"] * 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_another_person_cannot_use_the_session(proxy, fake_upstream, method: str) -> None:
    """Alice holds Bob's id (from a log, say): neither sealed nor bare does she get in."""
    sid = await _open(proxy, BOB_COOKIE)
    for presented in (sid, sid.rpartition(".")[0]):
        response = await proxy.request(
            method, f"{OPEN}&sid={presented}", data=b"40", headers=ALICE_COOKIE
        )
        assert response.status == 403
    assert _to_openwebui(fake_upstream) == [OPEN]  # Bob's handshake, nothing of Alice's


async def test_nor_upgrade_it_to_a_websocket(proxy, fake_upstream) -> None:
    sid = await _open(proxy, BOB_COOKIE)
    upgrade = "/ws/socket.io/?EIO=4&transport=websocket&sid="
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect(upgrade + sid, headers=ALICE_COOKIE)
    assert refused.value.status == 403
    async with proxy.ws_connect(upgrade + sid, headers=BOB_COOKIE) as ws:
        await ws.send_str("2probe")
        assert (await ws.receive(timeout=10)).data == "2probe"
    assert fake_upstream.seen[-1].raw_path == upgrade + "eio-1"


# --- processes: two workers, two proxies ----------------------------------------------------------


async def _polls(proc: ProxyProcess, sid: str, cookie: dict[str, str], n: int) -> list[int]:
    """``n`` polls, each on a new connection (the kernel picks a worker for each)."""
    statuses = []
    for _ in range(n):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(f"{proc.public}{OPEN}&sid={sid}", headers=cookie) as response,
        ):
            statuses.append(response.status)
    return statuses


async def _open_at(proc: ProxyProcess, cookie: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(proc.public + OPEN, headers=cookie) as response,
    ):
        assert response.status == 200
        return str(json.loads((await response.text())[1:])["sid"])


async def test_the_binding_holds_across_workers(start_proxy, fake_upstream) -> None:  # noqa: F811
    proc = start_proxy(workers="2")
    async with aiohttp.ClientSession() as session:
        await proc.wait_ready(session)
    sid = await _open_at(proc, BOB_COOKIE)
    assert await _polls(proc, sid, BOB_COOKIE, 20) == [200] * 20
    assert await _polls(proc, sid, ALICE_COOKIE, 20) == [403] * 20
    # Both workers answered: request ids start with a prefix of their own per process.
    lines = [json.loads(line) for line in proc.output().splitlines() if '"access"' in line]
    assert len({line["request_id"][:16] for line in lines}) == 2


async def test_the_binding_holds_across_proxies_sharing_the_secret(
    start_proxy,  # noqa: F811
    fake_upstream,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "session-secret"
    secret.write_text("# Engine.IO session seals\n" + "s" * 40 + "\n")
    secret.chmod(0o600)
    first = start_proxy(session_secret_file=str(secret))
    second = start_proxy(session_secret_file=str(secret))
    stranger = start_proxy()  # its own random secret
    async with aiohttp.ClientSession() as session:
        for proc in (first, second, stranger):
            await proc.wait_ready(session)
    sid = await _open_at(first, BOB_COOKIE)
    assert await _polls(second, sid, BOB_COOKIE, 3) == [200] * 3
    assert await _polls(second, sid, ALICE_COOKIE, 3) == [403] * 3
    assert await _polls(stranger, sid, BOB_COOKIE, 1) == [403]  # fail closed without it


async def test_the_session_is_bound_after_the_credentials_the_request_carries(
    proxy, fake_upstream
) -> None:
    """The UI sends its OpenWebUI token along: Bob's own token and his session pass; someone
    else's token is refused before the session is looked at; his session is Alice's with
    none of her own tokens."""
    own = {"Cookie": f"{BOB_COOKIE['Cookie']}; token=tok.bob@example.edu"}
    sid = await _open(proxy, own)
    read = await proxy.get(
        f"{OPEN}&sid={sid}", headers={**own, "Authorization": "Bearer tok.bob@example.edu"}
    )
    assert read.status == 200
    assert _to_openwebui(fake_upstream)[-1] == f"{OPEN}&sid=eio-1"
    stolen = await proxy.get(
        f"{OPEN}&sid={sid}", headers={**own, "Authorization": "Bearer tok.alice@example.edu"}
    )
    assert stolen.status == 401
    alice = {"Cookie": f"{ALICE_COOKIE['Cookie']}; token=tok.alice@example.edu"}
    theirs = await proxy.get(f"{OPEN}&sid={sid}", headers=alice)
    assert theirs.status == 403
    assert len(_to_openwebui(fake_upstream)) == 2  # the handshake and Bob's own read
