"""The identify stage admits a request only on an Identity: a source answering anything
else (an awaitable that is not a coroutine, say) gets no request through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.identity import Identity
from proxy.metrics import Metrics
from proxy.public import PublicHandler
from proxy.release_watch import ReleaseWatch
from proxy.settings import Settings
from proxy.upstream import Upstream

PERSON = Identity(email="ada@example.edu", name="Ada")


class _Source:
    """An identity source whose answer is whatever the test gives it."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def authenticate(self, request: Any, forwarded: Any = None) -> Any:
        return self.answer


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream.open(SETTINGS)
    yield up
    await up.close()


SETTINGS = Settings(
    upstream="http://127.0.0.1:9",
    auth="forward",
    forward_auth_url="http://127.0.0.1:9/oauth2/auth",
)


def _handler(source: _Source, upstream: Upstream) -> PublicHandler:
    release = ReleaseWatch(upstream)
    return PublicHandler(SETTINGS, source, upstream, Metrics(), release)  # type: ignore[arg-type]


async def _identify(answer: Any, upstream: Upstream) -> None:
    handler = _handler(_Source(answer), upstream)
    scope = handler.scope(make_mocked_request("GET", "/api/v1/chats/list"))
    assert await handler.identify(scope) is None
    assert scope.identity is PERSON


async def test_an_identity_and_a_coroutine_of_one_are_admitted(upstream: Upstream) -> None:
    await _identify(PERSON, upstream)

    async def later() -> Identity:
        return PERSON

    await _identify(later(), upstream)


@pytest.mark.parametrize("kind", ["future", "object", "none"])
async def test_any_other_answer_gets_no_request_through(kind: str, upstream: Upstream) -> None:
    if kind == "future":
        answer: Any = asyncio.get_running_loop().create_future()
        answer.set_result(PERSON)  # an awaitable, but not a coroutine: never awaited here
    else:
        answer = object() if kind == "object" else None
    handler = _handler(_Source(answer), upstream)
    scope = handler.scope(make_mocked_request("GET", "/api/v1/chats/list"))
    with pytest.raises(TypeError, match="identity source answered"):
        await handler.identify(scope)
    assert scope.identity is None
