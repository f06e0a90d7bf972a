"""The public app's one resource: every target with a path, any method, to one handler.

aiohttp's catch-all spelling, ``/{tail:[\\s\\S]*}``, runs a regular expression over the path
of every request and unquotes what it captured into ``match_info``, which nothing here reads
(the handler reads the raw target itself, ``proxy/target.py``): ~6.5k instructions of a
small request. This resource matches the same paths (those that start with ``/``) without
either; ``OPTIONS *`` and a target without a path (``CONNECT host:port``, an absolute-form
target with none) match no resource, and aiohttp answers 404 itself, as before.
"""

from __future__ import annotations

from typing import NoReturn

from aiohttp import web
from yarl import URL


class CatchAll(web.Resource):
    """Every path that starts with ``/``; ``match_info`` is empty."""

    @property
    def canonical(self) -> str:
        return "/"  # indexed under "/", which aiohttp's look-up reaches for every path

    def _match(self, path: str) -> dict[str, str] | None:
        return {} if path[:1] == "/" else None

    def raw_match(self, path: str) -> bool:
        return path == "/"

    def add_prefix(self, prefix: str) -> NoReturn:
        raise NotImplementedError("the public app is never mounted under a prefix")

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"path": "/"}

    def url_for(self, **parts: str) -> URL:
        return URL("/")

    def __repr__(self) -> str:
        return "<CatchAll>"
