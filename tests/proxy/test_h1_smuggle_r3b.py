"""A request body goes upstream as the client sent it, at exactly the length its head declares.

aiohttp's server inflates a request body the client sent with ``Content-Encoding: gzip``
(or deflate) before the handler reads it, and the relay passed the client's
``Content-Length`` (the coded size) on with the inflated bytes. OpenWebUI's server read the
declared length as the body and everything after it as the next request on that pooled
connection: a signed-in person could send a second request, with any identity header they
liked, past every check of the proxy (request smuggling). Here the upstream is uvicorn with
httptools and Starlette, as OpenWebUI runs. The public and internal listeners now take
bodies uninflated (``auto_decompress`` off), so a coded body goes upstream coded, under its
own length; and the exchange writes a streamed body at exactly its declared length or
refuses it, whatever hands it over.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy import h1
from proxy.app import create_app
from proxy.errors import BadRequest
from proxy.settings import Settings
from tests.proxy.rawhttp import raw_request
from tests.proxy.test_h1 import Conn, hdrs, ok, pool_for, scripted  # noqa: F401 (fixture)
from tests.proxy.uvicorn_serving import uvicorn_serving

SMUGGLED = (
    b"POST /api/v1/users/admin-only HTTP/1.1\r\nHost: owui\r\n"
    b"X-User-Email: admin@example.edu\r\nContent-Length: 0\r\n\r\n"
)


class OpenWebUI:
    """uvicorn (httptools) and Starlette, recording whom each request it read was for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.bodies: list[tuple[bytes, str | None]] = []  # each body, and its coding

    def app(self) -> Starlette:
        async def config(_request: Request) -> JSONResponse:
            return JSONResponse({"version": "0.12.4", "features": {}})

        async def anything(request: Request) -> JSONResponse:
            body = await request.body()
            self.seen.append((request.url.path, request.headers.get("x-user-email")))
            self.bodies.append((body, request.headers.get("content-encoding")))
            return JSONResponse({"ok": True})

        return Starlette(
            routes=[
                Route("/api/config", config),
                Route("/{path:path}", anything, methods=["GET", "POST", "PUT"]),
            ]
        )


@pytest.fixture
async def openwebui() -> AsyncIterator[tuple[OpenWebUI, int]]:
    owui = OpenWebUI()
    async with uvicorn_serving(owui.app()) as port:
        yield owui, port


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj()
    return packer.compress(data) + packer.flush()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _coded_as(code: Callable[[bytes], bytes], smuggled: bytes) -> bytes:
    """A coded body whose inflated form is padding as long as the coded body, then
    ``smuggled``: the declared length covers the padding exactly."""
    pad = 0
    while True:
        coded = code(b"A" * pad + smuggled)
        if len(coded) == pad:
            return coded
        pad = len(coded)


@pytest.mark.parametrize(("coding", "code"), [("gzip", _gzip), ("deflate", _deflate)])
async def test_a_coded_body_cannot_carry_a_second_request(
    aiohttp_client, auth_server, openwebui, coding: str, code: Callable[[bytes], bytes]
) -> None:
    owui, port = openwebui
    settings = Settings(
        upstream=f"http://127.0.0.1:{port}/",
        auth="forward",
        forward_auth_url=str(auth_server.make_url("/oauth2/auth")),
    )
    proxy = await aiohttp_client(create_app(settings))
    coded = _coded_as(code, SMUGGLED)
    response = await raw_request(
        proxy.host,
        proxy.port,
        "/api/v1/chats/new",
        [("Cookie", "_oauth2_proxy=bob-session"), ("Content-Encoding", coding)],
        method="POST",
        body=coded,
    )
    # Relayed as sent: the coded bytes under their own length and coding, one request.
    assert response.status == 200
    # A request that still follows on the pooled connection is read as itself.
    after = await raw_request(
        proxy.host, proxy.port, "/api/v1/chats/list", [("Cookie", "_oauth2_proxy=bob-session")]
    )
    assert after.status == 200
    await asyncio.sleep(0.05)
    assert owui.seen == [
        ("/api/v1/chats/new", "bob@example.edu"),
        ("/api/v1/chats/list", "bob@example.edu"),
    ]
    assert owui.bodies[0] == (coded, coding)


# --- the writer itself, against a raw upstream ---------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("declared", "parts"),
    [
        ("4", (b"abc", b"de")),  # longer: the second chunk would cross the length
        ("4", (b"abcdefgh",)),
        ("4", (b"abc",)),  # shorter
        ("4", ()),
    ],
)
async def test_a_body_that_is_not_its_declared_length_is_refused_and_never_overruns(
    scripted,  # noqa: F811
    declared: str,
    parts: tuple[bytes, ...],
) -> None:
    received = bytearray()

    async def script(conn: Conn) -> None:
        await conn.head()
        while data := await conn.reader.read(65536):
            received.extend(data)

    upstream = await scripted(script)
    pool = h1.Pool(upstream.url, connect_timeout_s=2, response_timeout_s=2, idle_timeout_s=2)
    with pytest.raises(BadRequest):
        await pool.request("POST", "/", hdrs(Content_Length=declared), _chunks(*parts))
    await asyncio.sleep(0.05)
    assert len(received) <= int(declared)
    assert not pool.idle
    await pool.close()


@pytest.mark.parametrize("values", [["+4"], ["0x4"], ["4 "], ["\u0664"], ["4", "5"], [""]])
async def test_a_length_that_is_not_one_number_is_refused_before_anything_is_sent(
    scripted,  # noqa: F811
    values: list[str],
) -> None:
    upstream = await scripted(lambda conn: conn.head())
    pool = pool_for(upstream.url)
    headers = hdrs()
    for value in values:
        headers.add("Content-Length", value)
    with pytest.raises(BadRequest):
        pool.request("POST", "/", headers, _chunks(b"abcd"))
    assert upstream.conns == []
    await pool.close()


async def test_copies_of_one_length_go_out_once(scripted) -> None:  # noqa: F811
    heads: list[bytes] = []

    async def script(conn: Conn) -> None:
        head = await conn.head()
        heads.append(head + await conn.body(head))
        await conn.send(ok())

    upstream = await scripted(script)
    pool = pool_for(upstream.url)
    headers = hdrs(Content_Length="4")
    headers.add("content-length", "4")
    response = await pool.request("POST", "/", headers, _chunks(b"ab", b"cd"))
    assert await response.read() == b"hello"
    response.release()
    (head,) = heads
    assert head.lower().count(b"content-length") == 1
    assert head.endswith(b"\r\n\r\nabcd")
    await pool.close()
