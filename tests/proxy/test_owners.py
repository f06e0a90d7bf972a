"""Whose is a credential: OpenWebUI's answer compared with the verified email, ASCII case only."""

from __future__ import annotations

import json

import pytest

from proxy.owners import owner_in, same_email

KATE = "kate@school.edu"

ROWS = [
    ("the same email", KATE, True),
    ("ASCII case folded", "Kate@School.EDU", True),
    ("KELVIN SIGN is not K", "\u212aate@school.edu", False),
    ("dotted capital I is not i", "k\u0130te@school.edu", False),
    ("fullwidth letters are not ASCII", "\uff4bate@school.edu", False),
    ("another person", "alice@school.edu", False),
    ("empty", "", False),
]


@pytest.mark.parametrize(("owner", "same"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_owner_is_compared_without_unicode_case_folding(owner: str, same: bool) -> None:
    named = owner_in(json.dumps({"email": owner}).encode())
    assert (named is not None and same_email(named, KATE)) is same


@pytest.mark.parametrize("body", [b"", b"[]", b'{"email": null}', b'{"email": 1}', b"{"])
def test_answers_that_name_nobody(body: bytes) -> None:
    assert owner_in(body) is None
