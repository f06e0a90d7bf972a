"""A tiny OpenAI-compatible model server, so OpenWebUI has a model that streams.

Serves ``GET /v1/models`` (one model, ``ralph-wiggum``) and ``POST /v1/chat/completions``,
streaming (``text/event-stream`` of ``chat.completion.chunk`` events, a pause between tokens,
then ``data: [DONE]``) or not. The reply is canned: it exists to show streaming end to end
(model server -> OpenWebUI -> proxy -> browser), not to be clever.

Run: ``python -m demo.model_server --listen 127.0.0.1:8101 [--token-delay 0.05]``.
It prints ``model server listening on http://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

MODEL_ID = "ralph-wiggum"
REPLY = (
    "Hi, Super Nintendo Chalmers! I'm learning! My cat's breath smells like cat food. "
    "Me fail English? That's unpossible!"
)
TOKEN_DELAY_KEY = web.AppKey("token_delay", float)


def reply_tokens(text: str = REPLY) -> list[str]:
    """The reply split into word tokens, each keeping its trailing space."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


async def list_models(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "owui-gate-demo"}
            ],
        }
    )


def _chunk(completion_id: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    event = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return web.json_response({"error": {"message": "'messages' must be a list"}}, status=400)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    tokens = reply_tokens()
    if not body.get("stream"):
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL_ID,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(tokens), "total_tokens": 0},
            }
        )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    delay = request.app[TOKEN_DELAY_KEY]
    await response.write(_chunk(completion_id, created, {"role": "assistant"}, None))
    for token in tokens:
        await asyncio.sleep(delay)
        await response.write(_chunk(completion_id, created, {"content": token}, None))
    await response.write(_chunk(completion_id, created, {}, "stop"))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def create_app(token_delay: float = 0.05) -> web.Application:
    """The model server's aiohttp application."""
    app = web.Application()
    app[TOKEN_DELAY_KEY] = token_delay
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def serve(host: str, port: int, token_delay: float) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(create_app(token_delay), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"model server listening on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--listen", default="127.0.0.1:8101", help="HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--token-delay",
        type=float,
        default=0.05,
        help="seconds between streamed tokens (default %(default)s)",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host or "127.0.0.1", int(port), args.token_delay))


if __name__ == "__main__":
    main()
