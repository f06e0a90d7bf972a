"""The header policy: which request headers reach OpenWebUI, and which response headers return.

Pure functions over header lists, so the whole policy is one table of tests
(``tests/proxy/test_headers.py``). The order inside :func:`build_upstream_headers` is the
security argument, step by step:

1. Drop every header whose name, lower-cased with ``_`` read as ``-``, is a protected
   identity header (email, name, groups, role) or ``Proxy-Authorization``. Servers such as
   uvicorn/starlette may fold ``X_User_Email`` into ``x-user-email``; we refuse every
   spelling instead of guessing which one a server reads.
2. Drop hop-by-hop headers (RFC 9110 7.6.1) and every header named in ``Connection``.
3. Drop headers the proxy owns (``Host``, the ``X-Forwarded-*`` family, ``Forwarded``,
   ``X-Real-IP``, ``X-Request-ID``) and set them deliberately from what the proxy knows:
   with a public URL configured, ``Host`` and ``X-Forwarded-Host``/``-Proto`` are that URL's,
   whatever the client (or a front proxy) said. Steps 1 to 3 match names as in step 1
   (``Transfer_Encoding`` and ``X_Forwarded_For`` are what a server may read them as).
4. Inject the verified identity last, so nothing a client sends (not even
   ``Connection: X-User-Email``) can remove or duplicate it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, cast
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.identity import Identity
from proxy.settings import IPNetwork, Settings

# RFC 9110 7.6.1 names these; Proxy-Connection is the pre-standard spelling still sent by
# some clients, Trailer/TE only make sense per connection, HTTP2-Settings belongs to h2c.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "http2-settings",
        # Already answered by our own server; the upstream would wait for a body we hold.
        "expect",
    }
)

# Set by the proxy from facts it knows; a client's copies are never passed on.
PROXY_OWNED = frozenset(
    {
        "host",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-request-id",
        # The proxy's readiness probe marks itself with it (proxy/auth/forward.py); nobody
        # else may, and it is no business of OpenWebUI's.
        "x-owui-proxy-probe",
    }
)

REQUEST_ID_HEADER = "X-Request-ID"

_DROPPED = HOP_BY_HOP | PROXY_OWNED
# The names the proxy sets, as keys made once: a multidict lower-cases and hashes a plain
# str on every add (an istr carries its folded form, hashed once).
_HOST = istr("Host")
_FORWARDED_FOR = istr("X-Forwarded-For")
_FORWARDED_PROTO = istr("X-Forwarded-Proto")
_FORWARDED_HOST = istr("X-Forwarded-Host")
_REQUEST_ID = istr(REQUEST_ID_HEADER)
_MAX_VERDICTS = 4096
_MAX_CACHED_NAME = 64  # longer names are judged every time, never kept


def normalise(name: str) -> str:
    """Header names compared as servers may read them: case-folded, ``_`` equal to ``-``."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """What the policy needs from the settings, computed once at start."""

    email_header: str
    name_header: str
    groups_header: str
    role_header: str
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # (scheme, host[:port]) of OWUI_PROXY_PUBLIC_URL: our own name, never a client's.
    public: tuple[str, str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderPolicy:
        public = urlsplit(settings.public_url) if settings.public_url else None
        return cls(
            email_header=settings.email_header,
            name_header=settings.name_header,
            groups_header=settings.groups_header,
            role_header=settings.role_header,
            trusted_proxies=settings.trusted_proxies,
            public=(public.scheme, public.netloc) if public else None,
        )

    protected: frozenset[str] = field(init=False)
    # The identity headers' names (email, name, groups) as keys made once (see _HOST).
    _identity_keys: tuple[istr, istr, istr] = field(init=False, repr=False, compare=False)
    # name -> passes (neither protected nor proxy-owned nor hop-by-hop): clients send the
    # same few dozen names on every request, so each is judged once. Bounded: cleared
    # when full, as names are the client's to choose.
    _verdicts: dict[str, bool] = field(init=False, repr=False, compare=False, default_factory=dict)
    # The names of those verdicts that pass: ``name in set`` is the cheapest test there is,
    # and the header loops below run once per header of every request.
    _passing: set[str] = field(init=False, repr=False, compare=False, default_factory=set)
    # The names of those verdicts that refuse and are no identity header (Host, Connection):
    # refused without a word. A name found in neither set is judged again, never guessed.
    _refused_quietly: set[str] = field(init=False, repr=False, compare=False, default_factory=set)

    def passes(self, name: str) -> bool:
        """Whether a client header named ``name`` may reach OpenWebUI (Connection aside)."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            normalised = normalise(name)
            protected = normalised in self.protected
            verdict = not protected and normalised not in _DROPPED
            if len(name) <= _MAX_CACHED_NAME:  # bounded in bytes too, not only in entries
                if len(self._verdicts) >= _MAX_VERDICTS:
                    self._verdicts.clear()
                    self._passing.clear()
                    self._refused_quietly.clear()
                self._verdicts[name] = verdict
                if verdict:
                    self._passing.add(name)
                elif not protected:
                    self._refused_quietly.add(name)
        return verdict

    def __post_init__(self) -> None:
        # Normalised names no client may send: the identity headers and Proxy-Authorization.
        # Computed once: it is consulted for every header of every request.
        names = (self.email_header, self.name_header, self.groups_header, self.role_header)
        protected = frozenset(normalise(h) for h in (*names, "Proxy-Authorization"))
        object.__setattr__(self, "protected", protected)
        keys = (istr(self.email_header), istr(self.name_header), istr(self.groups_header))
        object.__setattr__(self, "_identity_keys", keys)

    def is_trusted(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address) is a front proxy whose X-Forwarded-* we believe."""
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; compare the IPv4 inside.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_proxies)


class Forwarded(NamedTuple):
    """Who the client is, as far as the proxy can tell: the values of X-Forwarded-*.

    A named tuple, not a frozen dataclass: made twice per request (for the auth service
    and for OpenWebUI), and a tuple is built in C."""

    for_: str
    proto: str
    host: str


# A named tuple's own __new__ is a Python function (a frame per request): this is the C
# constructor it calls, given the fields in order.
_made = tuple.__new__

# Connection value -> the normalised names it lists: the same few values ("keep-alive",
# "close", "Upgrade") arrive on request after request. Bounded as the verdicts.
_listed_by: dict[str, frozenset[str]] = {}


def _connection_lists(value: str) -> frozenset[str]:
    """Normalised names one ``Connection`` value lists (compare with ``normalise(name)``)."""
    listed = _listed_by.get(value)
    if listed is None:
        listed = frozenset(normalise(token) for token in value.split(",") if token.strip())
        if len(value) <= _MAX_CACHED_NAME:
            if len(_listed_by) >= _MAX_VERDICTS:
                _listed_by.clear()
            _listed_by[value] = listed
    return listed


def _is_connection(name: str) -> bool:
    return len(name) == 10 and normalise(name) == "connection"


def _closest_entry(request_headers: CIMultiDict[str], name: str) -> str:
    """The last entry of every line of ``name``: the one the closest hop (the trusted front
    proxy) vouches for, whether it replaced the client's value or added its own after it;
    the entries before it are the client's to choose. Empty: none."""
    lines = request_headers.getall(name, ())
    return lines[-1].rpartition(",")[2].strip() if lines else ""


# Trusted front proxies in a row that X-Forwarded-For is read back through (a CDN, a load
# balancer, nginx: a few); the chain itself is the client's to make as long as it likes.
_MAX_HOPS = 16


def _from_believed_client(chain: str, policy: HeaderPolicy) -> str:
    """A trusted peer's ``X-Forwarded-For`` chain from the entry the proxy believes is the
    client on: read from the closest hop back, the first entry that is not a trusted
    proxy's address (every one is: the first). The entries before it are the client's to
    make up, and are left out: OpenWebUI's uvicorn trusts every peer
    (``FORWARDED_ALLOW_IPS='*'``, its default) and takes the *first* entry for the client
    (its MFA rate limit's key, its audit log's ``source_ip``), and so may an auth service.
    Empty entries are dropped. At most :data:`_MAX_HOPS` entries are read back (a chain is
    the client's to lengthen): past that many trusted hops, what is left is relayed whole."""
    items = chain.rsplit(",", _MAX_HOPS)  # the closest hops' entries, and what precedes them
    entries = [entry for item in items if (entry := item.strip())]
    start = len(entries) - 1
    while start > 0 and policy.is_trusted(entries[start]):
        start -= 1
    return ", ".join(entries[start:])


def forwarded_view(
    request_headers: CIMultiDictProxy[str] | CIMultiDict[str] | Iterable[tuple[str, str]],
    *,
    peer: str | None,
    scheme: str,
    host: str,
    policy: HeaderPolicy,
) -> Forwarded:
    """X-Forwarded-For/-Proto/-Host for a request from ``peer``.

    A client's own values are believed only when ``peer`` is a trusted front proxy; then
    ``peer`` is appended to the chain it sent: every ``X-Forwarded-For`` line of it, in
    order (a header sent as several lines is one list, RFC 9110 5.3; front proxies such as
    HAProxy add a line of their own after the client's), from the entry it believes on
    (:func:`_from_believed_client`: what a trusted hop vouches for, never what the client
    wrote before it); its proto and host are the last entry of their lines, for the same
    reason. Otherwise the chain starts at ``peer``. With a public URL configured, proto
    and host are always that URL's.
    """
    peer_text = peer or "unknown"
    if policy.trusted_proxies and policy.is_trusted(peer):
        if not hasattr(request_headers, "getall"):  # not isinstance(...): an ABC check
            request_headers = CIMultiDict(request_headers)
        request_headers = cast("CIMultiDict[str]", request_headers)  # a multidict either way
        lines = request_headers.getall("X-Forwarded-For", ())
        if len(lines) == 1:  # the usual case: one line, no list joined
            chain = lines[0].strip()
        else:
            chain = ", ".join(entry for line in lines if (entry := line.strip()))
        if "," in chain:  # one entry (nginx's $remote_addr, the usual): the client already
            chain = _from_believed_client(chain, policy)
        proto = _closest_entry(request_headers, "X-Forwarded-Proto").lower()
        fwd_host = _closest_entry(request_headers, "X-Forwarded-Host")
        for_ = f"{chain}, {peer_text}" if chain else peer_text
        proto = proto if proto in ("http", "https") else scheme
        host = fwd_host or host
    else:
        for_, proto = peer_text, scheme
    if policy.public is not None:
        proto, host = policy.public
    return _made(Forwarded, (for_, proto, host))  # Forwarded(for_, proto, host), in C


def stripped_names(request_headers: Iterable[tuple[str, str]], policy: HeaderPolicy) -> list[str]:
    """Names (never values) of the protected headers a client sent; for the log."""
    passing, protected = policy._passing, policy.protected
    # A name that passes is not protected: only the few that do not are normalised again.
    # A name known to pass is found in a set here, not through passes(): this runs for
    # every header of every request, and a method call costs more than the lookup.
    stripped = []
    for name, _ in request_headers:
        if name in passing or policy.passes(name):
            continue
        if normalise(name) in protected:
            stripped.append(name)
    return stripped


def identity_headers(identity: Identity, policy: HeaderPolicy) -> list[tuple[str, str]]:
    """The headers that tell OpenWebUI who the user is. Never the role header."""
    email_key, name_key, groups_key = policy._identity_keys  # the names, as multidict keys
    out: list[tuple[str, str]] = [(email_key, identity.email)]
    name = identity.name_header_value()
    if name is not None:
        out.append((name_key, name))
    groups = identity.groups_header_value()
    if groups is not None:
        out.append((groups_key, groups))
    return out


def build_upstream_headers(
    request_headers: Iterable[tuple[str, str]] | Mapping[str, str],
    *,
    peer: str | None,
    scheme: str,
    host: str,
    identity: Identity | None,
    policy: HeaderPolicy,
    request_id: str | None = None,
    forwarded: Forwarded | None = None,
) -> CIMultiDict[str]:
    """The complete header set sent to OpenWebUI for one request.

    ``request_headers`` are the client's (a multidict's ``items()`` keeps duplicates);
    ``peer`` is the TCP peer address, ``scheme``/``host`` what the client used to reach us;
    ``identity`` is verified (None only for API-key pass-through). ``Host`` is the
    public host (after the trusted-proxy rule), as OpenWebUI builds some absolute URLs
    from it. ``forwarded``, when the caller has it already (:func:`forwarded_view` of the
    same request), is used as it is.
    """
    items = list(request_headers.items() if hasattr(request_headers, "items") else request_headers)
    passing = policy._passing
    kept: list[tuple[str, str]] = []
    listed: set[str] = set()
    for item in items:
        name = item[0]
        if name in passing or policy.passes(name):  # the set first, as in stripped_names
            kept.append(item)
        elif _is_connection(name):
            listed.update(_connection_lists(item[1]))
    # Names Connection lists that are dropped anyway need no second look (the usual
    # "Connection: keep-alive" would otherwise have every name normalised again).
    listed.difference_update(_DROPPED)
    if listed:
        kept = [item for item in kept if normalise(item[0]) not in listed]

    if forwarded is None:
        forwarded = forwarded_view(items, peer=peer, scheme=scheme, host=host, policy=policy)
    # Each of these names is proxy-owned, so no header of that name is among the kept
    # ones: appending them is setting them, and the multidict is built once.
    kept += (
        ("Host", forwarded.host),
        ("X-Forwarded-For", forwarded.for_),
        ("X-Forwarded-Proto", forwarded.proto),
        ("X-Forwarded-Host", forwarded.host),
    )
    if request_id is not None:
        kept.append((REQUEST_ID_HEADER, request_id))
    out = CIMultiDict(kept)
    if identity is not None:
        for name, value in identity_headers(identity, policy):
            out[name] = value
    return out


def request_headers_upstream(
    request_headers: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    identity: Identity | None,
    policy: HeaderPolicy,
    request_id: str | None,
    forwarded: Forwarded,
) -> tuple[CIMultiDict[str], list[str]]:
    """:func:`build_upstream_headers` and :func:`stripped_names` of one request's own
    multidict, in one pass over its names: (the header set, the stripped names).

    The same set, in the same order: the request's multidict copied whole (multidict
    clones one of its own kind without keying every name again), then every name that does
    not pass taken out with all its copies and spellings. A multidict's names are its
    distinct names up to ``str.lower`` (multidict 7 iterates each once), and names equal
    up to ``str.lower`` are judged alike (:func:`normalise` lower-cases), so judging the
    names it iterates judges every header. When ``Connection`` lists a name that would
    otherwise pass (rare), :func:`build_upstream_headers` builds the set instead."""
    passing = policy._passing
    refused: list[str] = []
    for name in request_headers:  # a loop, not a comprehension: no function made per call
        if name not in passing and not policy.passes(name):
            refused.append(name)
    if not refused:
        out = CIMultiDict(request_headers)
        stripped: list[str] = []
    else:
        protected, quietly = policy.protected, policy._refused_quietly
        stripped = []
        for name in refused:
            if name not in quietly and normalise(name) in protected:
                # Every copy and spelling, as the table's function names them (a spoof).
                stripped = stripped_names(request_headers.items(), policy)
                break
        listed: set[str] = set()
        for name in refused:
            if _is_connection(name):
                for value in request_headers.getall(name, ()):
                    listed.update(_connection_lists(value))
        listed.difference_update(_DROPPED)
        if listed:
            built = build_upstream_headers(
                request_headers.items(),
                peer=None,
                scheme="",
                host="",
                identity=identity,
                policy=policy,
                request_id=request_id,
                forwarded=forwarded,
            )
            return built, stripped
        out = CIMultiDict(request_headers)
        for name in refused:
            out.popall(name, None)
    # Proxy-owned names, none left among the request's: adding them is setting them.
    out.add(_HOST, forwarded.host)
    out.add(_FORWARDED_FOR, forwarded.for_)
    out.add(_FORWARDED_PROTO, forwarded.proto)
    out.add(_FORWARDED_HOST, forwarded.host)
    if request_id is not None:
        out.add(_REQUEST_ID, request_id)
    if identity is not None:
        for name, value in identity_headers(identity, policy):
            out[name] = value
    return out, stripped


# What a response header's name makes of it: passed on, dropped as hop-by-hop, dropped as
# the Connection header (whose value lists more names to drop), passed on unless the body
# is counted again (Content-Length), or dropped as a CORS grant. OpenWebUI sends the same
# few names on every answer: each is judged once (bounded as the request side's verdicts).
_PASSES, _HOP_BY_HOP, _CONNECTION, _LENGTH, _CROSS_ORIGIN = range(5)
_response_kinds: dict[str, int] = {}
# CORS answers (Access-Control-Allow-Origin, -Credentials, ...) never leave the proxy.
# OpenWebUI 0.12.4's default (CORS_ALLOW_ORIGIN "*" with credentials allowed: Starlette's
# CORSMiddleware) echoes any request's Origin with Allow-Credentials whenever it carries a
# cookie, so a page on another origin whose fetch carries the person's cookies (a sibling
# subdomain is the same site: Lax cookies go along) could read their chats through the
# proxy. Behind owui-gate OpenWebUI is one origin, whose own pages need no CORS, and a
# preflight never passed (it carries no credentials: 401); nothing legitimate is lost.
_CORS_PREFIX = "access-control-"


def _response_kind(name: str) -> int:
    kind = _response_kinds.get(name)
    if kind is None:
        folded = normalise(name)
        if folded in HOP_BY_HOP:
            kind = _CONNECTION if _is_connection(name) else _HOP_BY_HOP
        elif len(name) == 14 and name.lower() == "content-length":
            kind = _LENGTH
        elif folded.startswith(_CORS_PREFIX):
            kind = _CROSS_ORIGIN
        else:
            kind = _PASSES
        if len(name) <= _MAX_CACHED_NAME:
            if len(_response_kinds) >= _MAX_VERDICTS:
                _response_kinds.clear()
            _response_kinds[name] = kind
    return kind


# Connection value -> the names it lists beyond the hop-by-hop ones (dropped anyway): the
# usual "keep-alive" and "close" list none. Bounded as the verdicts.
_listed_beyond: dict[str, frozenset[str]] = {}


def _listed_beyond_hop_by_hop(value: str) -> frozenset[str]:
    listed = _listed_beyond.get(value)
    if listed is None:
        listed = _connection_lists(value) - HOP_BY_HOP
        if len(value) <= _MAX_CACHED_NAME:
            if len(_listed_beyond) >= _MAX_VERDICTS:
                _listed_beyond.clear()
            _listed_beyond[value] = listed
    return listed


def filter_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones (and those its Connection
    lists) and CORS grants (``Access-Control-*``)."""
    return CIMultiDict(response_header_items(upstream_headers))


def response_header_items(
    upstream_headers: Iterable[tuple[str, str]], *, drop_length: bool = False
) -> list[tuple[str, str]]:
    """:func:`filter_response_headers` as the list of pairs aiohttp's response is built from
    (it copies whatever mapping it is given: a multidict built here would be built twice);
    with ``drop_length``, without ``Content-Length`` (the body is sent whole, and aiohttp
    counts it)."""
    kinds = _response_kinds
    kept: list[tuple[str, str]] = []
    listed: frozenset[str] | None = None  # names Connection lists, beyond the hop-by-hop
    for item in upstream_headers:
        kind = kinds.get(item[0])
        if kind is None:
            kind = _response_kind(item[0])
        if not kind or (kind == _LENGTH and not drop_length):  # not kind: it passes
            kept.append(item)
        elif kind == _CONNECTION and (more := _listed_beyond_hop_by_hop(item[1])):
            listed = more if listed is None else listed | more
    if listed:
        kept = [item for item in kept if normalise(item[0]) not in listed]
    return kept
