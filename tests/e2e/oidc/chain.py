"""The real OpenID Provider and relying party of the OIDC tier, as processes.

- :class:`OidcProvider`: npm ``oidc-provider`` (installed by ``scripts/lib.sh``) running
  ``provider.mjs`` with one client, a few users (email, name, groups) and signing keys we
  choose, so a restart with other keys is a key rotation by the provider;
- :class:`Apache`: Debian's Apache with ``mod_auth_openidc`` from ``apache.conf``, a private
  foreground instance in the forward-auth role oauth2-proxy plays in production;
- :func:`code_flow_tokens`: the authorization-code flow driven with httpx through the
  provider's own login and consent forms, for tokens the provider really issued.

A missing piece fails the test with what to install, never skips (see tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from demo.openwebui import cache_dir, free_port
from demo.stack import Service, http_ready, spawn

HERE = Path(__file__).resolve().parent
APACHE = Path("/usr/sbin/apache2")
MOD_AUTH_OPENIDC = Path("/usr/lib/apache2/modules/mod_auth_openidc.so")
INSTALL_HINT = "scripts/test installs it (or: . scripts/lib.sh && ensure_oidc_chain)"
CLIENT_ID = "owui-gate"
SCOPE = "openid email profile groups"


@dataclass(frozen=True)
class User:
    email: str
    name: str
    groups: tuple[str, ...]


def _require(ok: bool, what: str) -> None:
    if not ok:
        pytest.fail(f"{what} is missing: {INSTALL_HINT}", pytrace=False)


def provider_home() -> Path:
    """Where ``scripts/lib.sh`` installed oidc-provider: the version pinned for this Node."""
    node = shutil.which("node")
    _require(node is not None, "node")
    assert node is not None
    major = int(
        subprocess.run(
            [node, "-p", "process.versions.node.split('.')[0]"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    pin = "node20" if major >= 20 else "node18"
    package = json.loads((HERE / "npm" / pin / "package.json").read_text(encoding="utf-8"))
    home = cache_dir() / f"oidc-provider-{package['dependencies']['oidc-provider']}"
    _require((home / ".owui-gate-installed").is_file(), f"oidc-provider in {home}")
    return home


def signing_key(kid: str) -> dict[str, Any]:
    """A fresh RSA private key as a JWK, for the provider to sign ID tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key))
    # PyJWT marks a private JWK key_ops ["sign"]; the provider then finds no key to verify
    # its own ID tokens with (id_token_hint at logout), so the marker goes.
    jwk.pop("key_ops", None)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


@dataclass
class OidcProvider:
    """oidc-provider on 127.0.0.1 (plain http: loopback only, like the demo's services)."""

    state: Path
    users: tuple[User, ...]
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    port: int = field(default_factory=free_port)
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    keys: list[dict[str, Any]] = field(default_factory=lambda: [signing_key("key-1")])
    # Set for the session tests: access tokens that live this many seconds, and rotating
    # refresh tokens bound to the provider's session (see provider.mjs).
    access_token_s: int | None = None
    service: Service | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kids(self) -> list[str]:
        return [str(k["kid"]) for k in self.keys]

    def start(self) -> None:
        home = provider_home()
        self.state.mkdir(parents=True, exist_ok=True)
        config = self.state / "provider.json"
        refresh = self.access_token_s is not None
        settings: dict[str, Any] = {
            "issuer": self.issuer,
            "port": self.port,
            "client": {
                "client_id": CLIENT_ID,
                "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
                "post_logout_redirect_uris": self.post_logout_redirect_uris,
                "response_types": ["code"],
                "grant_types": ["authorization_code", *(["refresh_token"] if refresh else [])],
            },
            "users": {u.email: {"name": u.name, "groups": list(u.groups)} for u in self.users},
            "jwks": {"keys": self.keys},
            "cookieKeys": [secrets.token_urlsafe(32)],
        }
        if refresh:
            settings.update(ttl={"AccessToken": self.access_token_s}, refreshTokens=True)
        config.write_text(json.dumps(settings), encoding="utf-8")
        config.chmod(0o600)  # holds the private keys and the client secret
        node = shutil.which("node") or "node"
        self.service = spawn(
            "oidc-provider",
            "the OpenID Provider",
            [node, str(HERE / "provider.mjs"), str(config)],
            env={"OIDC_PROVIDER_HOME": str(home), "PATH": "/usr/bin:/bin"},
            url=self.issuer,
            log_path=self.state / "provider.log",
            ready=http_ready(f"{self.issuer}/.well-known/openid-configuration", want=200),
        )

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def rotate(self, new_kid: str) -> None:
        """Restart publishing (and signing with) only a new key: the old one is withdrawn."""
        self.stop()
        self.keys = [signing_key(new_kid)]
        self.start()

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


@dataclass
class Apache:
    """Apache + mod_auth_openidc answering under /oauth2/ for ``public_url``."""

    provider: OidcProvider
    public_url: str
    logs: Path
    # mod_auth_openidc directives on how sessions are kept; empty: its defaults (server-side).
    session: str = ""
    port: int = field(default_factory=free_port)
    service: Service | None = None
    run_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        _require(APACHE.exists(), "apache2")
        _require(MOD_AUTH_OPENIDC.exists(), "libapache2-mod-auth-openidc")
        # Apache started as root serves from children without root's rights: its files must
        # be reachable by anyone, which pytest's private temporary folders are not.
        self.run_dir = Path(tempfile.mkdtemp(prefix="owui-gate-apache-"))
        self.run_dir.chmod(0o755)
        (self.run_dir / "htdocs").mkdir(mode=0o755)
        (self.run_dir / "htdocs" / "ok.txt").touch(mode=0o644)
        public = urlsplit(self.public_url)
        values = {
            "PORT": str(self.port),
            "SERVER_NAME": public.hostname or "localhost",
            "DIR": str(self.run_dir),
            "ISSUER": self.provider.issuer,
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": self.provider.client_secret,
            "PASSPHRASE": secrets.token_urlsafe(32),
            "PUBLIC_URL": self.public_url,
            "PUBLIC_URL_RE": re.escape(self.public_url),
            "SESSION": self.session or "# (mod_auth_openidc's defaults: server-side sessions)",
        }
        text = (HERE / "apache.conf").read_text(encoding="utf-8")
        conf = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], text)
        path = self.run_dir / "apache.conf"
        path.write_text(conf, encoding="utf-8")
        path.chmod(0o600)  # the client secret and the session passphrase
        self.service = spawn(
            "apache",
            "Apache + mod_auth_openidc, the relying party (forward-auth role)",
            [str(APACHE), "-f", str(path), "-DFOREGROUND"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            url=self.url,
            log_path=self.logs / "apache.log",
            ready=http_ready(f"{self.url}/oauth2/auth", want=401),
        )

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        if self.run_dir is not None:
            for name in ("error.log", "access.log"):
                if (self.run_dir / name).exists():
                    shutil.copy(self.run_dir / name, self.logs / f"apache-{name}")
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


def _form_action(html: str) -> str:
    match = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


def code_flow_tokens(provider: OidcProvider, email: str, redirect_uri: str) -> dict[str, Any]:
    """The provider's tokens for ``email``, by the authorization-code flow like a browser:
    authorization request, the provider's login form, its consent form, then the code
    exchanged at the token endpoint with the client's secret. Nothing is minted here."""
    with httpx.Client(base_url=provider.issuer, timeout=30) as browser:
        response = browser.get(
            "/auth",
            params={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": SCOPE,
                "redirect_uri": redirect_uri,
                "state": secrets.token_urlsafe(16),
                "nonce": secrets.token_urlsafe(16),
            },
        )
        for _ in range(10):  # login form, consent form, then the redirect with the code
            if response.status_code in (302, 303):
                location = urljoin(provider.issuer + "/", response.headers["Location"])
                if location.startswith(redirect_uri):
                    break
                response = browser.get(location)
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            html = response.text
            form = (
                {"prompt": "login", "login": email, "password": "any"}
                if 'name="login"' in html
                else {"prompt": "consent"}
            )
            response = browser.post(urljoin(provider.issuer + "/", _form_action(html)), data=form)
        else:
            raise AssertionError("the authorization flow did not come back with a code")
        code = parse_qs(urlsplit(location).query)["code"][0]
        tokens = httpx.post(
            f"{provider.issuer}/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            auth=(CLIENT_ID, provider.client_secret),
            timeout=30,
        )
        tokens.raise_for_status()
        result: dict[str, Any] = tokens.json()
        return result
