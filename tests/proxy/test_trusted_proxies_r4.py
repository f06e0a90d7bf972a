"""Trusted proxies that together are every address are refused, like ``0.0.0.0/0``.

Before: each network was judged alone, so ``0.0.0.0/1,128.0.0.0/1`` (or four /2s, or
``::/1,8000::/1``) loaded, and every client's X-Forwarded-For/-Proto/-Host was believed:
a client could tell the auth service it came from an address its rules let in.
"""

from __future__ import annotations

import os

import pytest

from proxy.settings import SettingsError, load_settings

BASE = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080",
    "OWUI_PROXY_AUTH": "forward",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:4180/oauth2/auth",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.upper().startswith("OWUI_PROXY_"):
            monkeypatch.delenv(name)

    def set_env(value: str) -> None:
        for name, item in {**BASE, "OWUI_PROXY_TRUSTED_PROXIES": value}.items():
            monkeypatch.setenv(name, item)

    return set_env


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0/1,128.0.0.0/1",
        "10.0.0.0/8,0.0.0.0/2,64.0.0.0/2,128.0.0.0/2,192.0.0.0/2",
        "::/1,8000::/1",
        "127.0.0.1,::/1,8000::/1",
    ],
)
def test_networks_that_together_are_everyone_are_refused(env, value: str) -> None:
    env(value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("OWUI_PROXY_TRUSTED_PROXIES: ")
    assert "every IPv" in problem


@pytest.mark.parametrize(
    "value",
    ["0.0.0.0/1", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", "::/1,10.0.0.0/8", "fd00::/8,::1"],
)
def test_networks_short_of_everyone_load(env, value: str) -> None:
    env(value)
    assert load_settings().trusted_proxies
