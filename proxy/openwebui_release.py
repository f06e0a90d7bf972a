"""Which OpenWebUI releases owui-gate can stand in front of, and what each one needs: pure.

Read from OpenWebUI's unauthenticated ``GET /api/config`` (``version``, ``features``). The
boundaries below come from running those releases and reading their source (the table and
the reasons are in docs/compatibility.md):

- **0.6.14** added the ``401 User mismatch`` check (the token's user against the trusted
  email header). Before it, a user holding someone else's OpenWebUI token is answered as
  that someone through the proxy, whatever identity the proxy injects: the proxy refuses to
  relay to such a release (it fails open otherwise, and the proxy has no cheap way to tell
  whose a token is on every request).
- **0.6.34** made ``GET /api/v1/chats/list`` list pinned chats (``include_pinned``). Before
  it, a course thread the user un-archived and pinned is invisible to the provisioner, which
  would create a duplicate: the provisioner refuses such a release.
- **0.6.37** URL-decodes the name header; before it, names the proxy percent-encodes (spaces,
  accents) show encoded in the UI: a warning.
- **0.8.0** lets trusted-header sign-in create a user whatever ``ENABLE_SIGNUP`` says. Before
  it, new users get 403 once sign-ups are off, which OpenWebUI does after the first account:
  a warning with the fix (turn sign-ups on; the proxy refuses password sign-up on its public
  listener, so that opens nothing to the world).

An unknown release (no readable ``version``) is treated as unsafe: fail closed.

Whatever the release, the proxy relays only to an OpenWebUI in trusted-header mode: one
whose answer says ``features.auth_trusted_header`` is false (``WEBUI_AUTH_TRUSTED_EMAIL_HEADER``
unset or misspelt in its environment) runs its own password sign-in behind the proxy, and one
whose ``features.auth`` is false (``WEBUI_AUTH=False``) no authentication at all: a typo in
OpenWebUI's environment must stop the proxy, not turn its identity off. (Every OpenWebUI
release the proxy serves sends both fields; an answer without them is judged by its release.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Release = tuple[int, int, int]

MISMATCH_CHECK_FROM: Release = (0, 6, 14)
PINNED_LISTED_FROM: Release = (0, 6, 34)
NAME_DECODED_FROM: Release = (0, 6, 37)
SIGNUP_INDEPENDENT_FROM: Release = (0, 8, 0)

# ASCII digits only: \d and int() also take other scripts' digits. At most nine a part, and
# never the start of a longer number: int() refuses a string of 4,300 digits or more
# (ValueError), and the version is the upstream's answer (no release, refused, instead).
_RELEASE = re.compile(r"^v?(\d{1,9})\.(\d{1,9})\.(\d{1,9})(?!\d)", re.ASCII)

SIGNUP_FIX = (
    "as the OpenWebUI admin, turn on Admin Panel > Settings > General > 'Enable New Sign Ups' "
    "(or POST /api/v1/auths/admin/config with ENABLE_SIGNUP true), keep 'Default User Role' at "
    "user, and keep OpenWebUI reachable only through the proxy: the proxy refuses password "
    "sign-up (/api/v1/auths/signup) on its public listener and the internal listener does not "
    "allow it, so this opens no sign-up to anyone; or upgrade OpenWebUI to 0.8.0 or later"
)


def parse_release(value: object) -> Release | None:
    """``"0.6.13"`` -> ``(0, 6, 13)``; a suffix (``-dev``, ``rc1``) is ignored; else None."""
    if not isinstance(value, str):
        return None
    match = _RELEASE.match(value.strip(" \t"))
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def show(release: Release) -> str:
    return ".".join(str(part) for part in release)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the proxy makes of one ``/api/config`` answer."""

    version: str  # as OpenWebUI reported it, or "unknown"
    refusal: str | None  # why the proxy must not relay to it; None: safe
    warnings: tuple[str, ...] = ()


def signup_trap(config: Mapping[str, Any]) -> bool:
    """New users cannot sign in through the trusted header: a release before 0.8.0 with
    sign-ups off (``features.enable_signup`` false, which OpenWebUI sets after the first
    account)."""
    release = parse_release(config.get("version"))
    if release is None or release >= SIGNUP_INDEPENDENT_FROM:
        return False
    features = config.get("features")
    return not (isinstance(features, dict) and features.get("enable_signup") is True)


def signup_trap_problem(version: str) -> str:
    return (
        f"OpenWebUI {version} refuses the trusted-header sign-in of new users (403) while "
        "sign-ups are off, and they are off after the first account (releases before 0.8.0): "
        "new users cannot sign in and cannot be provisioned"
    )


def assess(config: Mapping[str, Any]) -> Assessment:
    """Refuse a release without the ``User mismatch`` check; warn about the lesser gaps."""
    raw = config.get("version")
    release = parse_release(raw)
    if release is None:
        return Assessment(
            version="unknown",
            refusal=(
                "OpenWebUI's /api/config names no release (version "
                f"{str(raw)[:40]!r}), so the proxy cannot tell whether it checks that a token "
                "belongs to the trusted email; is OWUI_PROXY_UPSTREAM an OpenWebUI?"
            ),
        )
    version = show(release)
    if release < MISMATCH_CHECK_FROM:
        return Assessment(
            version=version,
            refusal=(
                f"OpenWebUI {version} has no 'User mismatch' check (added in "
                f"{show(MISMATCH_CHECK_FROM)}): through the proxy, a user holding another "
                "user's OpenWebUI token would be answered as that user, an admin's included. "
                f"The proxy refuses to relay to it: upgrade OpenWebUI to "
                f"{show(MISMATCH_CHECK_FROM)} or later (see docs/compatibility.md)"
            ),
        )
    mode = trusted_header_refusal(config)
    if mode is not None:
        return Assessment(version=version, refusal=mode)
    warnings: list[str] = []
    if signup_trap(config):
        warnings.append(f"{signup_trap_problem(version)}. Fix: {SIGNUP_FIX}")
    if release < NAME_DECODED_FROM:
        warnings.append(
            f"OpenWebUI {version} does not URL-decode the name header (from "
            f"{show(NAME_DECODED_FROM)} it does): names with spaces or accents show "
            "percent-encoded (Student%20One); upgrade OpenWebUI to fix"
        )
    if release < PINNED_LISTED_FROM:
        warnings.append(
            f"owui-provision refuses OpenWebUI {version}: its chat list leaves out pinned "
            f"chats until {show(PINNED_LISTED_FROM)}, so a pinned course thread would be "
            "created twice"
        )
    return Assessment(version=version, refusal=None, warnings=tuple(warnings))


def trusted_header_refusal(config: Mapping[str, Any]) -> str | None:
    """Why an OpenWebUI that says it is not in trusted-header mode must not be relayed to."""
    features = config.get("features")
    if not isinstance(features, dict):
        return None
    if features.get("auth") is False:
        return (
            "OpenWebUI runs without authentication (its /api/config features.auth is false: "
            "WEBUI_AUTH=False in its environment): every request would be answered as its "
            "single admin, whoever signed in at the proxy. Remove WEBUI_AUTH=False from "
            "OpenWebUI's environment"
        )
    if "auth_trusted_header" in features and features["auth_trusted_header"] is not True:
        return (
            "OpenWebUI is not in trusted-header mode (its /api/config "
            "features.auth_trusted_header is not true): WEBUI_AUTH_TRUSTED_EMAIL_HEADER is "
            "unset, empty or misspelt in its environment, so it would run its own password "
            "sign-in behind the proxy and ignore the identity the proxy injects. Set "
            "WEBUI_AUTH_TRUSTED_EMAIL_HEADER in OpenWebUI's environment to the value of "
            "OWUI_PROXY_EMAIL_HEADER (X-User-Email by default) and restart OpenWebUI"
        )
    return None


def provisioner_refusal(config: Mapping[str, Any]) -> str | None:
    """Why the provisioner must not work against this release; None when it may."""
    release = parse_release(config.get("version"))
    if release is None:
        return "OpenWebUI's /api/config names no release; refusing rather than guessing"
    if release < PINNED_LISTED_FROM:
        return (
            f"OpenWebUI {show(release)} is older than {show(PINNED_LISTED_FROM)}: its chat "
            "list (/api/v1/chats/list) leaves out pinned chats (and before 0.6.11 the archived "
            "list ignores page and query), so a course thread the user un-archived and pinned "
            "would be created twice. Upgrade OpenWebUI to "
            f"{show(PINNED_LISTED_FROM)} or later (see docs/compatibility.md)"
        )
    return None
