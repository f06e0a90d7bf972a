"""The one place where errors become responses: JSON ``{"error", "request_id"}`` + status.

Refusals a caller must tell apart also carry a stable ``code`` (see ``ProxyError.code``).
On the public listener a browser's page load gets an HTML page instead (``proxy/pages.py``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping

from aiohttp import web

from proxy.errors import ProxyError
from proxy.pages import PAGES_KEY, Page, is_page_load, page_for

REQUEST_ID_KEY = web.RequestKey("owui_request_id", str)
# On every JSON error the proxy answers itself: a refusal may name the person signed in
# (no cache may keep it), may echo parts of the request (never sniffed as HTML), and on the
# public listener the same URL answers a page load with HTML (a cache must tell them apart).
_JSON_ERROR_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PUBLIC_VARY = "Accept, Accept-Language"


class _Ids:
    """Request ids: a random per-process prefix and a counter, 32 hex digits in all.

    Unique without a syscall per request (uuid4 reads os.urandom each time). They name a
    request in logs and answers, they are no secret: predictability costs nothing.

    Id ``n`` is ``f"{prefix}{n:016x}"``, made without formatting a number per id (~2.5k
    instructions): ids come in blocks of 256 sharing their first 30 digits, formatted once a
    block, and the last two are the byte ``n % 256`` in hex from a table, so each id is one
    concatenation, all in C (``tests/proxy/test_logs.py`` compares them with the formula).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        heads = map(f"{self.prefix}{{:014x}}".format, itertools.count())
        self.stream: Iterator[str] = itertools.chain.from_iterable(map(_block, heads))


# The 256 bytes in hex, in order: the last two digits of the ids of one block.
_BYTES = tuple(f"{n:02x}" for n in range(256))


def _block(head: str) -> Iterator[str]:
    """The 256 ids that start with ``head``, in order."""
    return map(head.__add__, _BYTES)


_ids = _Ids()
# A forked worker must not repeat its parent's (or a sibling's) ids.
os.register_at_fork(after_in_child=_ids.reset)


def new_request_id() -> str:
    return next(_ids.stream)


def request_id(request: web.Request) -> str:
    """The id the request-id middleware gave ``request`` ("-" before it ran)."""
    try:  # indexed: ``request.get`` is two Python calls more
        return request[REQUEST_ID_KEY]
    except KeyError:
        return "-"


def error_response(
    request: web.Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    page: Page | None = None,
) -> web.Response:
    pages = request.config_dict.get(PAGES_KEY)
    if pages is not None and is_page_load(request):
        chosen = page or Page("error", {"message": message})
        return pages.answer(request, status, chosen, request_id(request), headers)
    body = {"error": message, "request_id": request_id(request)}
    if code is not None:
        body["code"] = code
    response = web.json_response(
        body,
        status=status,
        headers=dict(headers) if headers else None,
    )
    response.headers.update(_JSON_ERROR_HEADERS)
    if pages is not None:
        response.headers["Vary"] = _PUBLIC_VARY
    return response


def from_exception(request: web.Request, exc: ProxyError) -> web.Response:
    """``exc.reason`` is safe to show by contract (see ``proxy/errors.py``)."""
    return error_response(
        request, exc.status, exc.reason, exc.headers, code=exc.code, page=page_for(exc)
    )
