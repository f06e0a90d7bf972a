"""Where a login may send the browser back to: only under the configured public URL."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_redirect(rd: str | None, public_url: str) -> str:
    """``rd`` if it points under ``public_url`` (same scheme, host, port and path prefix),
    else ``public_url`` itself. A path (``/chats``) is taken relative to the public origin.

    Anything odd is refused outright rather than interpreted: backslashes, whitespace and
    control characters (browsers "fix" those into other hosts), ``//host`` and userinfo.
    """
    fallback = public_url
    if not rd or any(ch == "\\" or ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in rd):
        return fallback
    base = urlsplit(public_url)
    if rd.startswith("/") and not rd.startswith("//"):
        rd = f"{base.scheme}://{base.netloc}{rd}"
    target = urlsplit(rd)
    if target.scheme.lower() != base.scheme.lower() or target.netloc.lower() != base.netloc.lower():
        return fallback
    prefix = base.path.rstrip("/")
    if prefix and target.path != prefix and not target.path.startswith(prefix + "/"):
        return fallback
    return rd
