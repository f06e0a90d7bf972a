"""Auth-service answers as big as real IdPs make them (issue 24: a groups header over 8 KB).

A person in 2,000 groups is about 14 KB of group names, or 74 KB of Entra group object ids;
aiohttp's client refused any header line over 8,190 bytes, so such a person got a 503
"auth service failed" on every request while /readyz stayed ready. Now they pass, and an
answer that really is too big is refused as that identity's problem: a 502 with its own
code, a log line, a metric, and a notice on /readyz (which stays ready: the rest can sign in).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from proxy.app import Runtime, create_admin_app, create_app
from proxy.auth.forward import AUTH_MAX_FIELD_BYTES, DecisionCache, identity_bytes
from proxy.identity import Identity
from tests.proxy.test_process import _metric

COOKIE = {"Cookie": "_oauth2_proxy=crowd-session"}
Stack = Callable[..., Awaitable[tuple[TestClient[Any, Any], TestClient[Any, Any]]]]


@pytest.fixture
async def stack(aiohttp_client, settings_for) -> AsyncIterator[Stack]:
    """The public and the admin listener of one runtime, as in production."""
    started: list[Runtime] = []

    async def make(**overrides: Any) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
        runtime = Runtime(settings_for(**overrides))
        await runtime.start()
        started.append(runtime)
        public = await aiohttp_client(create_app(runtime.settings, runtime))
        admin = await aiohttp_client(create_admin_app(runtime.settings, runtime))
        return public, admin

    yield make
    for runtime in started:
        await runtime.close()


def _member_of(fake_auth, groups: list[str]) -> str:
    fake_auth.users = {
        **fake_auth.users,
        "crowd-session": {
            "X-Auth-Request-Email": "crowd@example.edu",
            "X-Auth-Request-Groups": ",".join(groups),
        },
    }
    return ",".join(groups)


@pytest.mark.parametrize(
    ("kind", "groups"),
    [
        ("2,000 group names (~14 KB)", [f"grp-{i:04d}" for i in range(2000)]),
        ("2,000 Entra group object ids (~74 KB)", [str(uuid.UUID(int=i)) for i in range(2000)]),
    ],
)
async def test_a_person_in_thousands_of_groups_signs_in(
    stack, fake_auth, fake_upstream, kind, groups
) -> None:
    header = _member_of(fake_auth, groups)
    assert len(header) > 8190  # over aiohttp's default limit
    public, admin = await stack()
    response = await public.get("/api/models", headers=COOKIE)
    assert response.status == 200, kind
    assert fake_upstream.last().values("X-User-Groups") == [header]
    assert await (await admin.get("/readyz")).json() == {"ready": True}


async def test_a_truly_oversize_answer_is_a_clear_identity_error_seen_in_log_metrics_readyz(
    stack, fake_auth, fake_upstream
) -> None:
    header = _member_of(fake_auth, [f"g{i:06d}" for i in range(40_000)])
    assert len(header) > AUTH_MAX_FIELD_BYTES
    public, admin = await stack()
    with capture_logs() as lines:
        response = await public.get("/api/models", headers=COOKIE)
    assert response.status == 502
    body = await response.json()
    assert body["code"] == "identity_too_large"
    assert f"header over {AUTH_MAX_FIELD_BYTES} bytes" in body["error"]
    assert fake_upstream.seen == []
    events = [line["event"] for line in lines]
    assert "auth_answer_too_large" in events
    assert "g000001" not in repr(lines)  # the answer's values are never logged

    text = await (await admin.get("/metrics")).text()
    assert _metric(text, "owui_proxy_auth_service_errors_total", kind="too_large") == 1
    ready = await admin.get("/readyz")
    assert ready.status == 200  # one person's identity does not take the proxy out
    report = await ready.json()
    assert report["ready"] is True
    (notice,) = report["notices"]
    assert "identity_too_large" in notice
    assert "1 since start" in notice
    # Everyone else still gets in.
    assert (await public.get("/api/models", headers={"Cookie": "_oauth2_proxy=bob-session"})).ok


def test_the_decision_cache_is_bounded_in_bytes_as_well_as_entries() -> None:
    crowd = Identity("crowd@x.edu", None, tuple(f"grp-{i:04d}" for i in range(2000)))
    weight = identity_bytes(crowd)
    assert weight > 2000 * 64  # a person in 2,000 groups is no small entry
    cache = DecisionCache(ttl_s=60, size=10_000, max_bytes=3 * weight)
    for n in range(5):
        cache.put(f"key-{n}".encode(), crowd)
    assert len(cache) == 3  # the oldest two went to keep within the bytes
    assert cache.bytes == 3 * weight
    assert cache.get(b"key-0") is None
    assert cache.get(b"key-4") == crowd
    cache.put(b"key-4", Identity("small@x.edu"))  # replacing an entry gives its bytes back
    assert cache.bytes == 2 * weight + identity_bytes(Identity("small@x.edu"))
