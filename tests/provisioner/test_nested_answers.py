"""An OpenWebUI answer nested deeper than the JSON parser goes is an unreadable answer (the
provisioner's Unavailable, retried or reported as such), never a RecursionError out of a
run or a webhook delivery."""

from __future__ import annotations

import httpx
import pytest

from provisioner import client
from provisioner.errors import Unavailable

DEEP = b"[" * 100_000 + b"]" * 100_000


def _answer(body: bytes) -> httpx.Response:
    return httpx.Response(
        200,
        content=body,
        headers={"Content-Type": "application/json"},
        request=httpx.Request("GET", "http://owui/api/v1/chats/x"),
    )


def test_a_chat_nested_too_deeply_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        client._dict(_answer(b'{"chat": ' + DEEP + b"}"))


def test_a_list_nested_too_deeply_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        client._list_of_dicts(_answer(DEEP))


def test_a_refusal_nested_too_deeply_has_no_code() -> None:
    assert client._refusal_code(_answer(b'{"code": ' + DEEP + b"}")) is None
