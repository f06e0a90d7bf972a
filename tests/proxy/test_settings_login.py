"""A login URL that would loop is refused at start, with why and what to do (issue 11).

Behind the shipped nginx every path of the public host reaches the proxy except the auth
prefix (``/oauth2/``), so a login URL elsewhere on that host is answered by the proxy's own
login redirect, forever. The table covers where the login URL may and may not point.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxy.settings import Settings, SettingsError, load_settings, login_loop

PUBLIC = "https://chat.example.edu"
AK = "/outpost.goauthentik.io/"

ROWS = [
    # (id, login_url, auth_path_prefix, loops)
    ("oauth2-proxy start on the chat host", f"{PUBLIC}/oauth2/start", "/oauth2/", False),
    ("the prefix itself", f"{PUBLIC}/oauth2/", "/oauth2/", False),
    ("with a query", f"{PUBLIC}/oauth2/start?provider=kc", "/oauth2/", False),
    ("another host (auth portal)", "https://auth.example.edu/oauth2/start", "/oauth2/", False),
    ("the demo IdP on its own port", "http://127.0.0.1:9100/login", "/oauth2/", False),
    ("a chat subdomain is another host", "https://login.chat.example.edu/", "/oauth2/", False),
    ("authentik outpost prefix", f"{PUBLIC}/outpost.goauthentik.io/start", AK, False),
    ("the looping example: /login on the chat host", f"{PUBLIC}/login", "/oauth2/", True),
    ("the chat root", f"{PUBLIC}/", "/oauth2/", True),
    ("host name in capitals", "https://CHAT.example.edu/login", "/oauth2/", True),
    ("plain http (nginx redirects it to https)", "http://chat.example.edu/login", "/oauth2/", True),
    ("explicit default port", "https://chat.example.edu:443/sso/login", "/oauth2/", True),
    ("same host, another port (a separate server)", f"{PUBLIC}:8443/login", "/oauth2/", False),
    ("prefix without its slash", f"{PUBLIC}/oauth2", "/oauth2/", True),
    ("a look-alike prefix", f"{PUBLIC}/oauth2x/start", "/oauth2/", True),
    ("dot segments out of the prefix", f"{PUBLIC}/oauth2/../login", "/oauth2/", True),
    ("encoded dot segments", f"{PUBLIC}/oauth2/%2e%2e/login", "/oauth2/", True),
    ("another prefix configured", f"{PUBLIC}/oauth2/start", "/sso/", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("login_url", "prefix", "loops"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_login_loop_table(login_url: str, prefix: str, loops: bool) -> None:
    problem = login_loop(login_url, PUBLIC, prefix)
    assert (problem is not None) == loops, problem
    if problem is not None:
        assert prefix in problem
        assert "deploy/nginx" in problem  # says what to do, not only what is wrong


@pytest.fixture
def env(env: Callable[..., None]) -> Callable[..., None]:
    """tests/proxy/conftest.py's ``env``, the chat host as the public URL in its base."""
    return lambda **values: env(**{"OWUI_PROXY_PUBLIC_URL": PUBLIC, **values})


def test_a_looping_login_url_is_refused_at_start(env) -> None:
    """The documented example that looped (login on the chat host) names the setting and fix."""
    env(OWUI_PROXY_LOGIN_URL=f"{PUBLIC}/login")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("OWUI_PROXY_LOGIN_URL: ")
    assert "redirects forever" in problem
    assert f"{PUBLIC}/oauth2/start" in problem


def test_the_prefix_follows_the_setting(env) -> None:
    env(
        OWUI_PROXY_LOGIN_URL=f"{PUBLIC}/outpost.goauthentik.io/start",
        OWUI_PROXY_AUTH_PATH_PREFIX="/outpost.goauthentik.io/",
    )
    settings = load_settings()
    assert settings.auth_path_prefix == "/outpost.goauthentik.io/"
    assert Settings.model_fields["auth_path_prefix"].default == "/oauth2/"


@pytest.mark.parametrize(
    "prefix", ["/", "oauth2/", "/oauth2", "/oauth 2/", "/a/../b/", "//", "/oauth2/*"]
)
def test_bad_prefixes_are_refused(env, prefix: str) -> None:
    env(OWUI_PROXY_AUTH_PATH_PREFIX=prefix)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert any(p.startswith("OWUI_PROXY_AUTH_PATH_PREFIX: ") for p in caught.value.problems)
