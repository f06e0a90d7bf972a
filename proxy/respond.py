"""The one place where errors become responses: JSON ``{"error", "request_id"}`` + status.

Refusals a caller must tell apart also carry a stable ``code`` (see ``ProxyError.code``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web

from proxy.errors import ProxyError

REQUEST_ID_KEY = web.RequestKey("owui_request_id", str)


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex looked, from one ``os.urandom`` call."""
    return os.urandom(16).hex()


def request_id(request: web.Request) -> str:
    """The id the request-id middleware gave ``request`` ("-" before it ran)."""
    return str(request.get(REQUEST_ID_KEY, "-"))


def error_response(
    request: web.Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
) -> web.Response:
    body = {"error": message, "request_id": request_id(request)}
    if code is not None:
        body["code"] = code
    return web.json_response(
        body,
        status=status,
        headers=dict(headers) if headers else None,
    )


def from_exception(request: web.Request, exc: ProxyError) -> web.Response:
    """``exc.reason`` is safe to show by contract (see ``proxy/errors.py``)."""
    return error_response(request, exc.status, exc.reason, code=exc.code)
