"""A sign-out whose Host is no ``host[:port]`` is a 400, not a 500.

Without a public URL the cross-site check of a sign-out compares the browser's ``Origin``
with the request's own origin, built from its ``Host``; a Host whose port is not a number
(or out of range, or an unclosed IPv6 bracket) made ``urlsplit`` raise, and the request
ended in a 500 with a traceback in the log.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.proxy.conftest import BOB_COOKIE
from tests.proxy.rawhttp import raw_request


async def _signout(proxy, host: str, extra: list[tuple[str, str]]) -> int:
    """A raw sign-out with exactly this Host (raw_request adds its own, so by hand here)."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    lines = [
        "GET /api/v1/auths/signout HTTP/1.1",
        f"Host: {host}",
        *(f"{k}: {v}" for k, v in [*BOB_COOKIE.items(), *extra]),
        "Connection: close",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("host", ["owui.test:abc", "owui.test:99999", "[::1", "[::1]:x"])
@pytest.mark.parametrize("origin", [[], [("Origin", "http://owui.test")]])
async def test_a_host_that_is_no_authority_is_a_bad_request(
    proxy, fake_upstream, host: str, origin: list[tuple[str, str]]
) -> None:
    assert await _signout(proxy, host, origin) == 400
    assert not [s for s in fake_upstream.seen if s.raw_path.endswith("/signout")]


async def test_a_good_host_still_signs_out(proxy) -> None:
    response = await raw_request(
        proxy.host, proxy.port, "/api/v1/auths/signout", [*BOB_COOKIE.items()]
    )
    assert response.status == 200
