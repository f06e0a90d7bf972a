"""Which requests the internal listener relays: ``METHOD /path/{param}`` rules, pure.

The rules are parsed once at start. A request target is checked on its *raw* form, as the
client sent it (and then against the one reading of it every decision uses,
``proxy/target.py``), because the routers behind us (aiohttp's, then Starlette's in OpenWebUI)
decode and normalise it in their own ways: an encoded slash or dot segment that we
decoded one way and OpenWebUI another would reach an endpoint the rule never named. So
every construct that two parsers could read differently is refused outright, before
any rule is consulted:

- a target that is not a plain path (absolute-form ``http://...``, ``*``, a fragment);
- empty segments (``//``, or a trailing ``/`` that no rule names) and dot segments
  (``.``, ``..``);
- a backslash, a control character, or any character outside RFC 3986's unreserved set
  (``;`` path parameters, ``:``, ``@``, spaces, non-ASCII look-alikes, ...);
- percent-encoding of anything but an unreserved character: ``%2F``, ``%2E``, ``%5C``,
  ``%25`` (double encoding), control and non-ASCII octets.

What is left decodes to unreserved characters only, so the decoded path has exactly one
spelling: :attr:`Allowed.path`, which is what gets relayed. Matching is exact and
case-sensitive on the method (``HEAD`` is not ``GET``) and on every literal segment.
``{id}`` matches one UUID (OpenWebUI's ids are UUIDs): in 0.12.4 ``GET /api/v1/chats/{id}``
is also the route shape of ``/api/v1/chats/config``, ``/pinned``, ``/search``, ... and a
UUID-only ``{id}`` keeps those out. Any other ``{param}`` matches one segment of
``[A-Za-z0-9_-]``.
The query string is never matched on and is relayed as sent.

OpenWebUI's account endpoints (``/api/v1/auths/...``, ``/oauth/...``) hand out tokens and
API keys or change who a user is; of those only ``POST /api/v1/auths/signin`` is ever
relayed (the internal listener guards it), whatever rule matched: the settings refuse a
rule naming another one, and this keeps a ``{param}`` rule from matching one
(``GET /api/v1/{section}/api_key``).

A rule may end in one ``/`` (``GET /api/v1/folders/``): OpenWebUI's routes declared as
``"/"`` under a router prefix answer only that spelling (without the slash, a redirect). It
matches a target ending in exactly that one slash, and a rule without one never does.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.target import Target

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_-]+")
_UUID_VALUE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# What a query string may hold: visible ASCII, no fragment. aiohttp's parser already
# refuses most of the rest; this keeps the guarantee independent of it.
_QUERY = re.compile(r"[!$&'()*+,;=:@/?%A-Za-z0-9._~\[\]-]*")

# Reasons an encoded octet is refused, by the character it decodes to.
_ENCODED_REFUSALS = {
    "/": "encoded slash (%2F) in path",
    ".": "encoded dot (%2E) in path",
    "\\": "encoded backslash (%5C) in path",
    "%": "double percent-encoding (%25) in path",
}


_EMPTY_SEGMENT = "empty path segment ('//' or a trailing '/')"

# OpenWebUI's account endpoints, compared lower-cased (as the settings check rules); only
# SIGNIN of them is ever relayed.
ACCOUNT_PREFIXES = ("/api/v1/auths", "/oauth")
SIGNIN = ("POST", "/api/v1/auths/signin")


def reaches_account(method: str, path: str) -> bool:
    """Whether ``method path`` is one of OpenWebUI's account endpoints other than the
    sign-in: never relayed, whatever rule matched, and no rule may name one (the settings)."""
    return (method, path) != SIGNIN and path.lower().startswith(ACCOUNT_PREFIXES)


_ACCOUNT_REFUSAL = (
    f"an OpenWebUI account endpoint: of those only {SIGNIN[0]} {SIGNIN[1]} is ever relayed"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule; ``segments`` holds literals, and the value pattern of a ``{param}``."""

    method: str
    pattern: str
    segments: tuple[str | re.Pattern[str], ...]

    def __str__(self) -> str:
        return f"{self.method} {self.pattern}"

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        if method != self.method or len(segments) != len(self.segments):
            return False
        return all(
            seg == want if isinstance(want, str) else want.fullmatch(seg) is not None
            for want, seg in zip(self.segments, segments, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Allowed:
    """The request may be relayed, to exactly ``path`` (+ ``?query`` when not empty)."""

    rule: Rule
    path: str
    query: str

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True, slots=True)
class Refused:
    """The request must not be relayed; ``reason`` is safe to log and to show the caller."""

    reason: str


class Allowlist:
    """The parsed rules. Construction raises ``ValueError`` naming every bad rule."""

    def __init__(self, rules: Iterable[str]) -> None:
        parsed: list[Rule] = []
        problems: list[str] = []
        for text in rules:
            try:
                parsed.append(parse_rule(text))
            except ValueError as exc:
                problems.append(f"{text!r}: {exc}")
        if problems:
            raise ValueError("bad internal allowlist rule(s): " + "; ".join(problems))
        if not parsed:
            raise ValueError("the internal allowlist is empty: nothing could ever be relayed")
        self.rules: tuple[Rule, ...] = tuple(parsed)

    def check(self, method: str, target: Target) -> Allowed | Refused:
        """Decide a request from its method and its target, read once (``proxy/target.py``).

        The allowlist's own, stricter reading of the raw target comes first (its refusals
        name the construct). What it admits must also be what OpenWebUI's server reads
        (:attr:`Target.path`): what was checked is what is routed, or it is refused.
        """
        split = split_target(target.raw)
        if isinstance(split, Refused):
            return split
        if target.problem is not None:
            return Refused(target.problem)
        segments, query = split
        path = "/" + "/".join(segments)
        if path != target.path:  # cannot happen for what split_target admits: fail closed
            return Refused("the path reads differently to OpenWebUI's server")
        for rule in self.rules:
            if rule.matches(method, segments):
                if reaches_account(method, path):
                    return Refused(_ACCOUNT_REFUSAL)
                return Allowed(rule=rule, path=path, query=query)
        if segments[-1] == "":
            return Refused(_EMPTY_SEGMENT)
        return Refused("not on the internal allowlist")


def parse_rule(text: str) -> Rule:
    """``'METHOD /a/{param}/b'`` to a :class:`Rule`; raises ``ValueError`` saying why not."""
    method, sep, pattern = text.strip().partition(" ")
    if not sep or method not in METHODS:
        raise ValueError(f"must start with one of {', '.join(sorted(METHODS))} and a space")
    pattern = pattern.strip()
    if not pattern.startswith("/") or pattern == "/":
        raise ValueError("the path must start with '/' and name at least one segment")
    trailing = pattern.endswith("/")  # one trailing slash, matched as written
    segments: list[str | re.Pattern[str]] = []
    for segment in (pattern[1:-1] if trailing else pattern[1:]).split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            if not _PARAM_NAME.fullmatch(segment[1:-1]):
                raise ValueError(f"{segment!r} is not a valid {{param}}")
            segments.append(_UUID_VALUE if segment == "{id}" else _PARAM_VALUE)
        elif not segment or segment in (".", "..") or not set(segment) <= _UNRESERVED:
            raise ValueError(
                f"segment {segment!r} must be a {{param}} or non-empty letters, digits, '-._~'"
            )
        else:
            segments.append(segment)
    if trailing:
        segments.append("")
    return Rule(method=method, pattern=pattern, segments=tuple(segments))


def split_target(target: str) -> tuple[tuple[str, ...], str] | Refused:
    """A raw request target to its decoded path segments and raw query, or a refusal."""
    if not target.startswith("/"):
        return Refused("request target must be a path starting with '/' (origin-form)")
    if "#" in target:
        return Refused("fragment in request target")
    path, _, query = target.partition("?")
    if not _QUERY.fullmatch(query):
        return Refused("character not allowed in query string")
    if path == "/":
        return Refused("not on the internal allowlist")
    segments: list[str] = []
    raws = path[1:].split("/")
    for index, raw in enumerate(raws):
        if not raw and 0 < index == len(raws) - 1:
            segments.append("")  # one trailing slash: only a rule naming it matches
            continue
        decoded = _decode_segment(raw)
        if isinstance(decoded, Refused):
            return decoded
        segments.append(decoded)
    return tuple(segments), query


def _decode_segment(raw: str) -> str | Refused:
    if not raw:
        return Refused(_EMPTY_SEGMENT)
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "%":
            octet = raw[i + 1 : i + 3]
            if len(octet) != 2 or not set(octet) <= _HEX:
                return Refused("invalid percent-encoding in path")
            ch = chr(int(octet, 16))
            if ch in _ENCODED_REFUSALS:
                return Refused(_ENCODED_REFUSALS[ch])
            if ch not in _UNRESERVED:
                return Refused(f"percent-encoded {_describe(ch)} in path")
            i += 3
        else:
            if ch not in _UNRESERVED:
                return Refused(f"{_describe(ch)} in path")
            i += 1
        out.append(ch)
    segment = "".join(out)
    if segment in (".", ".."):
        return Refused("dot segment ('.' or '..') in path")
    return segment


def _describe(ch: str) -> str:
    if ch == "\\":
        return "backslash"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return "control character"
    if ord(ch) > 0x7E:
        return "non-ASCII character"
    return f"character {ch!r}"
