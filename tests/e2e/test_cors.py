"""CORS grants through the proxy, against the real OpenWebUI.

OpenWebUI's default (``CORS_ALLOW_ORIGIN="*"``, credentials allowed) echoes any request's
``Origin`` in ``Access-Control-Allow-Origin`` with ``Access-Control-Allow-Credentials: true``
when a cookie comes along: a page on another origin whose requests carry the person's
cookies could read their chats. The proxy relays no CORS grant.
"""

from __future__ import annotations

import httpx
import pytest

from demo.stack import Stack
from tests.e2e.conftest import fresh_email, owui_url, sign_in_through_proxy

pytestmark = pytest.mark.e2e

EVIL = "https://student-pages.example.com"


def test_openwebui_grants_another_origin_a_read_and_the_proxy_does_not(gate: Stack) -> None:
    student = sign_in_through_proxy(gate, fresh_email("cors"))
    headers = {"Authorization": f"Bearer {student.token}", "Origin": EVIL}
    # The control: OpenWebUI itself, asked as the proxy would ask it, grants the read.
    direct = httpx.get(
        f"{owui_url(gate)}/api/v1/chats/",
        headers={**headers, "X-User-Email": student.email, "Cookie": "lang=en"},
        timeout=30,
    )
    assert direct.status_code == 200
    assert direct.headers.get("Access-Control-Allow-Origin") == EVIL
    assert direct.headers.get("Access-Control-Allow-Credentials") == "true"
    # Through the proxy, with the person's own cookies: the answer, and no grant.
    relayed = student.client.get("/api/v1/chats/", headers=headers)
    assert relayed.status_code == 200
    assert not [name for name in relayed.headers if name.lower().startswith("access-control-")]
