"""The deployment kit: systemd units, environment examples, and that they agree with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.settings import Settings, load_settings, login_loop
from proxy.webhooks import new_secret
from tests.deploy.edge import REPO, SITE_CONF

SYSTEMD = REPO / "deploy" / "systemd"
ENV = REPO / "deploy" / "env"
UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
}
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 = fully locked down, 10 = no protection


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (systemd allows repeats)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


def test_every_expected_unit_is_shipped() -> None:
    assert UNITS == [
        "oauth2-proxy.service",
        "open-webui.service",
        "owui-provision-webhook.service",
        "owui-proxy.service",
    ]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened(unit: str) -> None:
    """Each unit runs unprivileged with the sandboxing listed in docs/deployment.md."""
    found = unit_settings(SYSTEMD / unit)
    for key, value in HARDENING.items():
        assert found.get(key) == [value], (key, found.get(key))
    assert found.get("DynamicUser") == ["yes"] or found.get("User") == ["owui-proxy"]
    assert "root" not in found.get("User", [])


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit and `security` rates it well locked down.

    The install paths (/opt/..., /etc/owui-gate/...) are pointed at files that exist here,
    since verify checks that the programs exist. Where systemd-analyze is not installed, only
    the file's syntax is checked (every line a section, comment, blank or Key=value).
    """
    text = (SYSTEMD / unit).read_text(encoding="utf-8")
    for line in text.splitlines():
        assert not line.strip() or line.startswith(("#", "[")) or re.match(r"^\w+=", line), line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    for name in ("owui-proxy.env", "open-webui.env", "owui-provision.env", "oauth2-proxy.env"):
        (tmp_path / name).touch()
    rendered = (
        text.replace("/opt/owui-gate/venv/bin/", f"{REPO}/.venv/bin/")
        .replace("/opt/open-webui/venv/bin/open-webui", "/bin/true")
        .replace("/usr/local/bin/oauth2-proxy", "/bin/true")
        .replace("/etc/owui-gate/", f"{tmp_path}/")
    )
    path = tmp_path / unit
    path.write_text(rendered, encoding="utf-8")
    verify = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match is not None, security.stdout + security.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, security.stdout


def test_proxy_env_example_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """deploy/env/owui-proxy.env loads as the proxy's settings, without a problem.

    The settings read the files they name at load; files the example names under /etc are
    stood in for by valid ones here (their contents are the operator's)."""
    for key in list(os.environ):
        if key.startswith("OWUI_PROXY_"):
            monkeypatch.delenv(key)
    for key, value in env_file(ENV / "owui-proxy.env").items():
        monkeypatch.setenv(key, value)
    tokens = tmp_path / "internal-tokens"
    tokens.write_text("x" * 48 + "\n", encoding="ascii")
    tokens.chmod(0o600)
    hook = tmp_path / "hook-secret"
    hook.write_text(new_secret() + "\n", encoding="ascii")
    hook.chmod(0o640)
    for setting, stand_in in (
        ("OWUI_PROXY_INTERNAL_TOKENS_FILE", tokens),
        ("OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE", hook),
    ):
        assert os.environ[setting].startswith("/etc/owui-gate/")
        monkeypatch.setenv(setting, str(stand_in))
    settings = load_settings()
    assert settings.auth == "forward"
    assert settings.internal_listen is not None
    assert settings.signin_hook_url is not None


def test_the_pieces_agree() -> None:
    """Addresses, header names and the body limit are the same in every file that names them."""
    proxy = env_file(ENV / "owui-proxy.env")
    owui = env_file(ENV / "open-webui.env")
    provision = env_file(ENV / "owui-provision.env")
    owui_unit = unit_settings(SYSTEMD / "open-webui.service")
    nginx = SITE_CONF.read_text(encoding="utf-8")

    # OpenWebUI listens on loopback where the proxy looks for it, and trusts only the proxy.
    exec_start = owui_unit["ExecStart"][0]
    assert "--host 127.0.0.1 --port 8080" in exec_start
    assert proxy["OWUI_PROXY_UPSTREAM"] == "http://127.0.0.1:8080"
    assert owui["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    # The trusted header names.
    assert owui["WEBUI_AUTH_TRUSTED_EMAIL_HEADER"] == proxy["OWUI_PROXY_EMAIL_HEADER"]
    assert owui["WEBUI_AUTH_TRUSTED_NAME_HEADER"] == proxy["OWUI_PROXY_NAME_HEADER"]
    assert "WEBUI_AUTH_TRUSTED_ROLE_HEADER" not in owui
    assert f'proxy_set_header {proxy["OWUI_PROXY_EMAIL_HEADER"]} "";' in nginx
    # nginx connects from loopback, and that is what the proxy trusts.
    assert proxy["OWUI_PROXY_TRUSTED_PROXIES"] == "127.0.0.1/32"
    assert f"OWUI_PROXY_LISTEN   {proxy['OWUI_PROXY_LISTEN']}" in nginx
    # The provisioner talks to the internal listener.
    assert provision["OWUI_PROVISION_URL"] == f"http://{proxy['OWUI_PROXY_INTERNAL_LISTEN']}"
    # The first-sign-in hook reaches the receiver where it listens, with the one secret.
    receiver = unit_settings(SYSTEMD / "owui-provision-webhook.service")["ExecStart"][0].split()
    listen = receiver[receiver.index("--listen") + 1]
    assert proxy["OWUI_PROXY_SIGNIN_HOOK_URL"] == f"http://{listen}/webhooks/signup"
    secret = receiver[receiver.index("--secret-file") + 1]
    assert proxy["OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE"] == secret
    # oauth2-proxy listens where nginx and the proxy look for it.
    auth = tomllib.loads((REPO / "deploy" / "oauth2-proxy" / "oauth2-proxy.cfg").read_text())
    assert proxy["OWUI_PROXY_FORWARD_AUTH_URL"] == f"http://{auth['http_address']}/oauth2/auth"
    assert (
        f"OWUI_GATE_AUTH          the auth service (oauth2-proxy) {auth['http_address']}" in nginx
    )
    # One body limit: nginx's client_max_body_size (MiB) = the proxy's default and example.
    limit = re.search(r"^\s*client_max_body_size (\d+)m;", nginx, re.M)
    assert limit is not None
    default = Settings.model_fields["max_body_bytes"].default
    assert int(limit.group(1)) * 1024 * 1024 == default == int(proxy["OWUI_PROXY_MAX_BODY_BYTES"])


def test_nginx_routes_the_proxys_auth_prefix() -> None:
    """The prefix nginx sends to the auth service is the one the proxy's login check assumes
    (OWUI_PROXY_AUTH_PATH_PREFIX), and the example login URL is accepted under it."""
    nginx = SITE_CONF.read_text(encoding="utf-8")
    routed = re.findall(r"location \^~ (\S+) \{\s*proxy_pass http://owui_gate_auth;", nginx)
    assert routed == [Settings.model_fields["auth_path_prefix"].default]
    proxy = env_file(ENV / "owui-proxy.env")
    assert (
        login_loop(proxy["OWUI_PROXY_LOGIN_URL"], proxy["OWUI_PROXY_PUBLIC_URL"], routed[0]) is None
    )


# --- deploy/compose/compose.yaml ---------------------------------------------------------------

COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def members(spec: dict[str, Any]) -> dict[str, set[str]]:
    """Network name -> the services attached to it."""
    found: dict[str, set[str]] = {name: set() for name in spec["networks"]}
    for service, body in spec["services"].items():
        for network in body.get("networks", ["default"]):
            found.setdefault(network, set()).add(service)
    return found


def test_compose_openwebui_and_the_receiver_live_in_the_proxys_namespace_on_loopback() -> None:
    """OpenWebUI and the webhook receiver share the proxy's network namespace and listen on
    127.0.0.1; so do the internal and admin listeners. Only the public listener has an
    address on a network, its `edge` one. (tests/deploy/test_compose.py runs the file and
    tries to reach each of them from the host and from other containers.)"""
    spec = compose()
    services = spec["services"]
    proxy = services["owui-proxy"]
    env = proxy["environment"]
    for name in ("open-webui", "owui-provision"):
        body = services[name]
        assert body["network_mode"] == "service:owui-proxy", name
        assert "networks" not in body, name
        assert "ports" not in body, name
        assert "owui-proxy" in body["depends_on"], name
    owui = services["open-webui"]["environment"]
    assert owui["HOST"] == "127.0.0.1"  # the image's default is 0.0.0.0
    assert env["OWUI_PROXY_UPSTREAM"] == f"http://127.0.0.1:{owui['PORT']}"
    assert owui["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    assert env["OWUI_PROXY_INTERNAL_LISTEN"].startswith("127.0.0.1:")
    assert env["OWUI_PROXY_ADMIN_LISTEN"].startswith("127.0.0.1:")
    assert env["OWUI_PROXY_LISTEN"] == f"{proxy['networks']['edge']['ipv4_address']}:8000"
    # The only network member besides nginx and the auth service: the proxy's namespace.
    attached = members(spec)
    assert attached["edge"] == {"nginx", "owui-proxy", "oauth2-proxy"}
    assert spec["networks"]["edge"]["internal"] is True
    assert attached["owui-egress"] == {"owui-proxy", "egress"}
    assert spec["networks"]["owui-egress"]["internal"] is True
    nginx = services["nginx"]["environment"]
    assert nginx["OWUI_GATE_PROXY"] == env["OWUI_PROXY_LISTEN"]
    assert env["OWUI_PROXY_TRUSTED_PROXIES"] == (
        services["nginx"]["networks"]["edge"]["ipv4_address"] + "/32"
    )


def test_compose_wires_provisioning_on_first_sign_in() -> None:
    """The proxy's hook points at the receiver's --listen; both read one secret; the
    receiver acts through the internal listener with its token."""
    services = compose()["services"]
    proxy, receiver = services["owui-proxy"], services["owui-provision"]
    env = proxy["environment"]
    command = receiver["command"]
    listen = command[command.index("--listen") + 1]
    assert env["OWUI_PROXY_SIGNIN_HOOK_URL"] == f"http://{listen}/webhooks/signup"
    secret = command[command.index("--secret-file") + 1]
    assert env["OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE"] == secret == "/run/secrets/hook-secret"
    assert "hook-secret" in proxy["secrets"]
    assert "hook-secret" in receiver["secrets"]
    assert receiver["environment"]["OWUI_PROVISION_URL"] == (
        f"http://{env['OWUI_PROXY_INTERNAL_LISTEN']}"
    )


def test_compose_has_one_login_place_on_the_chat_host() -> None:
    """The login, callback and sign-out pages are /oauth2/ on the chat host (nginx routes
    them to oauth2-proxy, configured by the kit's one oauth2-proxy.cfg); nothing names a
    second host for them."""
    spec = compose()
    env = spec["services"]["owui-proxy"]["environment"]
    prefix = Settings.model_fields["auth_path_prefix"].default
    assert env["OWUI_PROXY_LOGIN_URL"] == f"{env['OWUI_PROXY_PUBLIC_URL']}{prefix}start"
    assert env["OWUI_PROXY_LOGOUT_URL"] == f"{env['OWUI_PROXY_PUBLIC_URL']}{prefix}sign_out"
    assert login_loop(env["OWUI_PROXY_LOGIN_URL"], env["OWUI_PROXY_PUBLIC_URL"], prefix) is None
    auth = spec["services"]["oauth2-proxy"]
    address = auth["networks"]["edge"]["ipv4_address"]
    assert f"--http-address={address}:4180" in auth["command"]
    assert env["OWUI_PROXY_FORWARD_AUTH_URL"] == f"http://{address}:4180{prefix}auth"
    assert spec["services"]["nginx"]["environment"]["OWUI_GATE_AUTH"] == f"{address}:4180"
    assert (
        "../oauth2-proxy/oauth2-proxy.cfg:/etc/oauth2-proxy/oauth2-proxy.cfg:ro"
        in (auth["volumes"])
    )
    assert "auth.example.edu" not in COMPOSE.read_text(encoding="utf-8")


def test_compose_only_nginx_publishes_ports_and_every_probe_has_a_timeout() -> None:
    spec = compose()
    published = {name for name, body in spec["services"].items() if "ports" in body}
    assert published == {"nginx"}
    modes = {body.get("network_mode") for body in spec["services"].values()}
    assert modes == {None, "service:owui-proxy"}  # never the host's network
    for name, body in spec["services"].items():
        if "healthcheck" in body:
            assert body["healthcheck"]["timeout"] == "3s", name
    checked = {name for name, body in spec["services"].items() if "healthcheck" in body}
    assert checked == {"owui-proxy", "open-webui", "owui-provision"}


def test_compose_names_only_defined_things_and_pinned_images() -> None:
    spec = compose()
    for name, body in spec["services"].items():
        for network in body.get("networks", {}):
            assert network in spec["networks"], (name, network)
        for secret in body.get("secrets", []):
            assert secret in spec["secrets"], (name, secret)
        image = body.get("image", "")
        assert ":" in image, (name, image)
        assert not image.endswith(":latest"), (name, image)
        if "build" in body:
            assert body["build"]["dockerfile"] == "deploy/container/Containerfile"
            assert (REPO / body["build"]["dockerfile"]).is_file()


def test_scaleout_nginx_hashes_on_the_header_the_proxy_injects() -> None:
    """deploy/nginx/owui-gate-scaleout.conf keeps a user on one OpenWebUI process by hashing
    the proxy's email header (nginx spells X-User-Email as $http_x_user_email)."""
    conf = (REPO / "deploy" / "nginx" / "owui-gate-scaleout.conf").read_text(encoding="utf-8")
    header = Settings.model_fields["email_header"].default
    variable = "$http_" + header.lower().replace("-", "_")
    assert re.search(rf"^\s*hash {re.escape(variable)} consistent;", conf, re.M)
    # Failover to the next process happens only for connection errors and timeouts.
    assert re.search(r"^\s*proxy_next_upstream error timeout;", conf, re.M)


# --- deploy/oauth2-proxy/oauth2-proxy.cfg ---------------------------------------------------------

AUTH_CFG = REPO / "deploy" / "oauth2-proxy" / "oauth2-proxy.cfg"


def test_oauth2_proxy_config_has_what_the_recipes_require() -> None:
    """oauth2-proxy's own config format is TOML. Its pages under the proxy's auth prefix on the
    chat host, forward-auth answers with the identity headers the proxy reads, reverse-proxy
    mode behind nginx, and a cookie refreshed before the IdP's access token expires."""
    cfg = tomllib.loads(AUTH_CFG.read_text(encoding="utf-8"))
    proxy = env_file(ENV / "owui-proxy.env")
    prefix = Settings.model_fields["auth_path_prefix"].default
    public = proxy["OWUI_PROXY_PUBLIC_URL"]
    assert cfg["proxy_prefix"] + "/" == prefix
    assert cfg["redirect_url"] == f"{public}{prefix}callback"
    assert cfg["whitelist_domains"] == [public.removeprefix("https://")]
    assert cfg["reverse_proxy"] is True
    assert cfg["set_xauthrequest"] is True
    assert cfg["upstreams"] == ["static://202"]
    assert Settings.model_fields["forward_auth_email_header"].default == "X-Auth-Request-Email"
    # Keycloak's default access-token lifetime is 5 minutes (docs/identity.md).
    minutes = int(cfg["cookie_refresh"].removesuffix("m"))
    assert 0 < minutes < 5
    assert cfg["cookie_secure"] is True
    assert cfg["cookie_httponly"] is True
    # Secrets come from the environment, never this file.
    assert not {"client_secret", "cookie_secret"} & set(cfg)


def test_the_auth_service_image_is_new_enough_for_every_provider_the_docs_name() -> None:
    """oauth2-proxy's entra-id provider arrived in 7.8.0; compose and Kubernetes pin one
    release."""
    pins = set(
        re.findall(
            r"quay\.io/oauth2-proxy/oauth2-proxy:v(\d+)\.(\d+)\.(\d+)",
            "".join(
                p.read_text(encoding="utf-8")
                for p in (COMPOSE, REPO / "deploy" / "kubernetes" / "base" / "oauth2-proxy.yaml")
            ),
        )
    )
    assert len(pins) == 1
    (version,) = pins
    assert tuple(map(int, version)) >= (7, 8, 0)


# --- every shipped file, each class of mistake checked over all of them -------------------

DEPLOY = REPO / "deploy"
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|(^|_)KEY)$", re.IGNORECASE)


def shipped_variables() -> list[tuple[str, str, str]]:
    """``(file, name, value)`` of every variable a shipped file sets: the env examples, the
    compose services' environment and the Kubernetes ConfigMaps and container env."""
    found: list[tuple[str, str, str]] = []
    for path in sorted((DEPLOY / "env").glob("*.env")):
        found += [(path.name, k, v) for k, v in env_file(path).items()]
    for name, service in yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        found += [(f"compose {name}", k, str(v)) for k, v in environment.items()]
    for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            if doc.get("kind") == "ConfigMap":
                found += [(path.name, k, str(v)) for k, v in (doc.get("data") or {}).items()]
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                found += [
                    (path.name, e["name"], str(e["value"]))
                    for e in container.get("env", [])
                    if "value" in e
                ]
    return found


def test_no_shipped_file_sets_a_secret() -> None:
    """A placeholder secret in an example (WEBUI_SECRET_KEY=change-me-...) works: an operator
    who misses the edit runs with a key everyone can read, and OpenWebUI signs its session
    tokens with it. Left empty, OpenWebUI refuses to start ("WEBUI_SECRET_KEY is not set").
    A path to a secret (…_FILE, a TLS key) is fine."""
    found = shipped_variables()
    assert any(name == "WEBUI_SECRET_KEY" for _, name, _ in found)  # the scan sees the files
    set_secrets = [
        f"{where}: {name}"
        for where, name, value in found
        if _SECRET_NAME.search(name) and value and not value.startswith("/")
    ]
    assert set_secrets == []


_SETTING_NAME = re.compile(r"\b(OWUI_PRO(?:XY|VISION)_[A-Z0-9_]*[A-Z0-9])\b(?![_*])")


def test_every_setting_a_shipped_file_names_exists() -> None:
    """A misspelt variable in a shipped file is the operator's typo, made for them: every
    OWUI_PROXY_* and OWUI_PROVISION_* name in every file under deploy/ (set or mentioned) is
    a setting."""
    from provisioner.settings import Settings as ProvisionSettings

    known = {f"OWUI_PROXY_{n.upper()}" for n in Settings.model_fields} | {
        f"OWUI_PROVISION_{n.upper()}" for n in ProvisionSettings.model_fields
    }
    files = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and p.suffix != ".lock"]
    named = {
        (str(p.relative_to(DEPLOY)), m)
        for p in files
        for m in _SETTING_NAME.findall(p.read_text(encoding="utf-8", errors="replace"))
    }
    assert len(named) > 20  # the scan sees the files
    assert sorted(item for item in named if item[1] not in known) == []


def topologies() -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """``(name, proxy settings, OpenWebUI environment)`` of every shipped topology."""
    found = [("systemd", env_file(ENV / "owui-proxy.env"), env_file(ENV / "open-webui.env"))]
    services = compose()["services"]
    found.append(
        (
            "compose",
            {k: str(v) for k, v in services["owui-proxy"]["environment"].items()},
            {k: str(v) for k, v in services["open-webui"]["environment"].items()},
        )
    )
    k8s = REPO / "deploy" / "kubernetes" / "base" / "owui-proxy.yaml"
    docs = [d for d in yaml.safe_load_all(k8s.read_text(encoding="utf-8")) if d]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (owui,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "open-webui"
    ]
    owui_env = {e["name"]: str(e["value"]) for e in owui.get("env", []) if "value" in e}
    found.append(("kubernetes", {k: str(v) for k, v in config["data"].items()}, owui_env))
    return found


@pytest.mark.parametrize(("name", "proxy", "owui"), topologies(), ids=[t[0] for t in topologies()])
def test_openwebui_trusts_exactly_the_headers_the_proxy_owns(name, proxy, owui) -> None:
    """Every header OpenWebUI believes (WEBUI_AUTH_TRUSTED_*_HEADER) is one the proxy strips
    from clients and sets itself: a name that differs (X-Groups here, X-User-Groups there)
    is one the proxy passes through from any client. The role header is never trusted."""
    for kind in ("EMAIL", "NAME", "GROUPS"):
        trusted = owui.get(f"WEBUI_AUTH_TRUSTED_{kind}_HEADER")
        if trusted is None:
            assert kind != "EMAIL", name  # trusted-header mode is the point
            continue
        setting = f"{kind.lower()}_header"
        ours = proxy.get(f"OWUI_PROXY_{setting.upper()}", Settings.model_fields[setting].default)
        assert trusted.lower() == ours.lower(), (name, kind)
    assert "WEBUI_AUTH_TRUSTED_ROLE_HEADER" not in owui, name
    assert owui.get("FORWARDED_ALLOW_IPS") == "127.0.0.1", name
    # Where OpenWebUI reads API keys (its default: x-api-key) is where the proxy checks that
    # a key is the person's own.
    api_key = proxy.get(
        "OWUI_PROXY_OPENWEBUI_API_KEY_HEADER",
        Settings.model_fields["openwebui_api_key_header"].default,
    )
    assert owui.get("CUSTOM_API_KEY_HEADER", "x-api-key").lower() == api_key.lower(), name
