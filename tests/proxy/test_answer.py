"""``WholeAnswer`` (``proxy/answer.py``) puts on the wire exactly the bytes ``web.Response``
would, for every request version and connection choice, status, header set and body size:
a later aiohttp that answers differently fails here."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from proxy.answer import WholeAnswer, carries_body

BIG = b"b" * (40 * 1024)  # past the one-buffer threshold: head and body as two buffers

# (status, headers, body)
ANSWERS: list[tuple[int, list[tuple[str, str]], bytes]] = [
    (200, [("Content-Type", "application/json")], b'{"ok":true}'),
    (200, [], b"no type given"),  # aiohttp's default type
    (200, [], b""),  # no body: no default type, Content-Length: 0
    (201, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Thing", "x")], b"made"),
    (404, [("Content-Type", "text/plain"), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], b"no"),
    (401, [("Server", "uvicorn"), ("Content-Type", "application/json")], b'{"detail":"x"}'),
    (500, [("Connection", "close")], b"broken"),  # an answer that chose its connection
    (599, [("Content-Type", "text/plain")], b"unknown status: no reason phrase"),
    (200, [("Content-Type", "application/octet-stream")], BIG),
    (200, [("X-Unicode", "Ängström ✓")], b"utf-8 in a value"),
]

# (request line's version and connection headers, method)
REQUESTS = [
    ("HTTP/1.1", "", "GET"),
    ("HTTP/1.1", "Connection: close\r\n", "GET"),
    ("HTTP/1.0", "", "GET"),
    ("HTTP/1.0", "Connection: keep-alive\r\n", "GET"),
    ("HTTP/1.1", "", "POST"),
    ("HTTP/1.1", "", "DELETE"),
]

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


async def _exchange(port: int, raw: bytes, closes: bool = False) -> bytes:
    """The bytes of one answer to ``raw`` (its head, then as many as Content-Length says);
    with ``closes``, all the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        if closes:
            return await asyncio.wait_for(reader.read(), 10)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        assert length is not None, head
        return head + await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    finally:
        writer.close()


def _app(hooked: list[str]) -> web.Application:
    async def plain(request: web.Request) -> web.StreamResponse:
        status, headers, body = ANSWERS[int(request.query["case"])]
        return web.Response(status=status, headers=headers, body=body)

    async def whole(request: web.Request) -> web.StreamResponse:
        status, headers, body = ANSWERS[int(request.query["case"])]
        answer = WholeAnswer(status, list(headers), body)
        if request.query.get("prepared"):  # as the relay sends it: before returning
            await answer.prepare(request)
        return answer

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        hooked.append(type(response).__name__)
        response.headers["X-Request-ID"] = "rid-" + request.query["case"]

    app = web.Application()
    app.router.add_route("*", "/plain", plain)
    app.router.add_route("*", "/whole", whole)
    app.on_response_prepare.append(hook)
    return app


@pytest.mark.parametrize("prepared", ["", "1"], ids=["returned", "prepared"])
@pytest.mark.parametrize(("version", "connection", "method"), REQUESTS)
async def test_the_same_bytes_as_aiohttps_response(
    aiohttp_server: Any, version: str, connection: str, method: str, prepared: str
) -> None:
    hooked: list[str] = []
    server = await aiohttp_server(_app(hooked))
    # Not kept alive: the server must close after the answer (read until it does).
    closes = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    for case, (status, _headers, _body) in enumerate(ANSWERS):
        assert carries_body(method, status)
        answers = []
        for path in (f"/plain?case={case}", f"/whole?case={case}&prepared={prepared}"):
            raw = f"{method} {path} {version}\r\nHost: x\r\n{connection}\r\n".encode()
            answers.append(await _exchange(server.port, raw, closes))
        plain, whole = answers
        if b"1994" not in plain:  # aiohttp's own Date: the clock's, maybe a second apart
            plain, whole = (_DATE.sub(b"\r\nDate: *\r\n", answer) for answer in answers)
        assert whole == plain, (case, plain[:400], whole[:400])
        assert f"X-Request-ID: rid-{case}\r\n".encode() in whole  # the app's hook ran
    assert hooked.count("WholeAnswer") == len(ANSWERS)
    assert hooked.count("Response") == len(ANSWERS)


@pytest.mark.parametrize(
    ("method", "status"),
    [("HEAD", 200), ("GET", 204), ("GET", 304), ("GET", 101), ("CONNECT", 200)],
)
def test_answers_that_must_be_empty_are_not_whole_answers(method: str, status: int) -> None:
    assert not carries_body(method, status)


async def _serving(
    aiohttp_server: Any, answer: WholeAnswer, *, client_gone: bool = False
) -> tuple[int, list[BaseException]]:
    """A server whose one route prepares ``answer`` (with ``client_gone``, after closing the
    client's connection); its port, and what the prepare raised."""
    raised: list[BaseException] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if client_gone:
            assert request.transport is not None
            request.transport.close()  # the client went away while the answer was made
        try:
            await answer.prepare(request)
        except Exception as exc:
            raised.append(exc)
            raise
        return answer

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    return server.port, raised


async def test_a_header_with_a_line_break_is_refused(aiohttp_server: Any) -> None:
    answer = WholeAnswer(200, [("X-Bad", "a\r\nSet-Cookie: evil=1")], b"x")
    port, raised = await _serving(aiohttp_server, answer)
    got = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in got
    assert len(raised) == 1
    assert isinstance(raised[0], ValueError)


async def test_a_client_gone_is_a_connection_error(aiohttp_server: Any) -> None:
    answer = WholeAnswer(200, [], b"too late")
    port, raised = await _serving(aiohttp_server, answer, client_gone=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert len(raised) == 1
    assert isinstance(raised[0], ClientConnectionResetError)


def _nested_app() -> web.Application:
    """Two hooks on the app, one on a sub-app the routes live in: every hook adds its own
    ``X-Hook`` line, so the answer's bytes show which ran, in which order, given what."""

    def hook(name: str) -> Any:
        async def add(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.add("X-Hook", f"{name} {type(response).__name__} {request.path}")

        return add

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers=[("Content-Type", "text/plain")], body=b"x")

    async def whole(request: web.Request) -> web.StreamResponse:
        answer = WholeAnswer(200, [("Content-Type", "text/plain")], b"x")
        await answer.prepare(request)
        return answer

    sub = web.Application()
    sub.router.add_get("/plain", plain)
    sub.router.add_get("/whole", whole)
    sub.on_response_prepare.append(hook("inner"))
    app = web.Application()
    app.on_response_prepare.append(hook("outer-1"))
    app.on_response_prepare.append(hook("outer-2"))
    app.add_subapp("/sub", sub)
    return app


async def test_the_hooks_of_every_app_run_as_for_aiohttps_response(aiohttp_server: Any) -> None:
    server = await aiohttp_server(_nested_app())
    answers = []
    for path in ("/sub/plain", "/sub/whole"):
        raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        answers.append(_DATE.sub(b"\r\nDate: *\r\n", await _exchange(server.port, raw)))
    plain, whole = answers
    hooks = re.findall(rb"X-Hook: ([^\r]*)\r\n", whole)
    assert hooks == [
        b"outer-1 WholeAnswer /sub/whole",
        b"outer-2 WholeAnswer /sub/whole",
        b"inner WholeAnswer /sub/whole",
    ]
    assert whole == plain.replace(b"Response /sub/plain", b"WholeAnswer /sub/whole")


async def test_a_request_without_apps_runs_no_hook(aiohttp_raw_server: Any) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        answer = WholeAnswer(200, [("Content-Type", "text/plain")], b"low level")
        await answer.prepare(request)
        return answer

    async def plain(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=200, headers=[("Content-Type", "text/plain")], body=b"low level")

    answers = []
    for chosen in (plain, handler):
        server = await aiohttp_raw_server(chosen)
        raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        answers.append(_DATE.sub(b"\r\nDate: *\r\n", await _exchange(server.port, raw)))
    assert answers[1] == answers[0]
