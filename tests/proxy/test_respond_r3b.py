"""The proxy's own JSON error answers carry the same protective headers as its pages."""

from __future__ import annotations

from tests.proxy.conftest import BOB_COOKIE
from tests.proxy.test_relay import _closed_port


async def test_a_json_error_is_not_sniffed_and_not_stored(make_proxy) -> None:
    proxy = await make_proxy(allowed_email_domains="school.edu")
    api = await proxy.get("/api/models", headers={**BOB_COOKIE, "Accept": "application/json"})
    assert api.status == 403
    assert api.content_type == "application/json"
    # It names who is signed in (a person's data): no cache may keep it.
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["Cache-Control"] == "no-store"
    assert "Accept" in api.headers.get("Vary", "")


async def test_an_upstream_failure_json_has_the_headers_too(make_proxy) -> None:
    proxy = await make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    api = await proxy.get("/x/<script>", headers={"Accept": "application/json"})
    assert api.status == 502
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["Cache-Control"] == "no-store"
