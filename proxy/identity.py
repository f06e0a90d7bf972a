"""The verified identity and its validation: the one gate every identity passes through.

Whatever the source (forward-auth response headers, JWT claims, an internal caller's
act-as header), values are checked here before they can become upstream headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote


class InvalidIdentity(ValueError):
    """An identity value refused by validation; ``reason`` says why (safe to show, never the
    value). Neutral on purpose: each caller maps it to what it means on its path (the
    auth service erred: 502; a token's claims: 401; an internal caller's header: 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Deliberately plain: one @, a dot in the domain, no spaces, quotes, angle brackets or commas.
_EMAIL = re.compile(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$")
_FORBIDDEN = ("\r", "\n", "\x00")
# HTTP's optional whitespace (RFC 9110 5.6.3): the only characters ever trimmed from an
# identity value. Never ``str.strip()`` with no argument: it also removes Unicode spaces
# (U+00A0, U+3000, U+2028, U+0085, ...), so two names the identity provider tells apart
# would become one here.
OWS = " \t"
# C0 and C1 controls (U+0085 NEXT LINE among them): never part of a group name, and
# OpenWebUI strips some of them (``str.strip()``) off what the proxy sends it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_EMAIL = 254
MAX_NAME = 256
# Thousands: Entra and Keycloak users can be in that many (the forward-auth client's header
# limit and the JWT size limit bound what arrives; the decision cache is bounded in bytes).
MAX_GROUPS = 10_000
MAX_GROUP = 256  # characters in one group name
# OpenWebUI's Starlette reads the UTF-8 bytes of the groups header as Latin-1 before it
# strip()s each name: a name's last byte 0x85 or 0xA0 reads as NEL or NO-BREAK SPACE and is
# cut off, so names ending in the two characters that differ only there become one: "X\u00e0"
# (C3 A0) and "X\u00c5" (C3 85) are both its "X\u00c3". Refused, but for U+00A0 (C2 A0),
# whose partner U+0085 is a control refused anyway: no other name reads as it does.
_CUT = (0x85, 0xA0)


@dataclass(frozen=True, slots=True)
class Identity:
    """A user the proxy has verified. ``email`` is lower-case; ``name`` is as given."""

    email: str
    name: str | None = None
    groups: tuple[str, ...] = ()
    # Header values, computed once: a cached identity serves many requests.
    _name_value: str | None = field(init=False, repr=False, compare=False)
    _groups_value: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = None if self.name is None else quote(self.name, safe="")
        object.__setattr__(self, "_name_value", name)
        groups = ",".join(self.groups) if self.groups else None
        object.__setattr__(self, "_groups_value", groups)

    def name_header_value(self) -> str | None:
        """The name percent-encoded: OpenWebUI URL-decodes the trusted name header."""
        return self._name_value

    def groups_header_value(self) -> str | None:
        return self._groups_value


def _reject_control(field: str, value: str) -> None:
    if any(ch in value for ch in _FORBIDDEN):
        raise InvalidIdentity(f"{field} contains CR, LF or NUL")
    if not _is_text(value):
        raise InvalidIdentity(f"{field} is not valid UTF-8 text")


def _is_text(value: str) -> bool:
    """Whether ``value`` is text that UTF-8 can carry exactly.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates (``surrogateescape``)
    and JSON may spell one (``"\\ud800"``); neither is a character, and neither can become a
    header value without guessing (or a ``UnicodeEncodeError``): refused, never repaired.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_email(raw: str | None) -> str:
    """Return the email lower-cased, or raise :class:`InvalidIdentity`."""
    if raw is None or not raw.strip(OWS):
        raise InvalidIdentity("email missing")
    _reject_control("email", raw)
    # Before any case folding: str.lower() maps some non-ASCII letters onto ASCII ones
    # (KELVIN SIGN U+212A becomes "k"), which would let "\u212aate@x" sign in as kate@x.
    # On ASCII text lower() is ASCII's own mapping; other controls fail the pattern.
    if not raw.isascii():
        raise InvalidIdentity("email has non-ASCII characters")
    email = raw.strip(OWS).lower()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise InvalidIdentity("email is not a plausible address")
    return email


def validate_name(raw: str | None) -> str | None:
    if raw is None or not raw.strip(OWS):
        return None
    _reject_control("name", raw)
    name = raw.strip(OWS)
    if len(name) > MAX_NAME:
        raise InvalidIdentity("name too long")
    return name


def check_group(name: object) -> str:
    """``name`` if it is a group name the proxy can pass on exactly; else
    :class:`InvalidIdentity` saying why.

    Group names are compared exactly, as the identity provider spells them: nothing is
    trimmed, folded or normalised here, so ``staff\u00a0`` is not ``staff``. What cannot
    reach OpenWebUI exactly is refused rather than changed: OpenWebUI (0.12.4,
    ``routers/auths.py``) splits the groups header on commas and ``strip()``s each name, so
    a comma, a control character (C0 or C1: U+001F and U+0085 are among what it strips), a
    space or tab at either end, or a last character that reads as another name's (``_CUT``)
    would make it read another name than the one checked here.
    """
    if not isinstance(name, str):
        raise InvalidIdentity("groups must be strings")
    _reject_control("groups", name)
    if "," in name:
        raise InvalidIdentity("a group name contains a comma")
    if _CONTROL.search(name):
        raise InvalidIdentity("a group name contains a control character")
    if name != name.strip(OWS):
        raise InvalidIdentity("a group name starts or ends with a space or tab")
    if not name.isascii() and name[-1] != "\u00a0" and name[-1].encode()[-1] in _CUT:
        raise InvalidIdentity(
            f"the group name {name[:64]!r} ends in a character OpenWebUI cuts off (its last "
            "UTF-8 byte reads as a space there), so it would share an OpenWebUI group with "
            "other names; rename the group in the identity provider"
        )
    if len(name) > MAX_GROUP:
        raise InvalidIdentity("a group name is too long")
    return name


def parse_groups(raw: str | Iterable[str] | None) -> tuple[str, ...]:
    """The groups of an identity: a comma list, or an iterable of names; empty ones dropped.

    In a comma list (a header, a claim given as one string) the spaces and tabs around each
    name are the list's syntax and are dropped, as OpenWebUI reads the header it is sent;
    the names of an iterable (a JSON claim) are taken as they are.
    """
    if raw is None:
        return ()
    if isinstance(raw, str):
        _reject_control("groups", raw)
        items = [item.strip(OWS) for item in raw.split(",")]
    else:
        items = list(raw)
    groups = tuple(check_group(item) for item in items if item != "")
    if len(groups) > MAX_GROUPS:
        raise InvalidIdentity("too many groups")
    return groups


def make_identity(
    email: str | None, name: str | None = None, groups: str | Iterable[str] | None = None
) -> Identity:
    """Validate raw identity values from any source into an :class:`Identity`."""
    return Identity(
        email=validate_email(email), name=validate_name(name), groups=parse_groups(groups)
    )
