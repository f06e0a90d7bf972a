"""Chat updates through the internal listener: exactly the provisioner's update, on its own
threads (``proxy/chat_update.py``), by a table, then through the listener's real app."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from provisioner import threads
from provisioner.course import parse_course
from proxy.chat_update import DIGEST_KEY, MARKER_KEY, is_update, refusal, text_digest
from tests.provisioner.conftest import COURSE_TOML
from tests.proxy.internal_listener import internal_client
from tests.proxy.test_internal import STUDENT, TOKEN, UUID

COURSE = parse_course(COURSE_TOML, "demo.toml")
MODULE = COURSE.modules[0]


def stored_thread() -> dict[str, Any]:
    """A provisioned thread nobody has replied to, as GET /api/v1/chats/{id} answers."""
    chat = threads.build_chat(COURSE, MODULE, now=1_767_225_600, message_id="m-1")
    return {"id": UUID, "chat": chat, "archived": True, "created_at": 1_767_225_600}


def the_provisioners_update(stored: dict[str, Any], content: str = "New text") -> bytes:
    thread = threads.as_thread(stored, COURSE.course.id, MODULE.id)
    assert thread is not None
    changed = MODULE.model_copy(update={"first_message": content})
    update = threads.update_for(thread, COURSE, changed)
    assert update is not None
    return json.dumps({"chat": update}).encode()  # what UserSession.update_chat sends


def test_the_marker_is_the_provisioners() -> None:
    assert MARKER_KEY == threads.MARKER_KEY


def test_the_provisioners_own_update_passes() -> None:
    stored = stored_thread()
    assert refusal(the_provisioners_update(stored), stored) is None


def with_reply(stored: dict[str, Any]) -> dict[str, Any]:
    replied = copy.deepcopy(stored)
    messages = replied["chat"]["history"]["messages"]
    messages["m-1"]["childrenIds"] = ["r-1"]
    messages["r-1"] = {"id": "r-1", "parentId": "m-1", "role": "user", "content": "hi"}
    return replied


def without(key: str) -> Any:
    def change(stored: dict[str, Any]) -> dict[str, Any]:
        changed = copy.deepcopy(stored)
        del changed["chat"][key]
        return changed

    return change


def edit(update: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(update)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def in_both(update: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """The message changed the same way in history and in the list."""
    message = {**update["chat"]["messages"][0], key: value}
    changed = copy.deepcopy(update)
    changed["chat"]["history"]["messages"]["m-1"] = message
    changed["chat"]["messages"] = [message]
    return changed


STORED_REFUSALS = [
    ("not marked by the provisioner", without(MARKER_KEY)),
    ("a clone the user made", lambda s: edit(s, ["chat", "originalChatId"], "x")),
    ("a reply in the thread", with_reply),
    ("a marker that is not the provisioner's", lambda s: edit(s, ["chat", MARKER_KEY], "x")),
    ("not a chat at all", lambda s: {"detail": "nope"}),
    ("an opening the person edited", lambda s: edit(s, [*OPENING, "content"], "my own words")),
    ("an opening without its digest", lambda s: edit(s, [*OPENING, DIGEST_KEY], None)),
]
OPENING: list[str | int] = ["chat", "history", "messages", "m-1"]
OLD_DIGEST = text_digest(MODULE.first_message)


@pytest.mark.parametrize(
    "change", [r[1] for r in STORED_REFUSALS], ids=[r[0] for r in STORED_REFUSALS]
)
def test_only_the_provisioners_unreplied_threads(change: Any) -> None:
    stored = stored_thread()
    assert refusal(the_provisioners_update(stored), change(stored)) is not None


BODY_REFUSALS = [
    ("a forged user message", lambda u: in_both(u, "role", "user")),
    ("another parent", lambda u: in_both(u, "parentId", "x")),
    ("a reply planted as a child", lambda u: in_both(u, "childrenIds", ["x"])),
    ("a new key in the message", lambda u: in_both(u, "files", [{"url": "x"}])),
    ("done as a number", lambda u: in_both(u, "done", 1)),
    ("content not a string", lambda u: in_both(u, "content", {"x": 1})),
    ("a key next to history", lambda u: edit(u, ["chat", "params"], {"system": "x"})),
    ("a key next to chat", lambda u: edit(u, ["folder_id"], "f")),
    ("currentId moved", lambda u: edit(u, ["chat", "history", "currentId"], "x")),
    ("list and history differ", lambda u: edit(u, ["chat", "messages"], [])),
    ("two messages", lambda u: edit(u, ["chat", "history", "messages", "m-2"], {"id": "m-2"})),
    ("another message id", lambda u: _renamed(u)),
    ("not an object", lambda u: ["x"]),
    (
        "the digest left as it was",
        lambda u: in_both(u, DIGEST_KEY, text_digest(MODULE.first_message)),
    ),
    ("the digest dropped", lambda u: in_both(u, DIGEST_KEY, None)),
    ("the digest of another text", lambda u: in_both(u, DIGEST_KEY, text_digest("other"))),
]


def _renamed(update: dict[str, Any]) -> dict[str, Any]:
    message = {**update["chat"]["messages"][0], "id": "m-2"}
    return {"chat": {"history": {"messages": {"m-2": message}}, "messages": [message]}}


@pytest.mark.parametrize("change", [r[1] for r in BODY_REFUSALS], ids=[r[0] for r in BODY_REFUSALS])
def test_exactly_the_provisioners_update(change: Any) -> None:
    stored = stored_thread()
    update = json.loads(the_provisioners_update(stored))
    assert refusal(json.dumps(change(update)).encode(), stored) is not None


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", f"/api/v1/chats/{UUID}", True),
        ("GET", f"/api/v1/chats/{UUID}", False),
        ("POST", f"/api/v1/chats/{UUID}/archive", False),
        ("POST", "/api/v1/chats/new", False),
    ],
)
def test_which_requests_are_updates(method: str, path: str, expected: bool) -> None:
    assert is_update(method, path) is expected


# --- through the internal listener -----------------------------------------------------------


class Chats:
    """A fake of OpenWebUI's chat endpoints: one stored chat; what was posted is recorded."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored = stored
        self.posted: list[bytes] = []
        self.reads = 0

    def app(self) -> web.Application:
        async def read(_request: web.Request) -> web.Response:
            self.reads += 1
            return web.json_response(self.stored)

        async def update(request: web.Request) -> web.Response:
            self.posted.append(await request.read())
            return web.json_response(self.stored)

        async def config(_request: web.Request) -> web.Response:
            return web.json_response({"onboarding": False})

        app = web.Application()
        app.router.add_get(f"/api/v1/chats/{UUID}", read)
        app.router.add_post(f"/api/v1/chats/{UUID}", update)
        app.router.add_get("/api/config", config)
        return app


@pytest.fixture
async def listener(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], Chats]]:
    chats = Chats(stored_thread())
    async with internal_client(aiohttp_client, aiohttp_server, tmp_path, chats.app()) as client:
        yield client, chats


HEADERS = {
    "Proxy-Authorization": f"Bearer {TOKEN}",
    "X-User-Email": STUDENT,
    "Authorization": "Bearer user-token",
    "Content-Type": "application/json",
}


async def test_the_listener_relays_the_provisioners_update(listener: Any) -> None:
    client, chats = listener
    body = the_provisioners_update(chats.stored)
    response = await client.post(f"/api/v1/chats/{UUID}", data=body, headers=HEADERS)
    assert response.status == 200
    assert chats.reads == 1  # read first, as the same user
    assert chats.posted == [body]


async def test_the_listener_refuses_a_forged_message_before_openwebui_sees_it(
    listener: Any,
) -> None:
    client, chats = listener
    forged = in_both(json.loads(the_provisioners_update(chats.stored)), "role", "user")
    response = await client.post(
        f"/api/v1/chats/{UUID}", data=json.dumps(forged).encode(), headers=HEADERS
    )
    assert response.status == 403
    assert (await response.json())["code"] == "chat_update_refused"
    assert chats.posted == []
