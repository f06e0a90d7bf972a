"""A token whose bytes are not ASCII is a 401, never an exception out of the authenticator.

aiohttp decodes header bytes that are not UTF-8 into lone surrogates; PyJWT encodes the
token to UTF-8 first and raised ``UnicodeEncodeError`` (not a ``PyJWTError``), which
escaped the authenticator (a 500 with a traceback). A compact JWT is base64url and dots:
ASCII only. Sent over a socket, byte for byte, in the header and in the cookie source.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.app import Runtime, create_app
from proxy.auth.base import Denied
from proxy.auth.jwt import JwtAuthenticator
from proxy.settings import Settings
from tests.proxy.rawhttp import raw_exchange

HEADER = "Cf-Access-Jwt-Assertion"
COOKIE = "CF_Authorization"

TOKENS = [
    pytest.param(b"\xff\xfe.e30.AAAA", id="not-utf8-bytes"),
    pytest.param(b"eyJhbGciOiJSUzI1NiJ9.e30.\x80", id="not-utf8-in-signature"),
    pytest.param("eyJhbGciOiJSUzI1NiJ9.ey\u00e9.AAAA".encode(), id="utf8-non-ascii"),
]


def _jwt_settings(tmp_path: Path, upstream: str, source: str, **more: str) -> Settings:
    """JWT settings verifying with a fresh RSA key's public half (a key file)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Settings(
        upstream=upstream,
        auth="jwt",
        jwt_source=source,
        jwt_issuer="https://idp.test",
        jwt_audience=("aud",),
        jwt_key_file=pem,
        **more,
    )


async def _status(tmp_path: Path, aiohttp_server, source: str, line: bytes) -> int:
    settings = _jwt_settings(tmp_path, "http://127.0.0.1:9", source)
    async with aiohttp.ClientSession() as session:
        auth = JwtAuthenticator(settings, session)
        await auth.start()

        async def handler(request: web.Request) -> web.Response:
            outcome = await auth.authenticate(request)
            assert isinstance(outcome, Denied)
            return web.Response(status=outcome.status)

        app = web.Application()
        app.router.add_get("/", handler)
        server = await aiohttp_server(app)
        answer = await raw_exchange(
            server.host,
            server.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + line + b"\r\n\r\n",
        )
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("token", TOKENS)
async def test_a_header_token_that_is_not_ascii_is_a_401(
    tmp_path: Path, aiohttp_server, token: bytes
) -> None:
    line = HEADER.encode() + b": " + token
    assert await _status(tmp_path, aiohttp_server, f"header:{HEADER}", line) == 401


@pytest.mark.parametrize("token", TOKENS)
async def test_a_cookie_token_that_is_not_ascii_is_a_401(
    tmp_path: Path, aiohttp_server, token: bytes
) -> None:
    line = b"Cookie: " + COOKIE.encode() + b"=" + token
    assert await _status(tmp_path, aiohttp_server, f"cookie:{COOKIE}", line) == 401


@pytest.mark.parametrize("token", TOKENS)
async def test_through_the_public_listener(
    tmp_path: Path, aiohttp_server, upstream_server, fake_upstream, token: bytes
) -> None:
    """The whole proxy: a clear 401, nothing reaches OpenWebUI."""
    settings = _jwt_settings(
        tmp_path,
        str(upstream_server.make_url("/")),
        f"header:{HEADER}",
        public_url="https://chat.example.edu",
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        server = await aiohttp_server(create_app(settings, runtime))
        answer = await raw_exchange(
            server.host,
            server.port,
            b"GET /api/v1/chats/list HTTP/1.1\r\nHost: chat.example.edu\r\n"
            b"Accept: application/json\r\nConnection: close\r\n"
            + HEADER.encode()
            + b": "
            + token
            + b"\r\n\r\n",
        )
    finally:
        await runtime.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert fake_upstream.seen == []
