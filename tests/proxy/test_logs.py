"""The access line: written outside structlog's chain, so its guarantees are checked here."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import io
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from proxy import logs
from proxy.settings import SettingsError, load_settings
from tests.proxy.conftest import ALICE_COOKIE, BOB_COOKIE

SECRET_LIKE = logs._SECRET_FIELD


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(logs._access, "out", out)
    return out


def lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


async def test_one_access_line_per_request_with_the_documented_fields(proxy, sink) -> None:
    response = await proxy.get(
        "/api/x?token=query-secret", headers={**ALICE_COOKIE, "X-Request-ID": "abc"}
    )
    assert response.status == 200
    (line,) = lines(sink)
    assert line["event"] == "access"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert len(line["request_id"]) == 32
    assert int(line["request_id"], 16) >= 0
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/x", 200)
    assert line["email"] == "alice@example.edu"
    assert line["client_request_id"] == "abc"
    assert "query-secret" not in sink.getvalue()
    assert "alice-session" not in sink.getvalue()


async def test_every_field_of_the_public_access_line_is_in_its_place(proxy, sink) -> None:
    """Each field holds its own value (the line is written from positional arguments)."""
    response = await proxy.get("/api/x", headers={**ALICE_COOKIE, "X-Request-ID": "abc"})
    body = await response.read()
    (line,) = lines(sink)
    assert list(line) == [
        "request_id",
        "listener",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "upstream_ms",
        "email",
        "peer",
        "client_request_id",
        "event",
        "level",
        "timestamp",
    ]
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["listener"], line["method"], line["path"]) == ("public", "GET", "/api/x")
    assert line["status"] == 200
    assert line["bytes"] >= len(body) > 0  # what went out (a relayed answer's head too)
    assert isinstance(line["duration_ms"], float)
    assert isinstance(line["upstream_ms"], float)
    assert 0 <= line["upstream_ms"] <= line["duration_ms"]
    assert (line["email"], line["peer"]) == ("alice@example.edu", "127.0.0.1")
    assert line["client_request_id"] == "abc"


async def test_no_access_field_name_is_one_redaction_would_blank(proxy, sink) -> None:
    """structlog's ``redact`` does not run on this line: its names must not need it."""
    await proxy.get("/", headers=ALICE_COOKIE)
    await proxy.get("/")  # denied: the other branch of the line
    for line in lines(sink):
        assert not [name for name in line if SECRET_LIKE.search(name)]


def test_the_access_line_follows_the_log_level() -> None:
    try:
        logs.configure("warning")
        assert logs._access.out is None
        logs.configure("info")
        assert logs._access.out is not None
    finally:
        logs.configure("info")


def test_request_ids_are_unique_hex() -> None:
    from proxy.respond import new_request_id

    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_request_ids_are_the_prefix_and_the_counter_in_hex() -> None:
    """Made a block at a time (``proxy/respond.py``): still id ``n`` is the process's prefix
    and ``n`` in 16 hex digits, across block boundaries."""
    from proxy import respond

    respond._ids.reset()
    ids = [respond.new_request_id() for _ in range(5 * 256 + 3)]
    prefix = respond._ids.prefix
    assert ids == [f"{prefix}{n:016x}" for n in range(len(ids))]
    respond._ids.reset()
    assert respond._ids.prefix != prefix
    assert respond.new_request_id() == f"{respond._ids.prefix}{0:016x}"


def test_a_forked_worker_gets_ids_of_its_own() -> None:
    import multiprocessing

    from proxy.respond import new_request_id

    parent = new_request_id()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(new_request_id)
    assert child[:16] != parent[:16]


@pytest.mark.parametrize(("method", "target"), [("OPTIONS", "*"), ("CONNECT", "evil.test:443")])
async def test_a_target_no_route_matches_is_still_observed(proxy, sink, method, target) -> None:
    """aiohttp answers these itself; they still get an id, an access line and a count."""
    from proxy.app import PUBLIC_KEY
    from tests.proxy.rawhttp import raw_request
    from tests.proxy.test_process import _metric

    server = proxy.server
    response = await raw_request(server.host, server.port, target, [], method=method)
    assert response.status in (400, 404)
    (line,) = lines(sink)
    assert line["method"] == method
    assert line["status"] == response.status
    assert response.headers["X-Request-ID"] == line["request_id"]
    text = server.app[PUBLIC_KEY].observation.metrics.render().decode()
    assert _metric(text, "owui_proxy_requests_total", listener="public", status_class="4xx") == 1


async def test_upstream_breaking_mid_body_is_logged_502_not_client_closed(proxy, sink) -> None:
    """Both cut the client connection; only the upstream's break is a 502."""
    response = await proxy.get("/broken", headers=ALICE_COOKIE)
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    for _ in range(100):
        if lines(sink):
            break
        await asyncio.sleep(0.02)
    (line,) = lines(sink)
    assert (line["path"], line["status"]) == ("/broken", 502)


# --- the access line's timestamp and flushing ------------------------------------------------


@pytest.mark.parametrize(
    "now_ns",
    [
        pytest.param(1_795_000_000_250_000_000, id="quarter"),
        pytest.param(1_795_000_000_000_001_000, id="one-microsecond"),
        pytest.param(1_795_000_000_000_000_999, id="below-a-microsecond-no-fraction"),
        pytest.param(1_795_000_000_000_000_000, id="whole-second-no-fraction"),
        pytest.param(1_795_000_059_999_999_999, id="last-nanosecond-of-a-minute-floored"),
        pytest.param(1_795_003_599_999_999_000, id="last-microsecond-of-an-hour"),
        pytest.param(1_795_003_600_000_999_000, id="just-below-a-millisecond"),
    ],
)
def test_access_timestamp_is_isoformat_utc_with_z(monkeypatch, sink, now_ns) -> None:
    """The text structlog's ``TimeStamper(fmt="iso", utc=True)`` writes for the same clock
    reading (``datetime.now``: the nanoseconds floored to microseconds; ``isoformat``: no
    fraction when they are zero), the date part cached per second."""
    monkeypatch.setattr(logs.time, "time_ns", lambda: now_ns)
    monkeypatch.setattr(logs._access, "second_us", -1)
    logs.access(request_id="r")
    logs.access(request_id="r")  # the second from the cache
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    expected = (epoch + datetime.timedelta(microseconds=now_ns // 1000)).isoformat()
    expected = expected.replace("+00:00", "Z")
    assert [json.loads(x)["timestamp"] for x in sink.getvalue().splitlines()] == [expected] * 2


def test_access_timestamp_reads_the_clock_structlog_reads() -> None:
    """Between the times structlog's own stamper gives just before and just after, over
    many seconds' worth of cached and uncached seconds."""
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def parsed(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text)

    for n in range(2000):
        if n % 100 == 0:
            logs._access.second_us = -1  # as a new second would
        before = parsed(stamper(None, "info", {})["timestamp"])
        ours = parsed(logs._timestamp())
        after = parsed(stamper(None, "info", {})["timestamp"])
        assert before <= ours <= after


class _Writes(io.StringIO):
    """A sink that remembers each write (each is one system call on an unbuffered stdout)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_access_lines_of_one_loop_iteration_go_out_in_one_write(tmp_path, monkeypatch):
    """Written when the iteration ends (many requests finish in one), then on disk."""
    path = tmp_path / "access.log"
    with path.open("w") as out:
        monkeypatch.setattr(logs._access, "out", out)
        logs.access(request_id="a")
        logs.access(request_id="b")
        assert path.read_text() == ""  # not yet: the loop has not turned
        await asyncio.sleep(0)
        assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == ["a", "b"]
        logs.access(request_id="c")
        await asyncio.sleep(0)
        assert len(path.read_text().splitlines()) == 3
    sink = _Writes()
    monkeypatch.setattr(logs._access, "out", sink)
    for n in range(5):
        logs.access(request_id=str(n))
    await asyncio.sleep(0)
    assert len(sink.writes) == 1
    assert [json.loads(x)["request_id"] for x in sink.getvalue().splitlines()] == list("01234")


async def test_access_writes_are_whole_lines_each_small_enough_to_reach_a_pipe_whole(
    monkeypatch,
) -> None:
    """Workers share stdout: a write of at most PIPE_BUF bytes is never interleaved with
    another's, so no write may be longer (a long line is cut to fit: proxy/logs.py ``fit``)
    or split a line."""
    sink = _Writes()
    monkeypatch.setattr(logs._access, "out", sink)
    for n in range(100):
        logs.access(request_id=f"{n:03d}", path="/x" * 20)
    logs.access(request_id="long", path="/" + "y" * 2 * logs._ATOMIC_WRITE)
    logs.access(request_id="after")
    await asyncio.sleep(0)
    assert len(sink.writes) > 1
    for text in sink.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= logs._ATOMIC_WRITE
    ids = [json.loads(x)["request_id"] for x in sink.getvalue().splitlines()]
    assert ids == [f"{n:03d}" for n in range(100)] + ["long", "after"]


def test_access_lines_outside_a_loop_are_flushed_at_once(tmp_path, monkeypatch) -> None:
    path = tmp_path / "access.log"
    with path.open("w") as out:
        monkeypatch.setattr(logs._access, "out", out)
        logs.access(request_id="a")
        assert json.loads(path.read_text())["request_id"] == "a"


# --- pseudonyms (OWUI_PROXY_LOG_PSEUDONYM_KEY_FILE) -------------------------------------------

KEY = "pseudonym-key-" + "k" * 32
ALICE_EMAIL, BOB_EMAIL = "alice@example.edu", "bob@example.edu"


def key_file(tmp_path, key: str = KEY, mode: int = 0o600):
    path = tmp_path / "log-pseudonym-key"
    path.write_text(f"# the access log's pseudonym key\n{key}\n", encoding="ascii")
    path.chmod(mode)
    return path


def pseudonym_of(email: str, key: str = KEY) -> str:
    """Computed here, apart from proxy/pseudonym.py: HMAC-SHA-256, first 16 hex digits."""
    return hmac.new(key.encode(), email.encode(), hashlib.sha256).hexdigest()[:16]


async def test_with_a_key_access_lines_name_people_by_a_stable_pseudonym(
    make_proxy, sink, tmp_path
) -> None:
    proxy = await make_proxy(log_pseudonym_key_file=str(key_file(tmp_path)))
    for cookie in (ALICE_COOKIE, BOB_COOKIE, ALICE_COOKIE):
        assert (await proxy.get("/api/x", headers=cookie)).status == 200
    assert (await proxy.get("/api/x")).status == 401  # nobody: no pseudonym either
    seen = lines(sink)
    assert [line["pseudonym"] for line in seen] == [
        pseudonym_of(ALICE_EMAIL),
        pseudonym_of(BOB_EMAIL),
        pseudonym_of(ALICE_EMAIL),
        None,
    ]
    assert all("email" not in line for line in seen)
    for secret in ("alice@", "bob@", KEY, "alice-session", "bob-session"):
        assert secret not in sink.getvalue()
    assert not [name for line in seen for name in line if SECRET_LIKE.search(name)]


async def test_with_a_key_no_line_about_a_request_names_the_person(
    make_proxy, sink, tmp_path
) -> None:
    """The access line is joinable to every other line of its request by request id: those
    name the person by the same pseudonym, or not at all."""
    proxy = await make_proxy(
        log_pseudonym_key_file=str(key_file(tmp_path)), allowed_email_domains="school.edu"
    )
    with capture_logs() as captured:
        page = await proxy.get("/", headers={**BOB_COOKIE, "Accept": "text/html"})
        api = await proxy.get("/api/models", headers=BOB_COOKIE)
    assert (page.status, api.status) == (403, 403)
    assert "bob@example.edu" in await page.text()  # the person is told who they are
    denied = [line for line in captured if line["event"] == "access_denied"]
    assert [line["pseudonym"] for line in denied] == [pseudonym_of(BOB_EMAIL)] * 2
    assert {line["event"] for line in captured} >= {"access_denied", "request_failed"}
    written = json.dumps(captured) + sink.getvalue()
    for secret in (BOB_EMAIL, KEY, "bob-session"):
        assert secret not in written


async def test_without_a_key_access_lines_keep_the_email(proxy, sink) -> None:
    await proxy.get("/api/x", headers=ALICE_COOKIE)
    (line,) = lines(sink)
    assert line["email"] == ALICE_EMAIL
    assert "pseudonym" not in line


def test_support_turns_an_email_into_its_pseudonym_with_the_key(tmp_path) -> None:
    """``python -m proxy.pseudonym KEY_FILE EMAIL...``, as the access line writes it (emails
    are lower-case there); emails from standard input without arguments."""
    path = key_file(tmp_path)
    command = [sys.executable, "-m", "proxy.pseudonym", str(path)]
    given = subprocess.run(
        [*command, "Alice@Example.EDU", BOB_EMAIL], capture_output=True, text=True, check=True
    )
    assert given.stdout.splitlines() == [
        f"{ALICE_EMAIL} {pseudonym_of(ALICE_EMAIL)}",
        f"{BOB_EMAIL} {pseudonym_of(BOB_EMAIL)}",
    ]
    piped = subprocess.run(
        command, input=f"{BOB_EMAIL}\n\n", capture_output=True, text=True, check=True
    )
    assert piped.stdout == f"{BOB_EMAIL} {pseudonym_of(BOB_EMAIL)}\n"
    assert KEY not in given.stdout + given.stderr + piped.stdout + piped.stderr


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        pytest.param("short", 0o600, "shorter than 32 characters", id="short"),
        pytest.param("# only a comment", 0o600, "holds no key", id="empty"),
        pytest.param(KEY, 0o644, "world-readable", id="world-readable"),
    ],
)
def test_an_unusable_key_file_stops_the_start_naming_the_setting(
    tmp_path, monkeypatch, content, mode, problem
) -> None:
    path = tmp_path / "key"
    path.write_text(content + "\n")
    path.chmod(mode)
    monkeypatch.setenv("OWUI_PROXY_UPSTREAM", "http://127.0.0.1:8080")
    monkeypatch.setenv("OWUI_PROXY_AUTH", "forward")
    monkeypatch.setenv("OWUI_PROXY_FORWARD_AUTH_URL", "http://127.0.0.1:4180/oauth2/auth")
    monkeypatch.setenv("OWUI_PROXY_LOG_PSEUDONYM_KEY_FILE", str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    (line,) = caught.value.problems
    assert line.startswith("OWUI_PROXY_LOG_PSEUDONYM_KEY_FILE: ")
    assert problem in line
    assert KEY not in line


async def test_with_a_key_the_internal_audit_keeps_whom_a_service_acted_as(
    aiohttp_client, aiohttp_server, tmp_path
) -> None:
    """The audit trail stays complete: a pseudonym there would hide whom a token acted as."""
    from proxy.internal import create_internal_app
    from proxy.upstream import Upstream
    from tests.fakes import FakeUpstream
    from tests.proxy.test_internal import AUTH, STUDENT, TOKEN, make_settings, write_tokens

    upstream_server = await aiohttp_server(FakeUpstream().app())
    write_tokens(tmp_path / "tokens", TOKEN)
    settings = make_settings(
        tmp_path,
        str(upstream_server.make_url("/")),
        log_pseudonym_key_file=key_file(tmp_path),
    )
    upstream = Upstream.open(settings)
    try:
        client = await aiohttp_client(create_internal_app(settings, upstream))
        with capture_logs() as captured:
            response = await client.get("/api/config", headers={**AUTH, "X-User-Email": STUDENT})
        assert response.status == 200
    finally:
        await upstream.close()
    (audit,) = [line for line in captured if line["event"] == "internal_audit"]
    assert audit["act_as"] == STUDENT
    assert KEY not in json.dumps(captured)


_TRICKY = '"quoted" \\ back\tslash\nnew\x00line é \U0001f600 \udcff'


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(
            {
                "request_id": "ab" * 16,
                "listener": "public",
                "method": "GET",
                "path": "/api/v1/chats/list",
                "status": 200,
                "body_bytes": 38,
                "duration_ms": 1.2,
                "upstream_ms": 0.8,
                "email": "alice@example.edu",
                "peer": "127.0.0.1",
                "client_request_id": "abc",
            },
            id="a-relayed-request",
        ),
        pytest.param({"request_id": "r"}, id="every-optional-field-null"),
        pytest.param(
            {"request_id": "r", "status": 200, "pseudonym": "0123456789abcdef"},
            id="a-pseudonym-in-the-email's-place",
        ),
        pytest.param({"request_id": "r", "pseudonym": None}, id="a-pseudonym-of-nobody"),
        pytest.param(
            {
                "request_id": _TRICKY,
                "method": _TRICKY,
                "path": _TRICKY,
                "status": 499,
                "body_bytes": 0,
                "duration_ms": 12345.6,
                "upstream_ms": 0.0,
                "email": _TRICKY,
                "peer": "",
                "client_request_id": _TRICKY,
            },
            id="escapes-and-edge-numbers",
        ),
        pytest.param(
            {"request_id": "r", "duration_ms": 2.6749999, "upstream_ms": 0.05},
            id="milliseconds-rounded-to-a-tenth",
        ),
        pytest.param(
            {"request_id": "r", "duration_ms": 2e16, "upstream_ms": -0.05},
            id="milliseconds-written-the-long-way",
        ),
    ],
)
def test_the_access_line_is_what_json_dumps_writes(monkeypatch, sink, fields) -> None:
    """Formatted by hand for speed: character for character ``json.dumps`` of the same
    fields in the same order (its string escaping, ``ensure_ascii``, separators)."""
    monkeypatch.setattr(logs.time, "time_ns", lambda: 1_795_000_000_250_000_000)
    logs.access(**fields)
    expected = {
        "request_id": fields["request_id"],
        "listener": fields.get("listener", "public"),
        "method": fields.get("method"),
        "path": fields.get("path"),
        "status": fields.get("status"),
        "bytes": fields.get("body_bytes"),
        "duration_ms": _tenth(fields.get("duration_ms")),
        "upstream_ms": _tenth(fields.get("upstream_ms")),
        **(
            {"pseudonym": fields["pseudonym"]}
            if "pseudonym" in fields
            else {"email": fields.get("email")}
        ),
        "peer": fields.get("peer"),
        "client_request_id": fields.get("client_request_id"),
        "event": "access",
        "level": "info",
        "timestamp": "2026-11-18T11:06:40.250000Z",
    }
    assert sink.getvalue() == json.dumps(expected) + "\n"


def _tenth(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


@given(
    st.one_of(
        st.floats(min_value=0, max_value=1e5),
        st.floats(min_value=0, max_value=2e16),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.05, 0.15, 0.25, 2.675, 1e15, 1e15 - 0.05, 2.0**49 + 0.5]),
    )
)
def test_milliseconds_are_written_as_rounding_them_wrote_them(ms: float) -> None:
    """``%.1f`` in the range it is used, the long way outside it: what the line held when
    its callers rounded (``repr`` of a finite float is what ``json.dumps`` writes)."""
    assert logs._tenths(ms) == repr(round(ms, 1))


# --- the access line's path: the target's own when it needs no decoding ----------------------

# Pieces of request targets aiohttp's parser accepts on a request line, the awkward ones
# over-represented: escapes (of "/", "%", "?", "#", non-ASCII, broken), dot segments, "+",
# ";", "#", "?", characters a path may not hold raw.
# fmt: off
_TARGET_PIECES = [
    "/", "//", "/.", "/..", "a", "Z", "0", "-._~", "!$&'()*+,=:@", ";", "?", "#", "?#", "&",
    "%", "%2F", "%2f", "%25", "%23", "%3F", "%2B", "%20", "%C3%A9", "%FF", "%zz", "\\", "|",
    "\u00e9", "socket.io", "auths",
]
# fmt: on


def _parsed_request(raw: str) -> aiohttp.web.Request | None:
    """``raw`` as the public listener's request: parsed by aiohttp's own parser (None: it
    refuses the request line)."""
    from unittest import mock

    from aiohttp import web
    from aiohttp.http_parser import HttpRequestParser

    loop = asyncio.new_event_loop()
    try:
        protocol = mock.Mock(ssl_context=None, peername=("127.0.0.1", 1), sockname=None)
        parser = HttpRequestParser(protocol, loop, 2**16, max_line_size=8190)
        head = f"GET {raw} HTTP/1.1\r\nHost: x\r\n\r\n".encode("utf-8", "surrogateescape")
        try:
            (message, payload), *_ = parser.feed_data(head)[0]
        except Exception:
            return None
        return web.Request(message, payload, protocol, mock.Mock(), mock.Mock(), loop)
    finally:
        loop.close()


@given(raw=st.lists(st.sampled_from(_TARGET_PIECES), max_size=8).map(lambda p: "/" + "".join(p)))
def test_the_access_line_path_is_the_requests_path(raw: str) -> None:
    """``access_line`` takes the path from the target the handler read when the target says
    the same as ``request.path`` (yarl's decoding) without any decoding: for every target
    aiohttp accepts, the line holds ``request.path``."""
    from proxy.app import access_line
    from proxy.observe import Seen
    from proxy.scope import NOTES_KEY, Notes
    from proxy.target import read_target

    request = _parsed_request(raw)
    if request is None:
        return
    request[NOTES_KEY] = Notes("r", read_target(request.raw_path))
    out, logs._access.out = logs._access.out, io.StringIO()
    try:
        access_line(request, Seen("r", 0.0, 200))  # outside a loop: written at once
        (line,) = logs._access.out.getvalue().splitlines()
    finally:
        logs._access.out = out
    assert json.loads(line)["path"] == request.path
