"""Names that are not settings: a misspelt variable is an error, never silence.

A typo (``OWUI_PROXY_ALLOWED_EMAIL_DOMAIN``) or another program's spelling carried over
(oauth2-proxy's ``--email-domain``) would otherwise leave the setting it meant at its
default, and for the access rules the default is "let everyone in". Each unknown name gets
one problem line: a hint written for that spelling, else the closest known name (difflib),
else "a typo?".

Shared by the proxy's and the provisioner's settings (``OWUI_PROXY_*``, ``OWUI_PROVISION_*``):
pure, no I/O, nothing imported beyond the standard library.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hint:
    """What an unknown name most likely meant: ``setting`` (a known name, without prefix),
    and ``note``, where the spelling comes from or why there is no such setting."""

    setting: str | None
    note: str


def unknown(
    name: str,
    known: Iterable[str],
    *,
    prefix: str = "",
    hints: Mapping[str, Hint] | None = None,
) -> str:
    """The problem with ``name`` (with ``prefix``, any case), which names no setting.

    ``known`` are the names without the prefix, in the case the caller shows them
    (``ALLOWED_GROUPS`` for variables, ``allowed_groups`` for TOML keys); ``hints`` are
    keyed by names without the prefix, in any case.
    """
    folded = {n.upper(): n for n in known}
    bare = name[len(prefix) :] if name.upper().startswith(prefix.upper()) else name
    hint = {k.upper(): v for k, v in (hints or {}).items()}.get(bare.upper())
    if hint is not None:
        if hint.setting is None:
            return f"unknown setting ({hint.note})"
        meant = folded.get(hint.setting.upper(), hint.setting)
        return f"unknown setting; did you mean {prefix}{meant}? ({hint.note})"
    close = difflib.get_close_matches(bare.upper(), list(folded), n=1)
    if close:
        return f"unknown setting; did you mean {prefix}{folded[close[0]]}?"
    return "unknown setting (a typo?)"


def unknown_variables(
    environ: Mapping[str, str],
    prefix: str,
    known: Iterable[str],
    hints: Mapping[str, Hint] | None = None,
) -> list[str]:
    """One ``NAME: problem`` line per variable starting with ``prefix`` (any case, as the
    settings read them) that names no setting, sorted by name."""
    fields = [n.upper() for n in known]
    return [
        f"{name}: {unknown(name, fields, prefix=prefix, hints=hints)}"
        for name in sorted(environ)
        if name.upper().startswith(prefix) and name.upper()[len(prefix) :] not in fields
    ]


def unclear_variables(environ: Mapping[str, str], prefix: str) -> list[str]:
    """One line per variable starting with ``prefix`` (any case) that says nothing or says it
    twice, sorted: a value of only blanks (read as "unset", which for the access rules is
    "everyone"), or one setting under two spellings (names are read in any case, and which
    of the two wins is nobody's choice)."""
    spellings: dict[str, list[str]] = {}
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(prefix):
            continue
        spellings.setdefault(name.upper(), []).append(name)
        if not environ[name].strip(" \t\r\n"):
            problems.append(
                f"{name}: set but empty; remove it to use the default, or give it a value"
            )
    for names in spellings.values():
        if len(names) > 1:
            problems.append(
                f"{', '.join(names)}: the same setting set more than once (names are read in "
                "any case); keep one"
            )
    return sorted(problems)


# The project's prefixes and other programs', never read as a misspelling of the one checked
# (a name under the checked one, as written, is read and skipped; spelt otherwise it is checked).
_OTHER_PREFIXES = ("OWUI_PROXY_", "OWUI_PROVISION_", "OWUI_GATE_", "OAUTH2_PROXY_")


def misspelt_prefixes(
    environ: Mapping[str, str], prefix: str, known: Iterable[str], *, cutoff: float = 0.8
) -> list[str]:
    """One line per variable that names a setting under a misspelt ``prefix`` (``OWUI_PORXY_``,
    ``OWUI-PROXY-``, blanks around the name), sorted: only names starting with ``prefix``
    are read, so such a variable was never looked at and its setting kept its default."""
    fields = sorted((n.upper() for n in known), key=len, reverse=True)
    others = tuple(other for other in _OTHER_PREFIXES if other != prefix)
    problems = []
    for name in sorted(environ):
        if name.upper().startswith(prefix):
            continue  # read, or reported by unknown_variables
        folded = name.strip(" \t\r\n").upper().replace("-", "_")
        if folded.startswith(others):
            continue
        for field in fields:
            head = folded[: -len(field)]
            if not folded.endswith(field) or not head:
                continue
            if head == prefix or difflib.SequenceMatcher(None, head, prefix).ratio() >= cutoff:
                problems.append(
                    f"{name!r}: not read (a misspelt prefix?); did you mean {prefix}{field}?"
                )
                break
    return problems
