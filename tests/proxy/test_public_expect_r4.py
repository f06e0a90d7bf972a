"""The public listener, round 4: no ``100 Continue`` before the target and the caller are
checked, whatever the target.

The catch-all resource matched only targets with a path, so ``OPTIONS *``,
``CONNECT host:443`` and an absolute-form target without a path fell to aiohttp's default
expect handler: ``100 Continue`` to anyone (then a 404), an invitation to send a body before
anything was checked. Every target now reaches the handler, which refuses these (400).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.fakes import FakeUpstream
from tests.proxy.test_internal_expect_r4 import first_answer

NO_PATH = [
    pytest.param("OPTIONS", "*", id="options-asterisk"),
    pytest.param("CONNECT", "example.com:443", id="connect-authority"),
    pytest.param("POST", "http://example.com", id="absolute-form-without-a-path"),
]


@pytest.mark.parametrize("cookie", [None, "_oauth2_proxy=alice-session"], ids=["anyone", "alice"])
@pytest.mark.parametrize(("method", "target"), NO_PATH)
async def test_a_target_without_a_path_gets_no_100_continue_and_a_400(
    proxy: TestClient[Any, Any],
    fake_upstream: FakeUpstream,
    method: str,
    target: str,
    cookie: str | None,
) -> None:
    extra = [f"Cookie: {cookie}"] if cookie else []
    first = await first_answer(proxy.server, method, target, extra)
    assert first.startswith(b"HTTP/1.1 400"), first
    assert fake_upstream.seen == []
