"""Operator mistakes that must stop the proxy at start, naming the setting, never load
as a weaker configuration (review round 3b, settings)."""

from __future__ import annotations

import os

import pytest

from proxy.headers import HeaderPolicy
from proxy.settings import SettingsError, load_settings

BASE = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080",
    "OWUI_PROXY_AUTH": "forward",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:4180/oauth2/auth",
}


@pytest.fixture
def env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("OWUI_PROXY_"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def _problems(env, **changes: str) -> str:
    env(**{**BASE, **changes})
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return "\n".join(caught.value.problems)


HEADER_SETTINGS = [
    "OWUI_PROXY_EMAIL_HEADER",
    "OWUI_PROXY_NAME_HEADER",
    "OWUI_PROXY_GROUPS_HEADER",
    "OWUI_PROXY_ROLE_HEADER",
    "OWUI_PROXY_OPENWEBUI_API_KEY_HEADER",
    "OWUI_PROXY_FORWARD_AUTH_EMAIL_HEADER",
]


@pytest.mark.parametrize("setting", HEADER_SETTINGS)
@pytest.mark.parametrize("value", ["'X-Some-Header'", "'X-Some-Header", "X-Some'Header"])
def test_a_quoted_header_name_is_refused(env, setting, value) -> None:
    """A ``'`` is legal in an HTTP token, so a name copied with its .env quotes used to load:
    the proxy then stripped and injected ``'X-User-Email'`` while OpenWebUI read the client's
    own X-User-Email, unstripped (anyone could be anyone)."""
    text = _problems(env, **{setting: value})
    assert setting in text
    assert "quote" in text


def test_the_quoted_email_header_would_let_the_clients_header_through() -> None:
    """Why the above matters: the policy protects the configured spelling only."""
    policy = HeaderPolicy("'X-User-Email'", "X-User-Name", "X-User-Groups", "X-User-Role")
    assert policy.passes("X-User-Email")
