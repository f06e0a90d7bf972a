"""The provisioner's settings refuse what the proxy's refuse: a variable set to nothing, one
setting under two spellings of case, and a setting's name under a misspelt prefix (never
read, so the setting silently kept its default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.errors import ConfigError
from provisioner.settings import load_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in list(os.environ):
        if "PROVISION" in name.upper() or "PROXY" in name.upper():
            monkeypatch.delenv(name)
    monkeypatch.setenv("OWUI_PROVISION_URL", "http://127.0.0.1:8001")
    monkeypatch.setenv("OWUI_PROVISION_TOKEN_FILE", str(tmp_path / "token"))
    return monkeypatch


def _problems() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_the_base_loads(env) -> None:
    assert load_settings().concurrency == 4


@pytest.mark.parametrize("value", ["", " ", "\t", "\r"])
def test_a_variable_set_to_nothing_is_refused(env, value) -> None:
    env.setenv("OWUI_PROVISION_CONCURRENCY", value)
    text = _problems()
    assert "OWUI_PROVISION_CONCURRENCY" in text
    assert "empty" in text


def test_one_setting_under_two_spellings_is_refused(env) -> None:
    env.setenv("OWUI_PROVISION_CONCURRENCY", "2")
    env.setenv("owui_provision_concurrency", "8")
    text = _problems()
    assert "more than once" in text


@pytest.mark.parametrize(
    "name",
    ["OWUI_PROVISON_CONCURRENCY", "OWUI-PROVISION-CONCURRENCY", "OWUI_PRVISION_CONCURRENCY"],
)
def test_a_misspelt_prefix_is_refused(env, name) -> None:
    env.setenv(name, "2")
    text = _problems()
    assert name in text
    assert "OWUI_PROVISION_CONCURRENCY" in text


@pytest.mark.parametrize(
    "name", ["OWUI_PROXY_UPSTREAM", "OWUI_PROXY_EMAIL_HEADER", "OWUI_GATE_URL", "HTTP_PROXY"]
)
def test_the_proxys_and_other_programs_variables_are_left_alone(env, name) -> None:
    env.setenv(name, "x")
    load_settings()
