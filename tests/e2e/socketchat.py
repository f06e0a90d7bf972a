"""What OpenWebUI's web UI does over Socket.IO, for the e2e tests that follow it: connect the
user's socket, then start a chat completion that streams to that socket (``session_id``)
instead of over the HTTP response."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import socketio  # type: ignore[import-untyped]

from demo.model_server import MODEL_ID

SOCKET_PATH = "ws/socket.io"


def cookie_header(cookies: httpx.Cookies) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def connect(
    url: str, token: str, cookies: httpx.Cookies | None, *, origin: str | None = None
) -> socketio.AsyncClient:
    """A WebSocket-only Socket.IO client connected as the browser connects (token in
    ``auth``, the IdP session cookie, our Origin unless ``origin`` says otherwise)."""
    sio = socketio.AsyncClient(reconnection=False)
    headers = {"Origin": origin or url}
    if cookies is not None:
        headers["Cookie"] = cookie_header(cookies)
    await sio.connect(
        url,
        socketio_path=SOCKET_PATH,
        transports=["websocket"],
        auth={"token": token},
        headers=headers,
        wait_timeout=30,
    )
    return sio


def collect_events(sio: socketio.AsyncClient) -> tuple[list[tuple[float, Any]], asyncio.Event]:
    """Every ``events`` message the socket receives (with its arrival time), and an event set
    when a completion reports done."""
    events: list[tuple[float, Any]] = []
    done = asyncio.Event()

    async def on_events(data: dict[str, Any]) -> None:
        events.append((asyncio.get_running_loop().time(), data))
        if data["data"].get("type") == "chat:completion" and data["data"]["data"].get("done"):
            done.set()

    sio.on("events", on_events)
    return events, done


async def background_completion(client: httpx.AsyncClient, sid: str, title: str) -> str:
    """Create a chat and start a streamed completion whose tokens go to the socket ``sid``;
    the chat's id."""
    new_chat = {"title": title, "models": [MODEL_ID], "messages": [],
                "history": {"messages": {}, "currentId": None}}  # fmt: skip
    created = await client.post("/api/v1/chats/new", json={"chat": new_chat})
    assert created.status_code == 200, created.text
    chat_id = str(created.json()["id"])
    user_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
    response = await client.post(
        "/api/chat/completions",
        json={
            "model": MODEL_ID,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "chat_id": chat_id,
            "id": assistant_id,
            "parent_id": user_id,
            "session_id": sid,
            "user_message": {"id": user_id, "role": "user", "content": "hi",
                             "parentId": None, "childrenIds": [assistant_id]},
        },
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return chat_id
