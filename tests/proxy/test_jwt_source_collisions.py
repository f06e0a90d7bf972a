"""``OWUI_PROXY_JWT_SOURCE`` may not name a place OpenWebUI reads its own credentials from,
nor a header the proxy strips and injects.

Before: ``cookie:token`` (OpenWebUI's session cookie), ``header:x-api-key`` (where OpenWebUI
reads API keys) or ``header:X-User-Email`` loaded; the proxy then took OpenWebUI's own token
for the person's JWT, or read a header it strips, and every request failed with a 401 whose
cause the operator had to find. A typo-like choice is refused at start, naming the setting.
"""

from __future__ import annotations

import pytest

from proxy.settings import SettingsError, load_settings
from tests.proxy.conftest import JWT_BASE


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("cookie:token", "OpenWebUI's own session cookie"),
        ("header:x-api-key", "where OpenWebUI reads API keys"),
        ("header:X_API_KEY", "where OpenWebUI reads API keys"),  # any spelling a server folds
        ("header:X-User-Email", "identity header"),
        ("header:x-user-name", "identity header"),
        ("header:X-User-Groups", "identity header"),
        ("header:X-User-Role", "identity header"),
    ],
)
def test_a_jwt_source_colliding_with_openwebui_s_credentials_is_refused(
    env, source: str, says: str
) -> None:
    env(JWT_BASE, OWUI_PROXY_JWT_SOURCE=source)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    (problem,) = caught.value.problems
    assert problem.startswith("OWUI_PROXY_JWT_SOURCE: ")
    assert says in problem


@pytest.mark.parametrize(
    "source",
    [
        "cookie:CF_Authorization",
        "cookie:Token",
        "header:Cf-Access-Jwt-Assertion",
        "cookie:__session",
    ],
)
def test_the_usual_jwt_sources_load(env, source: str) -> None:
    env(JWT_BASE, OWUI_PROXY_JWT_SOURCE=source)
    assert load_settings(None).jwt_source == source
