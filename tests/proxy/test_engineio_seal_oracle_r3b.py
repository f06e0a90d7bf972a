"""A seal is given out only for a handshake python-engineio answered.

The proxy seals the session id in the answer to a long-polling handshake. It took any ``GET``
whose path *folds* to something with ``socket.io`` in it for one: OpenWebUI's
``GET /api/v1/files/{id}/content/{file_name}`` answers a file's bytes under any name, so a
person uploads ``0{"sid":"<someone else's id>"}``, asks for it as ``.../content/socket.io``
and is handed that id sealed for themselves, then reads and writes the other person's
Engine.IO session with it (a bare id is in every polling URL, hence in access logs).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from proxy.socketio import serves_engineio
from tests.fakes import FakeUpstream
from tests.proxy.conftest import BOB_COOKIE

FILE = "/api/v1/files/f1/content/socket.io"
BOBS_BARE_ID = "eio-1"


@pytest.fixture(autouse=True)
def file_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake OpenWebUI also serves an uploaded file whose bytes look like a handshake."""
    dispatch = FakeUpstream._dispatch

    async def serving_a_file(self: Any, request: web.Request) -> web.StreamResponse:
        if request.path == FILE:
            opened = {"sid": "eio-victim", "upgrades": [], "pingInterval": 1, "pingTimeout": 1}
            return web.Response(text="0" + json.dumps(opened), content_type="text/plain")
        return await dispatch(self, request)

    monkeypatch.setattr(FakeUpstream, "_dispatch", serving_a_file)


async def test_no_seal_for_an_answer_that_is_not_engineios_handshake(proxy, fake_upstream) -> None:
    response = await proxy.get(FILE, headers=BOB_COOKIE)
    assert response.status == 200
    text = await response.text()
    sid = json.loads(text[1:])["sid"]
    # Whatever it was handed, it opens nobody's session: not the victim's.
    poll = await proxy.get(f"/ws/socket.io/?EIO=4&transport=polling&sid={sid}", headers=BOB_COOKIE)
    assert poll.status == 403
    assert not any("sid=eio-victim" in seen.raw_path for seen in fake_upstream.seen)
    assert sid == "eio-victim"  # as OpenWebUI sent it: no seal


def test_serves_engineio_is_python_engineios_own_test() -> None:
    """python-engineio's ASGIApp serves a path when, a trailing slash added, it starts with
    ``/ws/socket.io/`` (case-sensitive, unresolved): exactly those, for positive decisions."""
    import socketio as python_socketio

    app = python_socketio.ASGIApp(
        python_socketio.AsyncServer(async_mode="asgi"), socketio_path="/ws/socket.io"
    )
    for path in [
        "/ws/socket.io/",
        "/ws/socket.io",
        "/ws/socket.io/x",
        "/ws/socket.io/../../api/x",
        "/ws/socket.iox",
        "/ws/SOCKET.IO/",
        "/ws//socket.io/",
        "/api/v1/files/f1/content/socket.io",
        "/socket.io/",
        "",
    ]:
        served = app._ensure_trailing_slash(path).startswith(app.engineio_path)
        assert serves_engineio(path) is served, path
