"""Operator mistakes that must stop the proxy at start, naming the setting, never load
as a weaker configuration (review round 3b, settings)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.headers import HeaderPolicy
from proxy.settings import SettingsError, load_settings

# env (tests/proxy/conftest.py): no OWUI_PROXY_* from the machine; sets BASE, then values.
from tests.proxy.conftest import SETTINGS_BASE as BASE


def _load_problems(config: Path | None = None) -> str:
    """The problems loading the settings (from the environment, and ``config``) names."""
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    return "\n".join(caught.value.problems)


def _problems(env, **changes: str) -> str:
    env(**{**BASE, **changes})
    return _load_problems()


def _toml(env, tmp_path: Path, text: str) -> Path:
    """The base environment, and a TOML config file holding ``text``."""
    env(**BASE)
    config = tmp_path / "p.toml"
    config.write_text(text)
    return config


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


# --- a value that is there but says nothing, or two values for one setting ---------------

EMPTY_ROWS = [
    # The access rules: an empty value used to load as "no rule", everyone in.
    ("OWUI_PROXY_ALLOWED_GROUPS", ""),
    ("OWUI_PROXY_ALLOWED_GROUPS", " "),
    ("OWUI_PROXY_ALLOWED_GROUPS", ","),
    ("OWUI_PROXY_ALLOWED_GROUPS", " ,\t, "),
    ("OWUI_PROXY_ALLOWED_EMAIL_DOMAINS", ""),
    ("OWUI_PROXY_ALLOWED_EMAIL_DOMAINS", ","),
    # Any other setting: empty is not "the default", it is a value left out by mistake.
    ("OWUI_PROXY_LOG_PSEUDONYM_KEY_FILE", ""),
    ("OWUI_PROXY_SESSION_SECRET_FILE", ""),
    ("OWUI_PROXY_JWT_REQUIRE_EMAIL_VERIFIED", ""),
    ("OWUI_PROXY_INTERNAL_ALLOW", ","),
    ("OWUI_PROXY_TRUSTED_PROXIES", ""),
]


@pytest.mark.parametrize(("setting", "value"), EMPTY_ROWS)
def test_a_setting_set_to_nothing_is_refused(env, setting, value) -> None:
    text = _problems(env, **{setting: value})
    assert setting in text
    assert "empty" in text


def test_the_same_setting_in_two_cases_is_refused(env) -> None:
    """Settings are read in any case; two spellings of one used to load with either value."""
    text = _problems(env, OWUI_PROXY_ALLOWED_GROUPS="staff", owui_proxy_allowed_groups="pupils")
    assert "OWUI_PROXY_ALLOWED_GROUPS" in text
    assert "owui_proxy_allowed_groups" in text
    assert "more than once" in text


def test_a_toml_list_of_nothing_is_refused(env, tmp_path) -> None:
    config = _toml(env, tmp_path, 'allowed_groups = ","\n')
    assert "allowed_groups" in _load_problems(config)


# --- URLs carrying credentials --------------------------------------------------------------

URL_SETTINGS = {
    "OWUI_PROXY_UPSTREAM": "http://{}127.0.0.1:8080",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://{}127.0.0.1:4180/oauth2/auth",
    "OWUI_PROXY_PUBLIC_URL": "https://{}chat.example.edu",
    "OWUI_PROXY_LOGOUT_URL": "https://{}idp.example.edu/logout",
    "OWUI_PROXY_SIGNIN_HOOK_URL": "http://{}127.0.0.1:8090/webhooks/signup",
}


@pytest.mark.parametrize("setting", sorted(URL_SETTINGS))
@pytest.mark.parametrize("userinfo", ["svc:s3cret-pass@", "svc@", ":s3cret-pass@"])
def test_a_url_with_credentials_is_refused(env, setting, userinfo) -> None:
    """The settings are logged at start (the password with them), and the upstream's were
    silently dropped: never loaded, and the error does not repeat the secret."""
    text = _problems(env, **{setting: URL_SETTINGS[setting].format(userinfo)})
    assert setting in text
    assert "credentials" in text
    assert "s3cret-pass" not in text


def test_a_jwks_url_with_credentials_is_refused(env) -> None:
    text = _problems(
        env,
        OWUI_PROXY_AUTH="jwt",
        OWUI_PROXY_JWT_SOURCE="header:X-Jwt",
        OWUI_PROXY_JWT_ISSUER="https://idp",
        OWUI_PROXY_JWT_AUDIENCE="chat",
        OWUI_PROXY_JWT_JWKS_URL="https://svc:s3cret-pass@idp/jwks",
    )
    assert "OWUI_PROXY_JWT_JWKS_URL" in text
    assert "s3cret-pass" not in text


# --- files the proxy trusts, writable by anyone --------------------------------------------


def _pem(tmp_path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "issuer.pem"
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


def _jwt_env(key_file: str) -> dict[str, str]:
    return {
        "OWUI_PROXY_AUTH": "jwt",
        "OWUI_PROXY_JWT_SOURCE": "header:X-Jwt",
        "OWUI_PROXY_JWT_ISSUER": "https://idp",
        "OWUI_PROXY_JWT_AUDIENCE": "chat",
        "OWUI_PROXY_JWT_KEY_FILE": key_file,
    }


def test_a_world_writable_jwt_key_file_is_refused(env, tmp_path) -> None:
    """Whoever may write the issuer's public key puts in their own and signs any identity
    (at the next start)."""
    key_file = _pem(tmp_path)
    env(**{**BASE, **_jwt_env(key_file)})
    os.environ.pop("OWUI_PROXY_FORWARD_AUTH_URL")
    Path(key_file).chmod(0o644)
    assert load_settings().jwt_key_file == Path(key_file)  # public: readable is fine
    Path(key_file).chmod(0o646)
    text = _load_problems()
    assert "OWUI_PROXY_JWT_KEY_FILE" in text
    assert "world-writable" in text


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_world_writable_pages_folder_is_refused(env, tmp_path, what) -> None:
    """The pages are served on the public origin: whoever may write them writes script
    there (at the next start)."""
    folder = tmp_path / "pages"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    page = folder / "openwebui-down.en.html"
    page.write_text("<p>down</p>\n", encoding="utf-8")
    page.chmod(0o644)
    env(**BASE, OWUI_PROXY_PAGES_DIR=str(folder))
    assert load_settings().pages_dir == folder
    (folder if what == "folder" else page).chmod(0o777 if what == "folder" else 0o666)
    text = _load_problems()
    assert "OWUI_PROXY_PAGES_DIR" in text
    assert "world-writable" in text


# --- front proxies trusted more widely than written -------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.0/0", "every address"),  # meant /8: was read as 0.0.0.0/0
        ("10.89.1.2/0", "every address"),
        ("0.0.0.0/0", "every address"),
        ("::/0", "every address"),
        ("10.89.1.2/8", "host bits"),  # meant /32: was read as all of 10.0.0.0/8
        ("192.168.1.10/24", "host bits"),
        ("fd00::5/64", "host bits"),
    ],
)
def test_a_network_wider_than_written_is_refused(env, value, fragment) -> None:
    """X-Forwarded-For/-Proto/-Host of every peer inside are believed, so a network read
    wider than the operator wrote lets clients there say where they come from and, without
    a public URL, which host they asked for (the auth service may choose rules by both)."""
    text = _problems(env, OWUI_PROXY_TRUSTED_PROXIES=f"127.0.0.1/32,{value}")
    assert "OWUI_PROXY_TRUSTED_PROXIES" in text
    assert fragment in text


@pytest.mark.parametrize("value", ["10.0.0.0/8", "10.89.1.2", "10.89.1.2/32", "::1", "fd00::/8"])
def test_a_network_as_written_loads(env, value) -> None:
    env(**BASE, OWUI_PROXY_TRUSTED_PROXIES=value)
    assert load_settings().trusted_proxies


# --- a misspelt prefix: the variable was never looked at -----------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "OWUI_PORXY_ALLOWED_GROUPS",
        "OWUI_PRXY_ALLOWED_GROUPS",
        "OWUIPROXY_ALLOWED_GROUPS",
        "OWUI-PROXY-ALLOWED-GROUPS",
        "OWUI_PROXY-ALLOWED_GROUPS",
        "OWI_PROXY_ALLOWED_EMAIL_DOMAINS",
        "OUWI_PROXY_ALLOWED_EMAIL_DOMAINS",
        "owui_porxy_allowed_groups",
        "WUI_PROXY_ALLOWED_GROUPS",
        " OWUI_PROXY_ALLOWED_GROUPS",
        "OWUI_PROXY_ALLOWED_GROUPS ",
    ],
)
def test_a_misspelt_prefix_is_refused(env, name) -> None:
    """Only names starting with OWUI_PROXY_ were checked, so a typo in the prefix itself left
    the access rules at "everyone", without a word."""
    text = _problems(env, **{name: "staff"})
    assert name in text
    assert "OWUI_PROXY_ALLOWED_" in text


@pytest.mark.parametrize(
    "name",
    [
        "OWUI_PROVISION_EMAIL_HEADER",  # the provisioner's, same suffix
        "OWUI_PROVISION_URL",
        "OAUTH2_PROXY_UPSTREAMS",
        "OAUTH2_PROXY_EMAIL_DOMAINS",
        "OWUI_GATE_PROXY",
        "WEBUI_AUTH_TRUSTED_EMAIL_HEADER",
        "HTTP_PROXY",
        "NO_PROXY",
        "PROXY_LISTEN",
        "LOG_LEVEL",
        "WORKERS",
    ],
)
def test_other_programs_variables_are_left_alone(env, name) -> None:
    env(**BASE, **{name: "x"})
    load_settings()


@pytest.mark.parametrize("key", ["allowed_groups", "allowed_email_domains"])
def test_an_empty_toml_access_rule_is_refused(env, tmp_path, key) -> None:
    """``allowed_groups = []`` reads as a rule and means "no rule", everyone in."""
    config = _toml(env, tmp_path, f"{key} = []\n")
    text = _load_problems(config)
    assert f"OWUI_PROXY_{key.upper()}" in text
    assert "empty" in text


def test_a_world_writable_config_file_is_refused(env, tmp_path) -> None:
    """Whoever may write the TOML file chooses the access rules (at the next start)."""
    config = _toml(env, tmp_path, 'allowed_groups = ["staff"]\n')
    config.chmod(0o644)
    assert load_settings(config).allowed_groups == ("staff",)
    config.chmod(0o666)
    text = _load_problems(config)
    assert str(config) in text
    assert "world-writable" in text


# --- blanks and line ends carried into a value (a CRLF env file, a stray space) ------------

BLANK_VALUES = {
    "OWUI_PROXY_UPSTREAM": "http://127.0.0.1:8080",
    "OWUI_PROXY_FORWARD_AUTH_URL": "http://127.0.0.1:4180/oauth2/auth",
    "OWUI_PROXY_PUBLIC_URL": "https://chat.example.edu",
    "OWUI_PROXY_LOGOUT_URL": "https://chat.example.edu/oauth2/sign_out",
    "OWUI_PROXY_LISTEN": "127.0.0.1:8100",
    "OWUI_PROXY_ADMIN_LISTEN": "127.0.0.1:9100",
    "OWUI_PROXY_INTERNAL_LISTEN": "127.0.0.1:8101",
}


@pytest.mark.parametrize("setting", sorted(BLANK_VALUES))
@pytest.mark.parametrize("form", ["{}\r", "{} ", " {}", "{}\t", "{}\x00"[:-1] + "\x0b"])
def test_a_value_with_blanks_or_line_ends_is_refused(env, setting, form) -> None:
    """Such a value loaded as written: a public URL ending in CR made every WebSocket's
    Origin a mismatch and every login's rd= a URL no auth service accepts; a listener's
    failed only when the proxy tried to bind it."""
    text = _problems(env, **{setting: form.format(BLANK_VALUES[setting])})
    assert setting in text
    assert "blank" in text


@pytest.mark.parametrize(
    "setting",
    [
        "OWUI_PROXY_JWT_ISSUER",
        "OWUI_PROXY_JWT_EMAIL_CLAIM",
        "OWUI_PROXY_JWT_NAME_CLAIM",
        "OWUI_PROXY_JWT_GROUPS_CLAIM",
    ],
)
def test_a_jwt_setting_with_a_line_end_is_refused(env, setting) -> None:
    """An issuer ending in CR matches no token's 'iss': nobody could sign in, and nothing
    said why."""
    values = {
        "OWUI_PROXY_AUTH": "jwt",
        "OWUI_PROXY_JWT_SOURCE": "header:X-Jwt",
        "OWUI_PROXY_JWT_ISSUER": "https://idp",
        "OWUI_PROXY_JWT_AUDIENCE": "chat",
        "OWUI_PROXY_JWT_JWKS_URL": "https://idp/jwks",
        "OWUI_PROXY_JWT_EMAIL_CLAIM": "email",
        "OWUI_PROXY_JWT_NAME_CLAIM": "name",
        "OWUI_PROXY_JWT_GROUPS_CLAIM": "groups",
    }
    values[setting] += "\r"
    env(**{**BASE, **values})
    os.environ.pop("OWUI_PROXY_FORWARD_AUTH_URL")
    text = _load_problems()
    assert setting in text
    assert "blank" in text
