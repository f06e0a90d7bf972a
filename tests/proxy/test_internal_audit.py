"""The internal listener audits every request exactly once, including those the router or
aiohttp's parser would refuse before any handler, and never relays override headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.fakes import FakeUpstream
from tests.proxy.internal_listener import internal_listener, signing_in
from tests.proxy.rawhttp import raw_exchange, raw_request
from tests.proxy.test_internal import STUDENT, TOKEN, audits

AUTH = ("Proxy-Authorization", f"Bearer {TOKEN}")


class Listener:
    def __init__(self, port: int, fake: FakeUpstream) -> None:
        self.port = port
        self.upstream = fake

    async def send(self, raw: bytes) -> bytes:
        return await raw_exchange("127.0.0.1", self.port, raw, timeout=10)


@pytest.fixture
async def listener(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Listener]:
    """The internal app behind the very runner ``owui-proxy`` uses (``server._start``)."""
    fake = FakeUpstream()
    async with internal_listener(aiohttp_server, tmp_path, fake.app()) as port:
        yield Listener(port, fake)


PARSER_REFUSALS = [
    pytest.param(b"GET /api/config HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", id="bad-name"),
    pytest.param(b"GET /api/\xffconfig HTTP/1.1\r\nHost: x\r\n\r\n", id="raw-byte-in-target"),
    pytest.param(b"NOT A REQUEST LINE\r\n\r\n", id="garbage-request-line"),
    pytest.param(
        b"POST /api/v1/chats/new HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="length-and-chunked",
    ),
]


@pytest.mark.parametrize("raw", PARSER_REFUSALS)
async def test_a_request_the_parser_refuses_gets_one_audit_line(
    listener: Listener, raw: bytes
) -> None:
    with capture_logs() as logs:
        answer = await listener.send(raw)
        await asyncio.sleep(0.05)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.")
    assert b" 400 " in status_line
    [line] = audits(logs)
    assert (line["outcome"], line["status"]) == ("bad_request", 400)
    assert line["peer"] == "127.0.0.1"
    assert listener.upstream.seen == []


@pytest.mark.parametrize(
    ("method", "target"),
    [("OPTIONS", "*"), ("CONNECT", "openwebui.internal:443"), ("GET", "/no/such/route")],
)
async def test_targets_no_route_matches_are_gated_and_audited(
    listener: Listener, method: str, target: str
) -> None:
    with capture_logs() as logs:
        response = await raw_request(
            "127.0.0.1", listener.port, target, [AUTH, ("X-User-Email", STUDENT)], method=method
        )
    assert response.status in (400, 403)
    [line] = audits(logs)
    assert line["status"] == response.status
    assert line["method"] == method
    assert listener.upstream.seen == []


async def test_without_a_token_even_an_unroutable_target_is_407(listener: Listener) -> None:
    with capture_logs() as logs:
        response = await raw_request("127.0.0.1", listener.port, "*", [], method="OPTIONS")
    assert response.status == 407
    assert [line["outcome"] for line in audits(logs)] == ["proxy_auth_required"]


OVERRIDES = [
    "X-HTTP-Method-Override",
    "x_http_method_override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-URL",
    "X_Original_URL",
    "X-Rewrite-URL",
    "X-Original-Method",
    "X-Forwarded-Uri",
]


async def test_method_and_path_override_headers_never_reach_openwebui(listener: Listener) -> None:
    sent = [(name, "DELETE" if "method" in name.lower() else "/api/v1/users") for name in OVERRIDES]
    with capture_logs() as logs:
        response = await raw_request(
            "127.0.0.1", listener.port, "/api/config", [AUTH, ("X-User-Email", STUDENT), *sent]
        )
    assert response.status == 200
    [seen] = listener.upstream.seen
    arrived = set(seen.names_normalised())
    assert not arrived & {name.lower().replace("_", "-") for name in OVERRIDES}
    [line] = audits(logs)
    assert sorted(line["dropped_headers"]) == sorted(OVERRIDES)


async def test_no_100_continue_before_the_service_token_is_checked(listener: Listener) -> None:
    """A caller without a token is never invited to send its body."""
    head = (
        b"POST /api/v1/chats/new HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(head)  # and no body: we wait for the answer a 100 would come before
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    assert b"100 Continue" not in answer
    assert answer.split(b"\r\n", 1)[0].endswith(b"407 Proxy Authentication Required")
    assert listener.upstream.seen == []


async def test_sign_ins_of_one_email_are_serialised(aiohttp_server: Any, tmp_path: Path) -> None:
    """Concurrent first sign-ins of a new email can leave duplicate accounts in OpenWebUI:
    through the internal listener, one email signs in one request at a time (others don't
    wait for it)."""
    from aiohttp import web

    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def signin(request: web.Request) -> web.Response:
        email = request.headers["X-User-Email"]
        in_flight[email] = in_flight.get(email, 0) + 1
        most[email] = max(most.get(email, 0), in_flight[email])
        await asyncio.sleep(0.2)
        in_flight[email] -= 1
        return web.json_response({"email": email, "role": "user", "token": "t"})

    async with internal_listener(aiohttp_server, tmp_path, signing_in(signin)) as port:
        with capture_logs():
            answers = await asyncio.gather(
                *[
                    raw_request(
                        "127.0.0.1",
                        port,
                        "/api/v1/auths/signin",
                        [AUTH, ("X-User-Email", email), ("Content-Type", "application/json")],
                        method="POST",
                        body=b'{"email":"","password":""}',
                    )
                    for email in ["a@school.edu"] * 5 + ["b@school.edu"] * 2
                ]
            )
    assert [a.status for a in answers] == [200] * 7
    assert most == {"a@school.edu": 1, "b@school.edu": 1}
