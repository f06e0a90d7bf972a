"""The settings of the identity source not in use are refused, never silently ignored.

Before: ``OWUI_PROXY_AUTH=forward`` with ``OWUI_PROXY_JWT_REQUIRE_EMAIL_VERIFIED=true`` (or
any ``JWT_*``) loaded, and the check the operator believed was made never was; the same for
``AUTH=jwt`` with ``FORWARD_AUTH_*``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.settings import Settings, SettingsError, load_settings
from tests.proxy.conftest import JWT_BASE, SETTINGS_BASE

FORWARD = SETTINGS_BASE
JWT = JWT_BASE


def _problems(config: Path | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    return caught.value.problems


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JWT_REQUIRE_EMAIL_VERIFIED", "true"),
        ("JWT_AUDIENCE", "owui"),
        ("JWT_ISSUER", "https://idp.example"),
        ("JWT_ALGORITHMS", "ES256"),
        ("JWT_SOURCE", "header:X-Jwt"),
        ("JWT_EMAIL_CLAIM", "upn"),
        ("JWT_LEEWAY_S", "0"),
    ],
)
def test_jwt_settings_under_forward_auth_are_refused(env, name: str, value: str) -> None:
    env(FORWARD, **{f"OWUI_PROXY_{name}": value})
    (problem,) = _problems()
    assert problem.startswith(f"OWUI_PROXY_{name}: ")
    assert "OWUI_PROXY_AUTH=forward never reads it" in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FORWARD_AUTH_URL", "http://127.0.0.1:4180/oauth2/auth"),
        ("FORWARD_AUTH_EMAIL_HEADER", "X-Auth-Request-Email"),
        ("FORWARD_AUTH_GROUPS_HEADER", "X-Auth-Request-Groups"),
        ("FORWARD_AUTH_CACHE_S", "0"),
    ],
)
def test_forward_auth_settings_under_jwt_are_refused(env, name: str, value: str) -> None:
    env(JWT, **{f"OWUI_PROXY_{name}": value})
    (problem,) = _problems()
    assert problem.startswith(f"OWUI_PROXY_{name}: ")
    assert "OWUI_PROXY_AUTH=jwt never reads it" in problem


def test_the_toml_file_is_judged_too_and_named(env, tmp_path: Path) -> None:
    env(FORWARD)
    config = tmp_path / "proxy.toml"
    config.write_text("jwt_require_email_verified = true\n")
    (problem,) = _problems(config)
    assert problem.startswith(
        f"OWUI_PROXY_JWT_REQUIRE_EMAIL_VERIFIED (jwt_require_email_verified in {config}): "
    )


def test_each_source_alone_still_loads(env, monkeypatch: pytest.MonkeyPatch) -> None:
    env(FORWARD, OWUI_PROXY_FORWARD_AUTH_CACHE_S="5")
    assert load_settings().auth == "forward"
    for name in (*FORWARD, "OWUI_PROXY_FORWARD_AUTH_CACHE_S"):
        monkeypatch.delenv(name)
    env(JWT, OWUI_PROXY_JWT_REQUIRE_EMAIL_VERIFIED="true")
    assert load_settings().jwt_require_email_verified is True


def test_settings_built_in_code_are_not_judged() -> None:
    settings = Settings(
        upstream="http://127.0.0.1:8080",
        auth="forward",
        forward_auth_url="http://127.0.0.1:4180/oauth2/auth",
        jwt_audience=("a",),
    )
    assert settings.jwt_audience == ("a",)
