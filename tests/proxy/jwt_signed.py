"""Ada, signed in with a JWT on a real public listener, sending hand-written requests.

Use the fixture ``signed_in``; a module using it imports ``key`` and ``stack`` too (the
fixtures it is built on)::

    from tests.proxy.jwt_signed import key, signed_in, stack  # noqa: F401 (fixtures)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.proxy.rawhttp import RawResponse, raw_request
from tests.proxy.test_jwt import JwksEndpoint, SigningKey
from tests.proxy.test_jwt_app import HEADER, key, stack  # noqa: F401 (fixtures)


@dataclass
class SignedIn:
    """The public listener of a JWT stack, and the key that signs Ada in there."""

    host: str
    port: int
    key: SigningKey

    def headers(self, *more: tuple[str, str]) -> list[tuple[str, str]]:
        """A fresh token's header, then ``more``."""
        return [(HEADER, self.key.mint()), *more]

    async def request(self, target: str, *headers: tuple[str, str]) -> RawResponse:
        """One GET of ``target`` with a fresh token and ``headers``, over a raw socket."""
        return await raw_request(self.host, self.port, target, self.headers(*headers))


@pytest.fixture
async def signed_in(stack, key) -> SignedIn:  # noqa: F811
    s = await stack(JwksEndpoint([key]))
    return SignedIn(s.public.host, s.public.port, key)
