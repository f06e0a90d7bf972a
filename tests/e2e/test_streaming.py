"""Streaming through the proxy: SSE chat completions and OpenWebUI's Socket.IO."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import socketio  # type: ignore[import-untyped]

from demo.model_server import MODEL_ID, reply_tokens
from demo.stack import Stack
from tests.e2e import socketchat
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
    sio = await socketchat.connect(stack.public_url, token, cookies)
    events, done = socketchat.collect_events(sio)
    try:
        joined = await sio.call("user-join", {"auth": {"token": token}}, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=stack.public_url, cookies=cookies, headers=headers, timeout=60
        ) as client:
            chat_id = await socketchat.background_completion(client, sio.get_sid("/"), "socket")
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await sio.disconnect()
    return {"joined": joined, "chat_id": chat_id, "events": events}


def test_socketio_connects_through_the_proxy_and_receives_events(gate: Stack) -> None:
    student = sign_in_through_proxy(gate, fresh_email("socket"), "Socket Student")
    with student as client:
        me = client.get("/api/v1/auths/", headers=student.auth()).json()
        result = asyncio.run(_socket_session(gate, student.token, client.cookies))
    assert result["joined"] == {"id": me["id"], "name": "Socket Student"}
    mine = [(t, e["data"]) for t, e in result["events"] if e.get("chat_id") == result["chat_id"]]
    deltas = _streamed_text(mine)
    shapes = [(e.get("type"), sorted(e.get("data") or {})) for _, e in mine]
    assert "".join(text for _, text in deltas) == "".join(reply_tokens()), (shapes, mine[:3])
    assert any(e.get("type") == "chat:completion" and e["data"].get("done") for _, e in mine)
    # Streamed over the socket as it was generated (0.1 s a token), not in one burst at the end.
    assert deltas[-1][0] - deltas[0][0] > 1.0


def _streamed_text(mine: list[tuple[float, Any]]) -> list[tuple[float, str]]:
    """The completion's text as it arrived, ``(arrival, piece)``, in either shape OpenWebUI
    streams it to a socket: 0.12.4's ``response:completion`` events carrying
    ``response.output_text.delta`` pieces, or (0.8.12, 0.7.2) ``chat:completion`` events
    whose ``content`` is the text so far."""
    deltas = [
        (t, event["data"]["delta"])
        for t, event in mine
        if event.get("type") == "response:completion"
        and event["data"].get("type") == "response.output_text.delta"
    ]
    if deltas:
        return deltas
    pieces: list[tuple[float, str]] = []
    so_far = ""
    for t, event in mine:
        content = (event.get("data") or {}).get("content")
        if (
            event.get("type") == "chat:completion"
            and isinstance(content, str)
            and content.startswith(so_far)
            and len(content) > len(so_far)
        ):
            pieces.append((t, content[len(so_far) :]))
            so_far = content
    return pieces


async def _connect(stack: Stack, token: str, cookies: httpx.Cookies | None, origin: str) -> None:
    sio = await socketchat.connect(stack.public_url, token, cookies, origin=origin)
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
