"""The spoof corpus: what a hostile client sends to be taken for someone else."""

from __future__ import annotations

from tests.deploy.edge import SERVER_NAME

IDENTITY = ("x-user-email", "x-user-name", "x-user-groups", "x-user-role")
# What a hostile client sends: every identity header in several spellings and copies,
# Proxy-Authorization, a Connection header naming the identity header, forged forwarding.
SPOOF_CORPUS = (
    ("X-User-Email", "evil@attacker.example"),
    ("x-user-email", "evil2@attacker.example"),
    ("X_User_Email", "evil3@attacker.example"),
    ("X-USER_email", "evil4@attacker.example"),
    ("X-User-Email", "evil5@attacker.example, alice@example.edu"),
    ("X-User-Name", "Mallory"),
    ("x_user_name", "Mallory"),
    ("X-User-Groups", "admins"),
    ("X_USER_GROUPS", "admins"),
    ("X-User-Role", "admin"),
    ("x-user_role", "admin"),
    ("Proxy-Authorization", "Bearer stolen-service-token-000000000000000000"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "for=6.6.6.6;host=evil.example"),
    ("X-Real-IP", "6.6.6.6"),
)
SPOOF_MARKERS = ("attacker", "Mallory", "admin", "stolen", "6.6.6.6", "evil.example")


def spoof_request(
    path: str, extra: tuple[tuple[str, str], ...] = (), method: str = "GET"
) -> list[str]:
    """Request line and headers: the whole corpus, then ``extra`` (e.g. a session cookie)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {SERVER_NAME}"]
    lines += [f"{k}: {v}" for k, v in (*SPOOF_CORPUS, *extra)]
    # The client asks nginx to drop the identity header as hop-by-hop (and to close).
    lines.append("Connection: X-User-Email, X-User-Name, close")
    return lines
