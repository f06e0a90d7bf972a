"""The settings contract: sources, precedence, and every problem reported at once."""

from __future__ import annotations

import pytest

from proxy.settings import SettingsError, load_settings

BASE = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080/",
    "OWUI_PROXY_AUTH": "forward",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:4180/oauth2/auth",
}


@pytest.fixture
def env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("OWUI_PROXY_"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_defaults_and_normalisation(env) -> None:
    env(**BASE)
    settings = load_settings()
    assert settings.upstream == "http://127.0.0.1:8080"
    assert settings.listen == "127.0.0.1:8000"
    assert settings.admin_listen == "127.0.0.1:9000"
    assert settings.email_header == "X-User-Email"
    assert settings.trusted_proxies == ()
    assert settings.forward_auth_cache_s == 0
    assert settings.allow_api_keys is False


def test_environment_wins_over_toml(env, tmp_path) -> None:
    env(**BASE, OWUI_PROXY_LISTEN="127.0.0.1:8100")
    config = tmp_path / "p.toml"
    config.write_text('listen = "127.0.0.1:8200"\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    settings = load_settings(config)
    assert settings.listen == "127.0.0.1:8100"
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "::1/128"]


PROBLEM_ROWS = [
    ("auth missing", {"OWUI_PROXY_AUTH": None}, ["OWUI_PROXY_AUTH: required"]),
    (
        "forward without url",
        {"OWUI_PROXY_FORWARD_AUTH_URL": None},
        ["OWUI_PROXY_FORWARD_AUTH_URL: required"],
    ),
    (
        "login without public url",
        {"OWUI_PROXY_LOGIN_URL": "https://idp/login"},
        ["OWUI_PROXY_PUBLIC_URL: required"],
    ),
    ("identity headers collide", {"OWUI_PROXY_NAME_HEADER": "x_user_email"}, ["must all differ"]),
    (
        "listeners collide",
        {"OWUI_PROXY_ADMIN_LISTEN": "127.0.0.1:8000"},
        ["each listener needs its own address"],
    ),
    (
        "internal allow reaches account endpoints",
        {
            "OWUI_PROXY_INTERNAL_ALLOW": "POST /api/v1/auths/signin,"
            "POST /api/v1/auths/api_key,GET /oauth/{provider}/login"
        },
        ["OWUI_PROXY_INTERNAL_ALLOW", "/api/v1/auths/api_key", "/oauth/{provider}/login"],
    ),
    ("bad listen", {"OWUI_PROXY_LISTEN": "8000"}, ["OWUI_PROXY_LISTEN"]),
    (
        "a group name OpenWebUI would read as another",
        {"OWUI_PROXY_ALLOWED_GROUPS": "staff\x1f, teachers"},
        ["OWUI_PROXY_ALLOWED_GROUPS", "'staff\\x1f': a group name contains a control character"],
    ),
    (
        "a domain with a Unicode space",
        {"OWUI_PROXY_ALLOWED_EMAIL_DOMAINS": "school.edu\u00a0"},
        ["OWUI_PROXY_ALLOWED_EMAIL_DOMAINS"],
    ),
    ("relative unix socket", {"OWUI_PROXY_LISTEN": "unix:proxy.sock"}, ["absolute path"]),
    ("bad header name", {"OWUI_PROXY_EMAIL_HEADER": "X User"}, ["OWUI_PROXY_EMAIL_HEADER"]),
    ("upstream not http", {"OWUI_PROXY_UPSTREAM": "ftp://x"}, ["OWUI_PROXY_UPSTREAM"]),
    (
        "workers with unix",
        {"OWUI_PROXY_WORKERS": "2", "OWUI_PROXY_LISTEN": "unix:/tmp/p.sock"},
        ["OWUI_PROXY_WORKERS"],
    ),
    (
        "several at once",
        {
            "OWUI_PROXY_UPSTREAM": None,
            "OWUI_PROXY_TRUSTED_PROXIES": "nope",
            "OWUI_PROXY_MAX_BODY_BYTES": "-1",
        },
        ["OWUI_PROXY_UPSTREAM", "OWUI_PROXY_TRUSTED_PROXIES", "OWUI_PROXY_MAX_BODY_BYTES"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [r[1:] for r in PROBLEM_ROWS], ids=[r[0] for r in PROBLEM_ROWS]
)
def test_problems_are_all_reported(env, changes, expected) -> None:
    values = {**BASE, **changes}
    env(**{k: v for k, v in values.items() if v is not None})
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = "\n".join(caught.value.problems)
    for fragment in expected:
        assert fragment in text


def test_list_settings_drop_ascii_blanks_only(env) -> None:
    """Unicode spaces are kept: an allowed group is compared exactly, as the IdP spells it."""
    env(**BASE, OWUI_PROXY_ALLOWED_GROUPS=" staff ,\tstaff\u00a0\r\n teachers")
    assert load_settings().allowed_groups == ("staff", "staff\u00a0", "teachers")
