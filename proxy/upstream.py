"""OpenWebUI as the relay sees it (:class:`Upstream`), built once per process.

Its own module so that the HTTP relay (``proxy/relay.py``), the WebSocket relay
(``proxy/websocket.py``) and the side requests (``proxy/socketio.py``,
``proxy/release_watch.py``) depend on it rather than on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL

from proxy import h1
from proxy.errors import BadRequest
from proxy.settings import Settings

# aiohttp adds these when missing; we send exactly the header set the caller built.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# The most of an answer to one of the proxy's own side requests (the release's
# /api/config, whose a credential is) that is read: they are small JSON objects, and a
# longer one is cut there, so no JSON is read from it.
SIDE_ANSWER_MAX_BYTES = 1_000_000


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body to its end, at most its first ``limit`` bytes. One ``read(limit)`` returns
    only what is buffered: a config in two TCP segments was read half."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Upstream:
    """OpenWebUI as the relay sees it: the HTTP pool, a session for WebSockets, timeouts, limits.

    Built once at start (:meth:`open`) inside the running loop, closed at shutdown.
    """

    pool: h1.Pool
    session: aiohttp.ClientSession
    base: str
    connect_timeout_s: float
    response_timeout_s: float
    idle_timeout_s: float
    max_body_bytes: int
    body_timeout_s: float
    websocket_max_message_bytes: int

    @classmethod
    def open(cls, settings: Settings) -> Upstream:
        connector = aiohttp.TCPConnector(
            limit=0,  # concurrency is the clients'; long SSE streams must not queue others
            keepalive_timeout=30,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # Shared by every user: a cookie jar would hand one user's cookies to the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # relay Content-Encoding untouched
            trust_env=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        pool = h1.Pool(
            settings.upstream,
            connect_timeout_s=settings.connect_timeout_s,
            response_timeout_s=settings.response_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
        )
        return cls(
            pool=pool,
            session=session,
            base=settings.upstream.rstrip("/"),
            connect_timeout_s=settings.connect_timeout_s,
            response_timeout_s=settings.response_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
            websocket_max_message_bytes=settings.websocket_max_message_bytes,
        )

    async def close(self) -> None:
        await self.pool.close()
        await self.session.close()

    def url_for(self, raw_target: str) -> URL:
        """The upstream URL for a raw request target, byte for byte (no normalisation)."""
        return URL(self.base + checked_target(raw_target), encoded=True)


def checked_target(raw_target: str) -> str:
    """``raw_target`` if it is a path; absolute-form or ``*`` would let a client choose
    another host."""
    if not raw_target.startswith("/"):
        raise BadRequest("request target must be a path")
    return raw_target
