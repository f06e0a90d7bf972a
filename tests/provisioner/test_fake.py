"""The fake behaves like OpenWebUI 0.12.4 where the provisioner's guarantees depend on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp.test_utils import TestServer

from tests.provisioner.fake_owui import SERVICE_TOKEN, FakeOpenWebUI

SVC = {"Proxy-Authorization": f"Bearer {SERVICE_TOKEN}"}


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", headers=SVC) as client:
        yield client


async def signin(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    answer = await http.post(
        "/api/v1/auths/signin", headers={"X-User-Email": email}, json={"email": "", "password": ""}
    )
    assert answer.status_code == 200
    http.cookies.clear()
    return {"X-User-Email": email, "Authorization": f"Bearer {answer.json()['token']}"}


async def test_archive_toggles(http: httpx.AsyncClient) -> None:
    user = await signin(http, "a@example.edu")
    chat = (
        await http.post("/api/v1/chats/new", headers=user, json={"chat": {"title": "x"}})
    ).json()
    states = []
    for _ in range(3):
        states.append(
            (await http.post(f"/api/v1/chats/{chat['id']}/archive", headers=user)).json()[
                "archived"
            ]
        )
    assert states == [True, False, True]


async def test_archived_list_pages_by_60_and_filters_by_title(
    http: httpx.AsyncClient, fake: FakeOpenWebUI
) -> None:
    user = await signin(http, "a@example.edu")
    owner = fake.users["a@example.edu"]
    for n in range(61):
        fake.add_chat(owner, {"title": f"T{n} [c/m]"}, archived=True, created_at=n)
    fake.add_chat(owner, {"title": "other"}, archived=True)
    params = {"query": "[C/M]", "order_by": "created_at", "direction": "asc"}
    page1 = (await http.get("/api/v1/chats/archived", headers=user, params=params)).json()
    page2 = (
        await http.get("/api/v1/chats/archived", headers=user, params=params | {"page": 2})
    ).json()
    assert len(page1) == 60
    assert [c["title"] for c in page2] == ["T60 [c/m]"]
    assert set(page1[0]) == {
        "id",
        "title",
        "updated_at",
        "created_at",
        "last_read_at",
        "snippet",
        "active",
        "archived",
    }


@pytest.mark.parametrize(
    ("case", "status", "detail"),
    [
        ("pending", 401, "You do not have permission"),
        ("mismatch", 401, "User mismatch. Please sign in again."),
        ("no token", 401, "Not authenticated"),
        ("other's chat", 401, "We could not find"),
    ],
)
async def test_refusals(
    http: httpx.AsyncClient, fake: FakeOpenWebUI, case: str, status: int, detail: str
) -> None:
    if case == "pending":
        fake.default_role = "pending"
    user = await signin(http, "a@example.edu")
    path = "/api/v1/chats/list"
    if case == "mismatch":
        user["X-User-Email"] = "b@example.edu"
    elif case == "no token":
        del user["Authorization"]
    elif case == "other's chat":
        other = fake.add_chat(fake.users["admin@example.edu"], {"title": "admin's"})
        path = f"/api/v1/chats/{other.id}"
    answer = await http.get(path, headers=user)
    assert answer.status_code == status
    assert answer.json()["detail"].startswith(detail)


async def test_first_user_becomes_admin_and_onboarding_ends(
    http: httpx.AsyncClient, fake: FakeOpenWebUI
) -> None:
    fake.users.clear()
    assert (await http.get("/api/config")).json()["onboarding"] is True
    await signin(http, "first@example.edu")
    assert fake.users["first@example.edu"].role == "admin"
    assert "onboarding" not in (await http.get("/api/config")).json()


async def test_listener_in_front(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/config", headers={"Proxy-Authorization": "Bearer wrong"})
    assert answer.status_code == 407
    assert answer.headers["Proxy-Authenticate"] == "Bearer"
    answer = await http.get("/api/v1/users/")
    assert answer.status_code == 403
    assert "detail" not in answer.json()
