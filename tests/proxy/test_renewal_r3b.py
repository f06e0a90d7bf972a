"""A renewal stands in only for a cookie that carried the auth service's session.

Before the fix, an answer that set the auth service's cookie on a request carrying none of
its cookies (an unauthenticated browser's ``lang=en``) was remembered as the "renewal" of
that whole ``Cookie`` header: for the next 30 s every other request with the same header
(anyone's) was asked about with the first person's new cookie. Services that give an
unauthenticated browser a server-side session id on the login redirect (authentik's
outpost) authenticate that same id at sign-in: whoever sent the same plain ``Cookie``
header within the hold was then judged as the person who had just signed in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from proxy.auth.base import Denied
from proxy.auth.renewal import Renewals
from proxy.identity import Identity
from tests.proxy.forward_service import authenticator_of


def test_a_cookie_without_the_services_session_is_never_renewed() -> None:
    renewals = Renewals()
    renewals.renewed("lang=en", ["sid=V1; Path=/; HttpOnly"])  # a login redirect's session id
    assert renewals.current("lang=en") == "lang=en"  # another browser's same header: itself
    assert len(renewals) == 0
    # A session the service knows is still followed to its renewal.
    renewals.renewed("lang=en; sid=V1", ["sid=V2"])
    assert renewals.current("sid=V1; lang=de") == "lang=de; sid=V2"


def test_once_the_names_are_known_a_plain_cookie_is_still_not_renewed() -> None:
    renewals = Renewals()
    renewals.renewed("sid=A", ["sid=B"])  # the service's cookie name is known
    renewals.renewed("theme=dark", ["sid=C"])
    assert renewals.current("theme=dark") == "theme=dark"
    assert renewals.current("sid=A") == "sid=B"


class SessionIdService:
    """An auth service that hands an unauthenticated browser a session id with its login
    redirect and authenticates that id when the person signs in (authentik's outpost)."""

    def __init__(self) -> None:
        self.signed_in: dict[str, str] = {}
        self.issued = 0

    async def handle(self, request: web.Request) -> web.Response:
        sid = request.cookies.get("sid")
        if sid is not None and sid in self.signed_in:
            return web.Response(status=202, headers={"X-Auth-Request-Email": self.signed_in[sid]})
        self.issued += 1
        response = web.Response(status=302, headers={"Location": "https://idp.test/login"})
        response.headers.add("Set-Cookie", f"sid=S{self.issued}; Path=/; HttpOnly")
        return response


@pytest.fixture
async def gate(aiohttp_server, aiohttp_client) -> AsyncIterator[tuple[Any, SessionIdService]]:
    service = SessionIdService()
    async with authenticator_of(aiohttp_server, service.handle) as auth:

        async def handler(request: web.Request) -> web.Response:
            outcome = await auth.authenticate(request)
            if isinstance(outcome, Denied):
                return web.json_response({"denied": outcome.status}, status=outcome.status)
            assert isinstance(outcome, Identity)
            return web.json_response({"email": outcome.email})

        front = web.Application()
        front.router.add_get("/{tail:.*}", handler)
        client = await aiohttp_client(await aiohttp_server(front))
        yield client, service


async def test_another_browser_with_the_same_plain_cookie_is_not_the_person_who_signed_in(
    gate: tuple[Any, SessionIdService],
) -> None:
    client, service = gate
    # The victim's browser, not signed in yet: its only cookie is a plain preference.
    async with client.get("/", headers={"Cookie": "lang=en"}) as response:
        assert response.status == 401
    victim_sid = f"S{service.issued}"
    service.signed_in[victim_sid] = "victim@school.edu"  # the victim signs in with that id
    # Someone else, with the same plain cookie and no session of their own.
    async with client.get("/", headers={"Cookie": "lang=en"}) as response:
        body = await response.json()
    assert body.get("email") != "victim@school.edu"
    assert response.status == 401


def test_a_cleared_session_renews_to_no_session_never_to_the_other_cookies() -> None:
    """An answer that deletes the session (a denial's Max-Age=0) renews it to nothing: the
    other cookies of the header it came with (OpenWebUI's ``token``) are that request's,
    never sent with another request carrying the same old session."""
    renewals = Renewals()
    renewals.renewed("sid=S1; token=A", ["sid=; Path=/; Max-Age=0"])
    assert renewals.current("sid=S1; token=B") == "token=B"
    assert renewals.current("token=B; sid=S1; lang=en") == "token=B; lang=en"
