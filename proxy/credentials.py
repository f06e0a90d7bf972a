"""Which OpenWebUI credentials a request carries, read as OpenWebUI 0.12.4 reads them (pure).

OpenWebUI takes a token (a session JWT, or an API key ``sk-...``) from three places
(``utils/auth.py`` ``get_current_user``, ``utils/asgi_middleware.py`` ``_set_token``, and the
endpoints that read them by hand: ``/api/config``, sign-out, the session answer):

- ``Authorization``: FastAPI's ``HTTPBearer`` takes what follows the first space, stripped,
  when the scheme is ``bearer``; ``get_http_authorization_cred`` splits on single spaces and
  takes the second of exactly two parts, whatever the scheme (``Basic sk-...`` is a key
  there);
- the ``token`` cookie (Starlette's cookie parser: chunks split on ``;`` and the first
  ``=``, stripped, unquoted as ``http.cookies`` does; the last one wins);
- ``CUSTOM_API_KEY_HEADER`` (``x-api-key`` unless configured otherwise), when neither of
  the others gave one.

Every value any of those readers could take is returned, from every copy of each header:
more than OpenWebUI uses, never less, so no credential reaches it unchecked. Each is read
from the bytes OpenWebUI reads: aiohttp's server decodes a header's bytes as UTF-8 (those
that are not become lone surrogates), Starlette as Latin-1, and ``str.strip`` takes
``\x85`` and ``\xa0`` off the Latin-1 reading only (``\x85token=sk-...`` is a ``token``
cookie to OpenWebUI, and was none to a UTF-8 reading). So every value is read as Latin-1
(:func:`as_openwebui_reads`) before it is parsed; a credential holding anything but ASCII
then is exactly OpenWebUI's reading, which it never issued (``proxy/owners.py`` refuses it
without asking). The carrier
matters to the policy (``proxy/public.py``): a header credential that is not the person's
refuses the request, a cookie that is not theirs is dropped from a page load.
"""

from __future__ import annotations

from http.cookies import _unquote
from typing import NamedTuple

from multidict import CIMultiDictProxy, MultiMapping

TOKEN_COOKIE = "token"  # noqa: S105 (the cookie's name, not a secret)


class Carried(NamedTuple):
    """The credentials of one request: from headers, and from ``token`` cookies.

    A named tuple: immutable as a frozen dataclass is, and about half the instructions to
    make (one per request that carries a credential)."""

    headers: tuple[str, ...]
    cookies: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.headers or self.cookies)


NONE = Carried((), ())
# A named tuple's own __new__ is a Python function (a frame per call): its C constructor.
_made = tuple.__new__


def as_openwebui_reads(value: str) -> str:
    """A header value from aiohttp's server, as OpenWebUI's Starlette reads the same bytes:
    Latin-1 (aiohttp decoded them as UTF-8, surrogate-escaped, which gives them back).
    An ASCII value (almost every one) reads the same both ways, and is returned as it is."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def carried(headers: MultiMapping[str] | CIMultiDictProxy[str], api_key_header: str) -> Carried:
    """Every OpenWebUI credential in ``headers`` (distinct values, in order), each as
    OpenWebUI reads it (:func:`as_openwebui_reads`)."""
    found: list[str] = []
    for value in headers.getall("Authorization", ()):
        value = as_openwebui_reads(value)
        # HTTPBearer: what follows the first space, stripped (of Unicode spaces too).
        rest = value.partition(" ")[2]
        credential = rest.strip()
        if credential:
            found.append(credential)
        # OpenWebUI's own reader: the second of exactly two parts split on single spaces,
        # which is what follows the first space when no other space does (no list made).
        # Equal to the stripped one (almost always: the very same string), it is in already.
        if rest and rest != credential and " " not in rest:
            found.append(rest)
    for value in headers.getall(api_key_header, ()):
        if value:
            found.append(as_openwebui_reads(value))
    cookies: list[str] = []
    for header in headers.getall("Cookie", ()):
        if TOKEN_COOKIE in header:  # almost every other request: no token cookie at all
            cookies += token_cookies(header)
    if not found and not cookies:
        return NONE
    # Each list in order, each value once: through a dict (linear, however many) only when
    # there are several; one (almost every request) is not hashed at all. Written out for
    # both lists, not a helper called twice (two calls fewer per request that carries one).
    return _made(
        Carried,
        (
            tuple(dict.fromkeys(found)) if len(found) > 1 else tuple(found),
            tuple(dict.fromkeys(cookies)) if len(cookies) > 1 else tuple(cookies),
        ),
    )  # Carried(...), in C


def token_cookies(header: str) -> list[str]:
    """Every value of a ``token`` cookie in one ``Cookie`` header (from aiohttp's server),
    as Starlette reads each (from the same bytes: :func:`as_openwebui_reads`)."""
    header = as_openwebui_reads(header)
    values = []
    for chunk in header.split(";"):
        if TOKEN_COOKIE not in chunk:
            continue
        key, sep, value = chunk.partition("=")
        if sep and key.strip() == TOKEN_COOKIE:
            value = value.strip()
            if value.startswith('"'):  # else _unquote returns it as it is: no call
                value = _unquote(value)
            if value:
                values.append(value)
    return values


def without_token_cookie(cookie_headers: list[str]) -> list[str]:
    """The ``Cookie`` headers with every ``token`` cookie taken out (others kept as sent):
    every chunk whose name Starlette reads as ``token`` (from the bytes: ``;`` and ``=`` are
    ASCII, so aiohttp's reading splits into the same chunks)."""
    kept = []
    for header in cookie_headers:
        chunks = [
            c
            for c in header.split(";")
            if as_openwebui_reads(c.partition("=")[0]).strip() != TOKEN_COOKIE
        ]
        joined = ";".join(chunks).strip()
        if joined:
            kept.append(joined)
    return kept
