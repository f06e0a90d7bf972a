"""Request bodies are taken as the client sent them: never inflated by aiohttp.

aiohttp's server inflates a ``Content-Encoding: gzip`` or ``deflate`` body before a handler
reads it. The public listener relayed the inflated bytes under the client's coded
``Content-Length`` (the smuggling in ``test_h1_smuggle_r3b.py``), and the internal
listener's guards judged an inflated sign-in or chat update while OpenWebUI would be handed
other bytes. With inflation off on both listeners, a body goes upstream as sent, and what a
guard reads is what goes upstream.
"""

from __future__ import annotations

import gzip
import json

from tests.proxy.test_internal import ACT, AUTH, STUDENT, Internal, internal  # noqa: F401


async def test_a_coded_body_is_relayed_as_sent(internal: Internal) -> None:  # noqa: F811
    """Relayed coded, under its own length (inflated, its length would no longer match the
    head's, and the exchange refuses that)."""
    chat = {"chat": {"title": "Module 1"}, "folder_id": None}
    coded = gzip.compress(json.dumps(chat).encode(), mtime=0)
    response = await internal.client.post(
        "/api/v1/chats/new",
        data=coded,
        headers={
            **AUTH,
            **ACT,
            "Authorization": f"Bearer tok.{STUDENT}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status == 200
    (seen,) = internal.upstream.seen
    assert seen.values("Content-Encoding") == ["gzip"]
    assert seen.values("Content-Length") == [str(len(coded))]
    assert json.loads(seen.body) == chat  # the fake upstream (aiohttp) inflates it to read
