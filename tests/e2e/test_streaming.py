"""Streaming through the proxy: SSE chat completions and OpenWebUI's Socket.IO."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import socketio  # type: ignore[import-untyped]

from demo.model_server import MODEL_ID, reply_tokens
from demo.stack import Stack
from tests.e2e.conftest import fresh_email, sign_in_through_proxy

pytestmark = pytest.mark.e2e


def test_chat_completion_streams_through_the_proxy(gate: Stack) -> None:
    """Tokens arrive as the model server emits them (0.1 s apart), not all at the end."""
    student = sign_in_through_proxy(gate, fresh_email("stream"))
    arrivals: list[float] = []
    content = ""
    body = {"model": MODEL_ID, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        student as client,
        client.stream(
            "POST", "/api/chat/completions", headers=student.auth(), json=body, timeout=120
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                arrivals.append(time.monotonic())
                content += delta
    expected = reply_tokens()
    assert content == "".join(expected)
    assert len(arrivals) == len(expected)
    # The model server needs (tokens - 1) x 0.1 s = 1.8 s between first and last token; a
    # buffering proxy would deliver them all at once.
    assert arrivals[-1] - arrivals[0] > 1.0
    halfway = arrivals[len(arrivals) // 2]
    assert halfway - arrivals[0] > 0.4


async def _socket_session(stack: Stack, token: str, cookies: httpx.Cookies) -> dict[str, Any]:
    """Connect through the proxy, join, trigger a background completion, collect its events."""
    sio = socketio.AsyncClient(reconnection=False)
    events: list[tuple[float, dict[str, Any]]] = []
    done = asyncio.Event()

    async def on_events(data: dict[str, Any]) -> None:
        events.append((time.monotonic(), data))
        if data["data"].get("type") == "chat:completion" and data["data"]["data"].get("done"):
            done.set()

    sio.on("events", on_events)

    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    await sio.connect(
        stack.public_url,
        socketio_path="ws/socket.io",
        transports=["websocket"],
        auth={"token": token},
        headers={"Cookie": cookie, "Origin": stack.public_url},
        wait_timeout=30,
    )
    try:
        joined = await sio.call("user-join", {"auth": {"token": token}}, timeout=30)
        # What the web UI does: the completion runs in the background and streams to the
        # browser over this socket (session_id), not over the HTTP response.
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=stack.public_url, cookies=cookies, headers=headers, timeout=60
        ) as client:
            new_chat = {"title": "socket", "models": [MODEL_ID], "messages": [],
                        "history": {"messages": {}, "currentId": None}}  # fmt: skip
            chat = (await client.post("/api/v1/chats/new", json={"chat": new_chat})).json()
            user_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
            response = await client.post(
                "/api/chat/completions",
                json={
                    "model": MODEL_ID,
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                    "chat_id": chat["id"],
                    "id": assistant_id,
                    "parent_id": user_id,
                    "session_id": sio.get_sid("/"),
                    "user_message": {
                        "id": user_id,
                        "role": "user",
                        "content": "hi",
                        "parentId": None,
                        "childrenIds": [assistant_id],
                    },
                },
            )
            assert response.status_code == 200, response.text
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await sio.disconnect()
    return {"joined": joined, "chat_id": chat["id"], "events": events}


def test_socketio_connects_through_the_proxy_and_receives_events(gate: Stack) -> None:
    student = sign_in_through_proxy(gate, fresh_email("socket"), "Socket Student")
    with student as client:
        me = client.get("/api/v1/auths/", headers=student.auth()).json()
        result = asyncio.run(_socket_session(gate, student.token, client.cookies))
    assert result["joined"] == {"id": me["id"], "name": "Socket Student"}
    mine = [(t, e["data"]) for t, e in result["events"] if e.get("chat_id") == result["chat_id"]]
    deltas = [
        (t, event["data"]["delta"])
        for t, event in mine
        if event.get("type") == "response:completion"
        and event["data"].get("type") == "response.output_text.delta"
    ]
    assert "".join(text for _, text in deltas) == "".join(reply_tokens())
    assert any(e.get("type") == "chat:completion" and e["data"].get("done") for _, e in mine)
    # Streamed over the socket as it was generated (0.1 s a token), not in one burst at the end.
    assert deltas[-1][0] - deltas[0][0] > 1.0


async def _connect(stack: Stack, token: str, cookies: httpx.Cookies | None, origin: str) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    headers = {"Origin": origin}
    if cookies is not None:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    try:
        await sio.connect(
            stack.public_url,
            socketio_path="ws/socket.io",
            transports=["websocket"],
            auth={"token": token},
            headers=headers,
            wait_timeout=30,
        )
    finally:
        await sio.disconnect()


def test_socketio_is_refused_cross_origin_or_without_an_idp_session(gate: Stack) -> None:
    """The same token and cookie from another site's page, or the token alone: no socket."""
    student = sign_in_through_proxy(gate, fresh_email("socket-refused"))
    with student as client:
        with pytest.raises(socketio.exceptions.ConnectionError):
            asyncio.run(_connect(gate, student.token, client.cookies, "http://evil.example"))
        with pytest.raises(socketio.exceptions.ConnectionError):
            asyncio.run(_connect(gate, student.token, None, gate.public_url))
        # The control: the same call from our own origin with the session connects.
        asyncio.run(_connect(gate, student.token, client.cookies, gate.public_url))
