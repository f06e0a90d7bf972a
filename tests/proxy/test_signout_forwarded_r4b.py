"""Without a public URL, a sign-out's own origin is the one the client reached, as a trusted
front proxy reports it (round 4, reviewer ad).

Behind a front proxy that terminates TLS the browser's origin is ``https://...`` while the
proxy is reached over ``http``: a same-origin sign-out was refused as cross-site (403). The
scheme and host of the forwarded view count now; an untrusted client's ``X-Forwarded-*``
still counts for nothing.
"""

from __future__ import annotations

import pytest

from tests.proxy.conftest import ALICE_COOKIE

FRONT = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.school.edu"}


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://chat.school.edu", 200),
        ("https://evil.example", 403),
        ("http://chat.school.edu", 403),
    ],
)
async def test_a_trusted_front_proxy_says_which_origin_was_reached(
    make_proxy, fake_upstream, origin: str, status: int
) -> None:
    proxy = await make_proxy(trusted_proxies="127.0.0.1/32")
    response = await proxy.post(
        "/api/v1/auths/signout",
        headers={**ALICE_COOKIE, **FRONT, "Origin": origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status == status
    relayed = [s for s in fake_upstream.seen if s.raw_path == "/api/v1/auths/signout"]
    assert len(relayed) == (1 if status == 200 else 0)


async def test_an_untrusted_client_cannot_name_the_origin(make_proxy, fake_upstream) -> None:
    proxy = await make_proxy()
    response = await proxy.post(
        "/api/v1/auths/signout",
        headers={**ALICE_COOKIE, **FRONT, "Origin": "https://chat.school.edu"},
    )
    assert response.status == 403
    assert fake_upstream.seen == []
