"""aiohttp's answer to a request it cannot read quotes none of the request's bytes.

aiohttp's text for a refused head quotes the line it choked on: an oversized ``Cookie``
line (a script can make one by setting many cookies) came back in the 400's body with the
HttpOnly session cookie at its start, readable by that script. Every listener's protocol
(``proxy/connections.py``) answers with the status and its phrase only; these tests send
each kind of malformed head with a secret in it, to a bare guarded server and to the public
listener as ``owui-proxy`` starts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proxy import server as proxy_server
from proxy.app import create_app
from proxy.connections import refusal_text
from tests.proxy.guarded_site import guarded_site, ok
from tests.proxy.rawhttp import raw_exchange

SECRET = b"s3cr3t-session-value"

# (what is wrong, the raw request): each with the secret on or next to the line refused.
MALFORMED = [
    (
        "an oversized header line",
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: _oauth2_proxy=%s%s\r\n\r\n"
        % (SECRET, b"A" * 70_000),
    ),
    (
        "a control character in a header value",
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: s=%s\x01\r\n\r\n" % SECRET,
    ),
    ("a blank in a header name", b"GET / HTTP/1.1\r\nHost: x\r\nBad %s: y\r\n\r\n" % SECRET),
    ("a control character in the target", b"GET /%s\x01 HTTP/1.1\r\nHost: x\r\n\r\n" % SECRET),
    (
        "an oversized request line",
        b"GET /%s%s HTTP/1.1\r\nHost: x\r\n\r\n" % (SECRET, b"A" * 70_000),
    ),
    ("a malformed version", b"GET / HTTP/%s\r\nHost: x\r\n\r\n" % SECRET),
    (
        "a malformed Content-Length",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n" % SECRET,
    ),
    (
        "a malformed Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %s\r\n\r\n" % SECRET,
    ),
    (
        "an obsolete line folding",
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n %s\r\n\r\n" % SECRET,
    ),
]


async def _answer(port: int, raw: bytes) -> bytes:
    try:
        return await raw_exchange("127.0.0.1", port, raw, timeout=10)
    except ConnectionResetError:  # refused and closed while the rest was still being sent
        return b""


def _check(answer: bytes) -> None:
    assert SECRET not in answer
    if not answer:
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, head
    assert body == refusal_text(status).encode()


@pytest.fixture
async def guarded_port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/", ok)
    async with guarded_site(app, header_timeout_s=5, handler_cancellation=True) as port:
        yield port


@pytest.mark.parametrize(("what", "raw"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_a_refused_head_is_answered_without_its_bytes(guarded_port, what, raw) -> None:
    answer = await _answer(guarded_port, raw)
    assert answer, what  # refused with an answer, not only a closed connection
    _check(answer)


async def test_the_refusal_text_is_the_status_and_its_phrase() -> None:
    assert refusal_text(400) == "400 Bad Request\n"
    assert refusal_text(431) == "431 Request Header Fields Too Large\n"
    assert refusal_text(599) == "599 Error\n"


@pytest.mark.parametrize(("what", "raw"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_the_public_listener_as_started_quotes_nothing(settings_for, what, raw) -> None:
    settings = settings_for()
    app = create_app(settings)
    runner = await proxy_server._start(app, "127.0.0.1:0", settings, False)
    try:
        port = runner.addresses[0][1]
        answer = await _answer(port, raw)
        assert answer, what
        _check(answer)
    finally:
        await runner.cleanup()


async def test_a_well_formed_request_still_gets_its_own_answer(guarded_port) -> None:
    answer = await _answer(guarded_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"ok")
