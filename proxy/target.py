"""The request target, read once, the way OpenWebUI's server reads it (pure, tested by tables
and by a differential test against uvicorn and Starlette themselves).

OpenWebUI 0.12.4 runs under uvicorn with httptools. For plain HTTP its path is
``httptools.parse_url(target).path`` (everything before the first ``?`` or ``#``),
percent-decoded with ``urllib.parse.unquote`` when it holds a ``%`` (invalid UTF-8 becomes
U+FFFD); for a WebSocket upgrade, uvicorn's websockets protocol reads ``target.partition("?")``
and decodes the same way, so a ``#`` stays *in* the path there. Starlette then routes on the
decoded path: case-sensitively, with ``%2F`` decoded into a separator, without merging
slashes or resolving dot segments, and answering a path that only differs by a trailing
slash with a redirect. The relay sends the target on byte for byte (``proxy/relay.py``), so
every decision about it is made on :attr:`Target.path`, the server's reading, or on
:attr:`Target.route`, a fold of it for deny lists.

Targets that readers may take differently are refused (:attr:`Target.problem`, a 400):

- anything but origin-form (absolute-form ``http://host/...``, ``*``): the client would pick
  the host the proxy talks to;
- a ``#``: httptools ends the path there, the WebSocket reader keeps it, aiohttp keeps it in
  the raw path, nginx passes it on (the account-creation bypass ``/auths/signup#x``);
- raw path characters outside RFC 3986's ``pchar`` (backslash, space, ``"<>^`{|}[]``,
  controls, non-ASCII) and ``;`` (path parameters, stripped by some servers): browsers
  encode them, servers disagree about them;
- a ``%`` not followed by two hex digits, escapes that do not decode to UTF-8 (overlong
  forms such as ``%C0%AF``, surrogates, stray bytes: uvicorn replaces them, other decoders
  do not), and escapes decoding to a control character (C0, DEL, C1: C servers stop at a
  NUL, file-system calls refuse one).

Left alone, because every server behind the proxy reads them the same way (as data, or
literally): ``%2F`` (model ids with a slash), ``%25``, ``%3F``, ``%23`` and other escapes in
file names, and empty or dot segments (``//``, ``..``), which uvicorn and Starlette keep as
they are and the shipped nginx configurations pass on unnormalised; deny lists decide on
:attr:`Target.route`, where they are merged and resolved, and, for a path with a dot
segment, on ``path`` too (Starlette takes ``..`` as a route parameter: ``/oauth/../login``
is the OAuth sign-in; ``proxy/browser.py``, ``deny_readings``). The query string is never
decided on here; it is relayed as sent.
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple
from urllib.parse import unquote

NOT_A_PATH = "request target must be a path"

# RFC 3986 pchar plus "/" and "%" (escapes are checked on their own), without ";".
_RAW_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# C0 controls, DEL and C1 controls, decoded from an escape.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Target(NamedTuple):
    """One request target, read once.

    ``raw`` is what is relayed. ``path`` is OpenWebUI's reading of it (decoded, nothing
    merged or resolved): positive decisions compare it exactly. ``route`` folds ``path``
    further (slashes merged, dot segments resolved, lower-cased, no trailing slash) and
    only ever serves deny lists (with ``path``: ``browser.deny_readings``), where merging
    spellings is the safe direction. ``problem``
    says why the target is refused (None: it is not).

    A named tuple, not a frozen dataclass: made for every request, and a tuple is built in C.
    """

    raw: str
    path: str
    query: str
    route: str
    problem: str | None


# A named tuple's own __new__ is a Python function (one frame per request): this is the
# C constructor it calls, given the fields in order.
_made = tuple.__new__


# Path -> its reading as a target of its own (no query), for paths read without a problem:
# clients send the same few paths again and again ("/", the UI's API calls, the Socket.IO
# path), and reading one costs a regex match and a tuple built (~7k instructions), finding
# it ~1k. Keyed by the path alone: a query string may carry a secret, and is never kept.
# Bounded as the header verdicts (``proxy/headers.py``): cleared when full, as paths are
# the client's to choose; long ones are read every time.
_known: dict[str, Target] = {}
_MAX_KNOWN = 1024
_MAX_KNOWN_PATH = 256


def read_target(raw: str) -> Target:
    """Read a raw request target (path and query, as the client sent them): :func:`_read`'s
    reading, from :data:`_known` when the path is there.

    A path read without a problem reads the same with any query after it, unless that query
    holds a ``#`` (a fragment, refused wherever it is): then, and for any path not known,
    the target is read in full."""
    head, mark, query = raw.partition("?")
    known = _known.get(head)
    if known is not None:
        if not mark:
            return known
        if "#" not in query:
            return _made(Target, (raw, known.path, query, known.route, None))
    target = _read(raw)
    if target.problem is None and len(head) <= _MAX_KNOWN_PATH:
        if len(_known) >= _MAX_KNOWN:
            _known.clear()
        # The path's own reading: this one's, without the query (tests/proxy/test_target.py).
        _known[head] = _made(Target, (head, target.path, "", target.route, None))
    return target


def _read(raw: str) -> Target:
    """Read a raw request target, every time (:func:`read_target` remembers paths)."""
    if not raw.startswith("/"):
        return Target(raw, "", "", "", NOT_A_PATH)
    head, _, query = raw.partition("?")
    problem = None
    if "#" in raw:
        problem = "a fragment (#) in the request target"
        head = head.partition("#")[0]  # httptools: the path ends at the first "?" or "#"
    if "%" not in head:  # almost every request: nothing to decode
        path = head
        if problem is None and not _RAW_PATH.fullmatch(head):
            problem = "a character in the path that must be percent-encoded"
    else:
        path = unquote(head)  # exactly uvicorn's reading, invalid UTF-8 and all
        if problem is None:
            problem = _escape_problem(head, path)
    if "//" in path or "/." in path:
        route = canonical_path(path, decoded=True)
    else:  # canonical_path's own fast path, inlined: almost every request
        route = path.lower().rstrip("/") or "/"
    return _made(Target, (raw, path, query, route, problem))


def _escape_problem(head: str, path: str) -> str | None:
    if not _RAW_PATH.fullmatch(head):
        return "a character in the path that must be percent-encoded"
    if _ESCAPE.search(head):
        return "a '%' that is not followed by two hex digits"
    try:
        unquote(head, errors="strict")
    except UnicodeDecodeError:
        return "percent-escapes that are not UTF-8"
    if _CONTROL.search(path):
        return "a percent-encoded control character in the path"
    return None


def canonical_path(path: str, decoded: bool = False) -> str:
    """``path`` as the most lenient server could read it: percent-decoded (unless
    ``decoded`` says it is already), slashes collapsed, dot segments resolved, lower-cased,
    without a trailing slash.

    Only for deciding what to *refuse*: it merges spellings a server may tell apart (case,
    ``a//b``), which is the safe direction for a deny list. Decoded once, never twice: a
    second decoding would read ``%252e%252e`` as ``..`` and un-refuse what the first found.
    """
    rooted = "/" + path.lstrip("/")
    if ("%" not in rooted or decoded) and "//" not in rooted and "/." not in rooted:
        # Nothing to decode, collapse or resolve (no "." or ".." segment starts without
        # "/." here): the slow path below would return this too. Almost every request.
        return rooted.lower().rstrip("/") or "/"
    text = path if decoded else unquote(path)
    # Collapse slashes first: normpath keeps a leading "//", and servers differ on "a//b".
    resolved = posixpath.normpath("/" + re.sub("/+", "/", text).lstrip("/")).lower()
    return resolved.rstrip("/") or "/"
