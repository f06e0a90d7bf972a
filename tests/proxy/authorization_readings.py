"""Every credential OpenWebUI reads from an ``Authorization`` value is one the proxy carries.

OpenWebUI reads it twice: FastAPI's ``HTTPBearer`` (split at the first space) and its own
split on spaces (exactly two parts). Both readings must be among what ``carried`` found.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi.security.utils import get_authorization_scheme_param


def assert_every_reading_is_carried(value: str, found: Collection[str]) -> None:
    """``value`` as OpenWebUI's server decoded it; ``found``: what the proxy carried."""
    scheme, credential = get_authorization_scheme_param(value)
    if scheme and credential:
        assert credential in found
    parts = value.split(" ")
    if len(parts) == 2 and parts[1]:
        assert parts[1] in found
