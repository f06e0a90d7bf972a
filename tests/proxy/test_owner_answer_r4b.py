"""OpenWebUI's answer to "whose is this credential" is read to a bound (round 4).

It was read whole, however long, on every first request carrying a credential: an answer
past the bound is now cut there, so it names nobody and the request is refused as for any
answer that names no account (502, fail closed), never buffered without end.
"""

from __future__ import annotations

import pytest

from proxy import owners
from tests.proxy.conftest import ALICE_COOKIE

HEADERS = {**ALICE_COOKIE, "Authorization": "Bearer tok.alice@example.edu"}


async def test_an_answer_within_the_bound_names_the_owner(proxy, fake_upstream) -> None:
    response = await proxy.get("/api/v1/chats/list", headers=HEADERS)
    assert response.status == 200
    assert len(fake_upstream.relayed()) == 1


async def test_an_answer_past_the_bound_names_nobody(
    make_proxy, fake_upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(owners, "_MAX_ANSWER_BYTES", 20)  # the fake's answer is ~40 bytes
    proxy = await make_proxy()
    response = await proxy.get("/api/v1/chats/list", headers=HEADERS)
    assert response.status == 502
    assert fake_upstream.relayed() == []
