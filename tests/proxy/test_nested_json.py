"""JSON nested deeper than Python's parser goes raises RecursionError, not ValueError: every
place the proxy reads JSON treats it as unreadable (no traceback, no 500), and where a
client's message may carry a credential, as refused."""

from __future__ import annotations

import pytest

from proxy.browser import is_user_mismatch
from proxy.eio_sessions import SessionSeals
from proxy.owners import owner_in
from proxy.socketio import Refused, message_tokens

DEEP = "[" * 100_000 + "]" * 100_000


def test_an_owner_answer_nested_too_deeply_names_nobody() -> None:
    assert owner_in(('{"email": "a@example.edu", "x": ' + DEEP + "}").encode()) is None


def test_a_401_nested_too_deeply_is_no_user_mismatch() -> None:
    assert is_user_mismatch(401, ('{"detail": ' + DEEP + "}").encode()) is False


def test_a_handshake_nested_too_deeply_is_left_unsealed() -> None:
    seals = SessionSeals(b"k" * 32)
    body = ('0{"sid": "abc", "x": ' + DEEP + "}").encode()
    assert seals.sealed_handshake(body, "a@example.edu") == body


def test_a_message_nested_too_deeply_is_refused_not_passed_as_tokenless() -> None:
    with pytest.raises(Refused):
        message_tokens('{"type": "auth", "token": "someone-elses", "x": ' + DEEP + "}")
