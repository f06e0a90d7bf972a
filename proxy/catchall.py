"""Each app's one resource: every request, whatever its target, to one handler.

aiohttp's catch-all spelling, ``/{tail:[\\s\\S]*}``, runs a regular expression over the path
of every request and unquotes what it captured into ``match_info``, which nothing here reads
(the handlers read the raw target themselves, ``proxy/target.py``). And a path resource,
whatever its pattern, matches only targets whose path starts with ``/``: ``OPTIONS *``,
``CONNECT host:port`` and an absolute-form target without a path match none, so aiohttp
answered them itself, and answered ``Expect: 100-continue`` on them with its default handler
(``100 Continue`` before anyone was authenticated, inviting a body).

:class:`EveryTarget` is asked before any path look-up (aiohttp asks the resources of the
kind ``add_domain`` registers first, for every request), matches every request, and
resolves to the one route, with the caller's ``expect_handler``: every target meets the
listener's own checks first (the public listener's target refusal, the internal listener's
token check), and nothing is sent before them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.web_urldispatcher import (
    AbstractResource,
    AbstractRoute,
    MatchedSubAppResource,
    ResourceRoute,
    UrlMappingMatchInfo,
)
from yarl import URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[None]]


class EveryTarget(MatchedSubAppResource):
    """Every request, any method, to ``handler``; ``match_info`` is empty.

    A :class:`MatchedSubAppResource` only for where aiohttp's router looks for it: it has
    neither a sub-application nor a rule, and resolves every request itself.
    """

    def __init__(self, handler: Handler, expect_handler: ExpectHandler) -> None:
        AbstractResource.__init__(self)
        self._prefix = ""
        self._route = ResourceRoute("*", handler, self, expect_handler=expect_handler)

    @property
    def canonical(self) -> str:
        return "*"

    def get_info(self) -> dict[str, Any]:  # type: ignore[override]
        return {"target": "*"}

    def url_for(self, *args: str, **kwargs: str) -> URL:
        return URL("/")

    def add_prefix(self, prefix: str) -> NoReturn:
        raise NotImplementedError("owui-gate's apps are never mounted under a prefix")

    def raw_match(self, path: str) -> bool:
        return True

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo, set[str]]:
        return UrlMappingMatchInfo({}, self._route), {"*"}

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter((self._route,))

    def __repr__(self) -> str:
        return "<EveryTarget>"
