"""A typo never switches security off (issue 20, 6).

A misspelt variable (``OWUI_PROXY_ALLOWED_EMAIL_DOMAIN``) left the access rules at their
default, "everyone", and a list written in another syntax (``[year-9, staff]``) became items
no identity can ever carry. Both are refused at start now, every problem in one pass, each
naming its setting, with the likely fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.setting_names import Hint, unknown, unknown_variables
from proxy.settings import OAUTH2_PROXY_SPELLINGS, Settings, SettingsError, load_settings
from tests.proxy.conftest import JWT_BASE, SETTINGS_BASE

REPO = Path(__file__).resolve().parents[2]
BASE = SETTINGS_BASE  # env (tests/proxy/conftest.py) sets it, then the test's values


def _problems(config: Path | None = None) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(config)
    return info.value.problems


UNKNOWN_ROWS = [
    (
        "singular of a list setting",
        "OWUI_PROXY_ALLOWED_EMAIL_DOMAIN",
        "unknown setting; did you mean OWUI_PROXY_ALLOWED_EMAIL_DOMAINS?",
    ),
    (
        "oauth2-proxy's --email-domain",
        "OWUI_PROXY_EMAIL_DOMAINS",
        "unknown setting; did you mean OWUI_PROXY_ALLOWED_EMAIL_DOMAINS? "
        "(oauth2-proxy's --email-domain)",
    ),
    (
        "oauth2-proxy's --allowed-group",
        "OWUI_PROXY_ALLOWED_GROUP",
        "unknown setting; did you mean OWUI_PROXY_ALLOWED_GROUPS? (oauth2-proxy's --allowed-group)",
    ),
    (
        "oauth2-proxy's --trusted-ip has no counterpart",
        "OWUI_PROXY_TRUSTED_IPS",
        "unknown setting (oauth2-proxy's --trusted-ip lets addresses skip authentication; "
        "nothing skips it here. Front proxies whose X-Forwarded-* are believed: "
        "OWUI_PROXY_TRUSTED_PROXIES)",
    ),
    (
        "oauth2-proxy's --skip-auth-route has no counterpart",
        "OWUI_PROXY_SKIP_AUTH_ROUTES",
        "unknown setting (oauth2-proxy's --skip-auth-*; every request is authenticated here "
        "(OpenWebUI API keys without SSO: OWUI_PROXY_ALLOW_API_KEYS))",
    ),
    (
        "lower case, one letter short",
        "owui_proxy_forward_auth_ur",
        "unknown setting; did you mean OWUI_PROXY_FORWARD_AUTH_URL?",
    ),
    ("nothing close", "OWUI_PROXY_COLOUR", "unknown setting (a typo?)"),
]


@pytest.mark.parametrize(
    ("name", "message"), [r[1:] for r in UNKNOWN_ROWS], ids=[r[0] for r in UNKNOWN_ROWS]
)
def test_an_unknown_variable_is_refused_with_the_likely_fix(env, monkeypatch, name, message):
    env()
    monkeypatch.setenv(name, "x")
    assert _problems() == [f"{name}: {message}"]


def test_a_misspelt_access_rule_does_not_let_everyone_in(env) -> None:
    env(OWUI_PROXY_ALLOWED_EMAIL_DOMAIN="school.edu")
    (problem,) = _problems()
    assert problem.startswith("OWUI_PROXY_ALLOWED_EMAIL_DOMAIN: unknown setting")


def test_a_misspelt_toml_key_gets_the_likely_fix_too(env, tmp_path) -> None:
    env()
    config = tmp_path / "proxy.toml"
    config.write_text('allowed_group = ["staff"]\nemail_domains = ["school.edu"]\n')
    assert sorted(_problems(config)) == [
        f"allowed_group in {config}: unknown setting; did you mean allowed_groups? "
        "(oauth2-proxy's --allowed-group)",
        f"email_domains in {config}: unknown setting; did you mean allowed_email_domains? "
        "(oauth2-proxy's --email-domain)",
    ]


NEVER_MATCH_ENV = [
    ("bracketed", "[year-9, staff]", ["'[year-9'", "'staff]'"]),
    ("semicolons", "year-9;staff", ["'year-9;staff'"]),
    ("quoted", '"year-9","staff"', ["'\"year-9\"'", "'\"staff\"'"]),
    ("json", '["year-9", "staff"]', ["'[\"year-9\"'", "'\"staff\"]'"]),
    ("single quotes", "'staff'", ["\"'staff'\""]),
]


@pytest.mark.parametrize(
    ("value", "items"), [r[1:] for r in NEVER_MATCH_ENV], ids=[r[0] for r in NEVER_MATCH_ENV]
)
@pytest.mark.parametrize("setting", ["ALLOWED_GROUPS", "ALLOWED_EMAIL_DOMAINS", "JWT_AUDIENCE"])
def test_a_list_that_can_never_match_is_refused_in_the_environment(
    env, monkeypatch, setting, value, items
) -> None:
    env(JWT_BASE if setting.startswith("JWT_") else SETTINGS_BASE)  # a source's own settings
    monkeypatch.setenv(f"OWUI_PROXY_{setting}", value)
    (problem,) = _problems()
    assert problem.startswith(f"OWUI_PROXY_{setting}: ")
    assert "can never match" in problem
    for item in items:
        assert item in problem
    # Written as a plain list, the same setting loads (names may hold spaces and parentheses).
    plain = ["school.edu", "*.school.edu"] if "DOMAINS" in setting else ["year 9 (2025)", "/a/b"]
    monkeypatch.setenv(f"OWUI_PROXY_{setting}", ", ".join(plain))
    assert getattr(load_settings(), setting.lower()) == tuple(plain)


@pytest.mark.parametrize(
    "toml",
    [
        'allowed_groups = "[year-9, staff]"',
        'allowed_groups = "year-9;staff"',
        'allowed_groups = ["year-9; staff"]',
        "allowed_groups = ['\"staff\"']",
        'allowed_groups = [" staff"]',
        'allowed_groups = ["staff", ""]',
    ],
)
def test_a_list_that_can_never_match_is_refused_in_the_toml_file(env, tmp_path, toml) -> None:
    env()
    config = tmp_path / "proxy.toml"
    config.write_text(toml + "\n")
    (problem,) = _problems(config)
    assert problem.startswith(f"OWUI_PROXY_ALLOWED_GROUPS (allowed_groups in {config}): ")
    assert "can never match" in problem


def test_every_problem_in_one_pass_each_naming_its_setting(env, monkeypatch, tmp_path) -> None:
    env(
        OWUI_PROXY_ALLOWED_EMAIL_DOMAIN="school.edu",
        OWUI_PROXY_ALLOWED_GROUPS="[year-9, staff]",
        OWUI_PROXY_LISTEN="8000",
    )
    config = tmp_path / "proxy.toml"
    config.write_text('colour = "blue"\njwt_audience = ["a;b"]\n')
    problems = _problems(config)
    assert [p.split(":", 1)[0] for p in problems] == [
        "OWUI_PROXY_ALLOWED_EMAIL_DOMAIN",
        "OWUI_PROXY_LISTEN",
        f"OWUI_PROXY_JWT_AUDIENCE (jwt_audience in {config})",
        "OWUI_PROXY_ALLOWED_GROUPS",
        f"colour in {config}",
    ]


def test_the_process_exits_2_naming_the_typo_and_the_fix() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("OWUI_PROXY_")}
    environ.update(BASE, OWUI_PROXY_ALLOWED_GROUP="staff", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OWUI_PROXY_ALLOWED_GROUP: unknown setting; did you mean OWUI_PROXY_ALLOWED_GROUPS?" in (
        result.stderr
    )


def test_every_oauth2_proxy_spelling_names_a_real_setting_and_is_documented() -> None:
    doc = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    for name, hint in OAUTH2_PROXY_SPELLINGS.items():
        assert name.lower() not in Settings.model_fields, name
        assert hint.setting is None or hint.setting.lower() in Settings.model_fields, name
        assert f"`OWUI_PROXY_{name}`" in doc, name


def test_names_are_compared_without_regard_to_case() -> None:
    hints = {"email_domain": Hint("ALLOWED_EMAIL_DOMAINS", "theirs")}
    assert unknown("owui_proxy_Email_Domain", ["ALLOWED_EMAIL_DOMAINS"], prefix="OWUI_PROXY_",
                   hints=hints) == (
        "unknown setting; did you mean OWUI_PROXY_ALLOWED_EMAIL_DOMAINS? (theirs)"
    )  # fmt: skip
    assert (
        unknown_variables({"owui_proxy_listen": "x", "OTHER": "y"}, "OWUI_PROXY_", ["LISTEN"]) == []
    )
