"""``owui-provision check``: is everything in place? Each problem comes with its fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.client import OpenWebUI
from provisioner.directory import Directory
from provisioner.errors import (
    ListenerRefused,
    ProvisionError,
    PublicListener,
    ServiceTokenRefused,
    Unavailable,
)
from proxy.openwebui_release import (
    SIGNUP_FIX,
    parse_release,
    provisioner_refusal,
    show,
    signup_trap,
    signup_trap_problem,
)


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


async def run_checks(api: OpenWebUI, url: str, stranger: OpenWebUI) -> list[Finding]:
    """Listener reachable with our token and refusing ``stranger`` (the same client with a
    wrong token), OpenWebUI in trusted-header mode, a supported release whose new users can
    sign in, an admin exists."""
    try:
        config = await api.config()
    except Unavailable as exc:
        return [
            Finding(
                False,
                f"internal listener at {url} not reachable: {exc}",
                "start the proxy with OWUI_PROXY_INTERNAL_LISTEN and point "
                "OWUI_PROVISION_URL at it; if the listener answers 502/503, OpenWebUI is down",
            )
        ]
    except PublicListener as exc:
        return [
            Finding(
                False,
                f"{url} is the proxy's public listener, not its internal one (it answered "
                f"{exc.status} '{exc.reason}' to a call carrying the service token; OpenWebUI "
                "was not asked)",
                "point OWUI_PROVISION_URL at the proxy's OWUI_PROXY_INTERNAL_LISTEN address, "
                "not OWUI_PROXY_LISTEN",
            )
        ]
    except ListenerRefused as exc:
        return [Finding(True, f"internal listener at {url} reachable"), Finding(False, str(exc))]
    except ProvisionError as exc:
        return [Finding(False, f"GET /api/config failed: {exc}")]
    findings = [
        Finding(True, f"internal listener at {url} reachable"),
        Finding(True, "service token accepted"),
        await _refuses_a_wrong_token(stranger, url),
    ]
    features = config.get("features")
    if isinstance(features, dict) and features.get("auth_trusted_header") is True:
        findings.append(Finding(True, "OpenWebUI is in trusted-header mode"))
    else:
        findings.append(
            Finding(
                False,
                "OpenWebUI is not in trusted-header mode "
                "(features.auth_trusted_header is not true)",
                "start OpenWebUI with WEBUI_AUTH_TRUSTED_EMAIL_HEADER=X-User-Email (the header "
                "the proxy injects) and WEBUI_AUTH_TRUSTED_NAME_HEADER=X-User-Name",
            )
        )
    findings.extend(_release_findings(config))
    if config.get("onboarding") is True:
        findings.append(
            Finding(
                False,
                "OpenWebUI has no users yet (onboarding): the first account becomes admin",
                "sign in once through the proxy as the intended administrator, "
                "then run check again",
            )
        )
    else:
        findings.append(Finding(True, "an administrator exists (onboarding is over)"))
    return findings


async def _refuses_a_wrong_token(stranger: OpenWebUI, url: str) -> Finding:
    """Only the internal listener refuses a wrong service token: whatever else answers a
    call made with one is not it (most likely OpenWebUI itself, reachable directly)."""
    try:
        await stranger.config()
    except ServiceTokenRefused:
        return Finding(True, "a wrong service token is refused (407)")
    except ProvisionError as exc:
        return Finding(False, f"a call with a wrong service token failed oddly: {exc}")
    return Finding(
        False,
        f"{url} answered a call with a wrong service token: it is not the proxy's internal "
        "listener (OpenWebUI itself?)",
        "point OWUI_PROVISION_URL at the proxy's OWUI_PROXY_INTERNAL_LISTEN address; "
        "OpenWebUI must be reachable only through the proxy",
    )


def _release_findings(config: dict[str, Any]) -> list[Finding]:
    release = parse_release(config.get("version"))
    version = show(release) if release is not None else "of unknown release"
    refusal = provisioner_refusal(config)
    if refusal is not None:
        return [Finding(False, f"OpenWebUI {version} is not supported", refusal)]
    findings = [Finding(True, f"OpenWebUI {version} is a supported release")]
    if signup_trap(config):
        findings.append(Finding(False, signup_trap_problem(version), SIGNUP_FIX))
    return findings


async def lookup_finding(directory: Directory, email: str | None) -> Finding:
    """The lookup account signs in and finds itself in the user directory."""
    if email is None:
        return Finding(
            True,
            "no lookup account set (OWUI_PROVISION_LOOKUP_EMAIL): status, --dry-run and "
            "remove need one; user, bulk and webhook do not",
        )
    try:
        account = await directory.account(email)
    except ProvisionError as exc:
        return Finding(False, f"lookup account {email}: {exc}")
    if account is None:  # signed in, yet not in the directory it reads
        return Finding(False, f"lookup account {email} signed in but is not in the directory")
    return Finding(True, f"lookup account {email} reads the user directory")
