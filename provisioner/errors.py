"""The provisioner's exception tree. httpx errors are translated in one place
(:meth:`provisioner.client.Transport.request`); the CLI maps these to exit codes.

    ProvisionError                  message safe to print: never a token or a secret
    ├── BadInput                    exit 2: the operator's input is wrong (course, CSV, email, args)
    │   ├── CourseFileError         a course TOML problem, naming file, line and field
    │   └── ConfigError             a setting or the service token file
    ├── Refused                     OpenWebUI is not in a state where provisioning is safe
    │   ├── Onboarding              no user yet: the first account would become admin
    │   ├── PendingUser             the user's role is pending: chat calls would be refused
    │   ├── AccountCannotSignIn     OpenWebUI holds the account but refuses its trusted sign-in
    │   ├── NotTrustedHeaderMode    WEBUI_AUTH_TRUSTED_EMAIL_HEADER is not set
    │   ├── UnsupportedRelease      an OpenWebUI release whose chat lists would cause duplicates
    │   ├── SignupsOff              before 0.8.0 with sign-ups off: new users get 403
    │   └── LookupAccountUnusable   the lookup account is not an ordinary user
    ├── ListenerRefused             the internal listener said no
    │   ├── ServiceTokenRefused     407: the service token is not accepted
    │   ├── ActAsDenied             403 ``access_denied``: the proxy's access rules refuse the email
    │   ├── PublicListener          401 from the proxy itself: that is the public listener
    │   └── EndpointNotAllowed      403 without OpenWebUI's ``detail``: not in the allowlist
    ├── ApiError                    a 4xx with OpenWebUI's ``detail`` (or the proxy's ``error``)
    ├── Unavailable                 transient failures outlasted the retry budget
    ├── NotConverged                the end state was not reached within the round budget
    └── ListenFailed                the webhook receiver cannot open its --listen address
"""

from __future__ import annotations

import errno
import os
import unicodedata

# Characters a terminal, a log viewer or a spreadsheet acts on rather than shows: C0 and C1
# controls (ESC starts ANSI sequences, CSI is U+009B), format characters (bidi overrides
# and isolates that turn the rest of a line around, zero-width characters), and the line
# and paragraph separators.
_UNSHOWN = frozenset(("Cc", "Cf", "Zl", "Zp"))


def shown(text: str, *, newlines: bool = True) -> str:
    """``text`` with every character of :data:`_UNSHOWN` written as a Python escape
    (``\\x1b``, ``\\u202e``), so it is shown rather than obeyed; line feeds stay line feeds
    unless ``newlines`` is false (a value inside one line of a message)."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if (char == "\n" and newlines) or unicodedata.category(char) not in _UNSHOWN:
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return "".join(out)


class ProvisionError(Exception):
    """Base of every error the provisioner reports. ``str()`` is safe to show: never a
    secret, and no character a terminal would obey (:func:`shown`): messages carry values
    from rosters, course files, webhook payloads and OpenWebUI's answers."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(shown(arg) if isinstance(arg, str) else arg for arg in args))


class BadInput(ProvisionError):
    """Input the operator must fix; the CLI exits 2."""


class CourseFileError(BadInput):
    """One or more problems in a course file, each naming file, line and field."""

    def __init__(self, problems: list[str]) -> None:
        problems = [shown(problem) for problem in problems]
        super().__init__("\n".join(problems))
        self.problems = problems


class ConfigError(BadInput):
    """A setting or the service token file is unusable."""


class Refused(ProvisionError):
    """OpenWebUI's state makes provisioning unsafe; nothing was created."""


class Onboarding(Refused):
    def __init__(self) -> None:
        super().__init__(
            "OpenWebUI has no users yet (/api/config reports onboarding): the first account "
            "created becomes admin, so provisioning would make this user an administrator. "
            "Sign in once as the intended administrator through the proxy, then retry."
        )


class PendingUser(Refused):
    def __init__(self, email: str) -> None:
        super().__init__(
            f"{email} has role 'pending' in OpenWebUI, which refuses chat calls for pending "
            "users. For new accounts set DEFAULT_USER_ROLE=user on OpenWebUI (once saved from "
            "the admin panel, change it there: Settings > General > Default User Role); make "
            "this user a 'user' in Admin Panel > Users; then retry."
        )


class AdminAccount(Refused):
    """Permanent: the internal listener never acts as an admin (``code: admin_account``)."""

    def __init__(self, email: str | None) -> None:
        super().__init__(
            f"{email or 'this user'} is an OpenWebUI admin, and the proxy's internal listener "
            "never acts as admin accounts (so a stolen service token cannot become one): "
            "admins get no course threads. Provision ordinary users only."
        )


class NotTrustedHeaderMode(Refused):
    def __init__(self) -> None:
        super().__init__(
            "OpenWebUI is not in trusted-header mode (/api/config features.auth_trusted_header "
            "is not true): start it with WEBUI_AUTH_TRUSTED_EMAIL_HEADER set to the header the "
            "proxy injects (default X-User-Email)."
        )


class UnsupportedRelease(Refused):
    """The release's chat lists do not show every thread (see docs/compatibility.md)."""


class SignupsOff(Refused):
    def __init__(self, email: str, problem: str, fix: str) -> None:
        super().__init__(f"{email}: {problem}. Fix: {fix}")


class AccountCannotSignIn(Refused):
    """A trusted-header sign-in answered "email or password incorrect": OpenWebUI has a user
    with this email whose credentials record is missing or inactive. OpenWebUI 0.12.4 on
    SQLite can leave such a half-created account when its database is locked by other writes
    (many provisioners at once); no sign-in can use it, so a retry never helps."""

    def __init__(self, email: str) -> None:
        super().__init__(
            f"{email}: OpenWebUI has an account for this email but refuses to sign it in "
            "(its credentials record is missing or deactivated; OpenWebUI on SQLite can leave "
            "such an account behind when writes collide). Fix: as the OpenWebUI admin, "
            "delete this user in Admin Panel > Users (or reactivate it), then run again: "
            "the next sign-in creates the account afresh."
        )


class LookupAccountUnusable(Refused):
    """The lookup account (``OWUI_PROVISION_LOOKUP_EMAIL``) cannot read the user directory."""

    def __init__(self, email: str, role: str) -> None:
        super().__init__(
            f"the lookup account {email} has role '{role}' in OpenWebUI; it must be an "
            "ordinary 'user' to read the user directory (Admin Panel > Users: make it a user; "
            "an admin account cannot be used: the internal listener never acts as admins)"
        )


class ListenerRefused(ProvisionError):
    """The proxy's internal listener refused the request itself."""


class ServiceTokenRefused(ListenerRefused):
    def __init__(self) -> None:
        super().__init__(
            "the service token was refused (407): check that OWUI_PROVISION_TOKEN_FILE holds "
            "a token that is a line of the proxy's OWUI_PROXY_INTERNAL_TOKENS_FILE (the proxy "
            "re-reads that file on SIGHUP)"
        )


class ActAsDenied(ListenerRefused):
    """Permanent: the proxy's access rules refuse this email (``code: access_denied``)."""

    def __init__(self, email: str | None, reason: str) -> None:
        super().__init__(
            f"the proxy refuses to act as {email or 'this user'} ({reason}): its access rule "
            "OWUI_PROXY_ALLOWED_EMAIL_DOMAINS decides who may use OpenWebUI, on the internal "
            "listener as in the browser. Check the address; if this person should use "
            "OpenWebUI, add their domain to OWUI_PROXY_ALLOWED_EMAIL_DOMAINS on the proxy "
            "(OWUI_PROXY_INTERNAL_ALLOW, the endpoint list, plays no part here)"
        )


class PublicListener(ListenerRefused):
    """The provisioner reached the proxy's public listener, not its internal one."""

    def __init__(self, method: str, path: str, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(
            f"OWUI_PROVISION_URL points at the proxy's public listener, not its internal one: "
            f"{method} {path} carrying the service token got the public listener's {status} "
            f"({reason}), which wants a signed-in person (the internal listener answers 407 "
            "to a refused token). Point OWUI_PROVISION_URL at the proxy's "
            "OWUI_PROXY_INTERNAL_LISTEN address, not OWUI_PROXY_LISTEN; OpenWebUI was not "
            "asked anything"
        )


class EndpointNotAllowed(ListenerRefused):
    def __init__(self, method: str, path: str, reason: str) -> None:
        super().__init__(
            f"the internal listener refused {method} {path} (403: {reason}): add it to the "
            "proxy's OWUI_PROXY_INTERNAL_ALLOW, or leave that setting at its default"
        )


class ApiError(ProvisionError):
    """OpenWebUI answered 4xx; ``detail`` is its own explanation."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"OpenWebUI answered {status} to {method} {path}: {detail}")
        self.status = status
        self.detail = detail


class Unavailable(ProvisionError):
    """Transient failures (connection errors, 5xx, 429) lasted through every retry.

    ``retry_after`` is the last answer's ``Retry-After`` in seconds, if it had one: a caller
    that tries again itself (the archive toggle, never retried by the transport) waits it out.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unanswered(Unavailable):
    """A call that may have reached OpenWebUI got no answer (our read timeout, the proxy's
    504), and is not one to send again beside itself: it may still be running there."""


class NotConverged(ProvisionError):
    """The expected end state was not observed within the bounded number of rounds."""


class ListenFailed(ProvisionError):
    """The receiver's address cannot be opened; one line says which and why."""

    def __init__(self, listen: str, exc: OSError) -> None:
        # asyncio's strerror repeats the address at length; the errno's own text suffices.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = (
            ": another process holds it; stop that one or choose another --listen"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        super().__init__(f"--listen {listen}: cannot listen ({reason}){hint}")
