"""deploy/kubernetes/base: valid Kubernetes objects, OpenWebUI reachable only through the
proxy by construction, and NetworkPolicies that admit exactly the pods they are meant to.

No cluster can run here, so nothing is applied: validation is offline, against the API
schemas bundled with PyPI's ``kubernetes-validate`` (strict: an unknown field is an error),
and the structure is asserted on the objects. OpenWebUI's isolation does not rest on a
policy: it is a container of the proxy's pod listening on the pod's loopback, with no port
declared and no Service or policy naming it. The policy checks evaluate the manifests the
way the API server does (label selectors with matchLabels and matchExpressions; policies
are additive; a pod selected by no policy with ingress rules is closed by the default deny).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from proxy.settings import Settings
from tests.deploy.edge import REPO

BASE = REPO / "deploy" / "kubernetes" / "base"
MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@functools.cache  # read once: the policy checks evaluate selectors against them many times
def every_object() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in every_object() if doc["kind"] == kind]


@dataclass(frozen=True)
class Pod:
    """A Deployment's pod template: its labels, named container ports and containers."""

    name: str
    labels: dict[str, str]
    ports: dict[str, int]
    containers: dict[str, dict[str, Any]]


@functools.cache
def pods() -> dict[str, Pod]:
    found = {}
    for deployment in of_kind("Deployment"):
        template = deployment["spec"]["template"]
        ports = {
            port["name"]: port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
            if "name" in port
        }
        containers = {c["name"]: c for c in template["spec"]["containers"]}
        name = deployment["metadata"]["name"]
        found[name] = Pod(name, template["metadata"]["labels"], ports, containers)
    return found


def proxy_config() -> dict[str, str]:
    (config,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "owui-proxy"]
    data: dict[str, str] = config["data"]
    return data


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector against a pod's labels; ``{}`` selects every pod."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def admitted(target: Pod, port: int) -> tuple[set[str], list[dict[str, Any]]]:
    """Which of our pods may connect to ``target`` on ``port``, and which peers outside this
    namespace (namespace selectors, IP blocks) may, summed over every policy selecting it."""
    ours: set[str] = set()
    outside: list[dict[str, Any]] = []
    for policy in of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if not selects(spec["podSelector"], target.labels):
            continue
        assert "Ingress" in spec.get("policyTypes", ["Ingress"])
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(
                target.ports.get(p["port"], p["port"]) == port for p in ports
            ):
                continue
            peers = rule.get("from")
            if peers is None:  # no `from`: everyone
                outside.append({"everyone": policy["metadata"]["name"]})
                continue
            for peer in peers:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    outside.append(peer)
                    continue
                ours |= {p.name for p in pods().values() if selects(peer["podSelector"], p.labels)}
    return ours, outside


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    for doc in documents(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            location = "/".join(str(part) for part in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {location}: {exc}")


def test_validation_catches_a_wrong_field() -> None:
    """The control: the same validator refuses a NetworkPolicy with a misspelt field."""
    (policy,) = [
        p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == "owui-gate-listeners"
    ]
    broken = yaml.safe_load(yaml.safe_dump(policy))
    broken["spec"]["ingres"] = broken["spec"].pop("ingress")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert "commonLabels" not in kustomization  # it would rewrite the policies' selectors


def test_every_pod_is_closed_by_default() -> None:
    deny = [
        p
        for p in of_kind("NetworkPolicy")
        if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
    ]
    assert len(deny) == 1
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"]


INGRESS_NS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
}
MONITORING_NS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
}


def test_openwebui_is_a_container_of_the_proxys_pod_on_its_loopback() -> None:
    """The structure that keeps OpenWebUI private without any policy: one pod with the proxy,
    OpenWebUI bound to 127.0.0.1 with no port declared, the proxy's upstream on loopback, and
    no Service or NetworkPolicy that names OpenWebUI's port."""
    pod = pods()["owui-gate"]
    assert set(pod.containers) == {"owui-proxy", "open-webui"}
    owui = pod.containers["open-webui"]
    assert env(owui)["HOST"] == "127.0.0.1"  # the image's default is 0.0.0.0
    assert "ports" not in owui
    port = int(env(owui)["PORT"])
    assert proxy_config()["OWUI_PROXY_UPSTREAM"] == f"http://127.0.0.1:{port}"
    assert env(owui)["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    assert "WEBUI_AUTH_TRUSTED_ROLE_HEADER" not in env(owui)
    for service in of_kind("Service"):
        for exposed in service["spec"]["ports"]:
            assert exposed["port"] != port, service["metadata"]["name"]
            assert pod.ports.get(exposed["targetPort"], exposed["targetPort"]) != port
    for policy in of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            assert all(p["port"] != port for p in rule.get("ports", [])), policy["metadata"]
    # Its probes run inside the container: kubelet cannot reach the pod's loopback.
    for probe in ("startupProbe", "livenessProbe"):
        assert "exec" in owui[probe], probe
        assert f"127.0.0.1:{port}/health" in " ".join(owui[probe]["exec"]["command"])


def test_every_service_exposes_only_the_proxys_receivers_and_auth_services_ports() -> None:
    """Service -> the container port it reaches: never OpenWebUI's."""
    all_pods = pods()
    exposed = {}
    for service in of_kind("Service"):
        (target,) = [
            p
            for p in all_pods.values()
            if selects({"matchLabels": service["spec"]["selector"]}, p.labels)
        ]
        for port in service["spec"]["ports"]:
            exposed[service["metadata"]["name"]] = (target.name, port["targetPort"])
    assert exposed == {
        "owui-proxy": ("owui-gate", "public"),
        "owui-proxy-internal": ("owui-gate", "internal"),
        "owui-provision-webhook": ("owui-provision-webhook", "http"),
        "oauth2-proxy": ("oauth2-proxy", "http"),
    }
    proxy = all_pods["owui-gate"].containers["owui-proxy"]
    assert {p["name"] for p in proxy["ports"]} == {"public", "internal", "admin"}


def test_the_policies_admit_exactly_the_paths_the_deployment_needs() -> None:
    """Ingress -> public listener and /oauth2/; monitoring -> admin; proxy -> receiver (the
    first-sign-in hook); receiver -> internal listener; proxy -> oauth2-proxy (forward-auth).
    Nothing else, on any port."""
    all_pods = pods()
    gate, receiver, auth = (
        all_pods["owui-gate"],
        all_pods["owui-provision-webhook"],
        all_pods["oauth2-proxy"],
    )
    assert admitted(gate, gate.ports["public"]) == (set(), [INGRESS_NS])
    assert admitted(gate, gate.ports["admin"]) == (set(), [MONITORING_NS])
    assert admitted(gate, gate.ports["internal"]) == ({"owui-provision-webhook"}, [])
    assert admitted(receiver, receiver.ports["http"]) == ({"owui-gate"}, [])
    assert admitted(auth, auth.ports["http"]) == ({"owui-gate"}, [INGRESS_NS])
    for pod in all_pods.values():
        for port in (22, 80, 443, 8080, 8443, 9090):
            assert admitted(pod, port) == (set(), []), (pod.name, port)


def test_the_first_sign_in_hook_reaches_the_receiver_with_the_shared_secret() -> None:
    config = proxy_config()
    receiver = pods()["owui-provision-webhook"]
    command = receiver.containers["owui-provision-webhook"]["command"]
    listen_port = int(command[command.index("--listen") + 1].rsplit(":", 1)[1])
    assert listen_port == receiver.ports["http"]
    (service,) = [
        s for s in of_kind("Service") if s["metadata"]["name"] == "owui-provision-webhook"
    ]
    (port,) = service["spec"]["ports"]
    assert config["OWUI_PROXY_SIGNIN_HOOK_URL"] == (
        f"http://{service['metadata']['name']}:{port['port']}/webhooks/signup"
    )
    # Both read the same Secret, mounted at the path each is told.
    gate = pods()["owui-gate"]

    def secret_at(pod: Pod, container: str, path: str) -> str:
        deployment = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == pod.name)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        for mount in pod.containers[container]["volumeMounts"]:
            if path.startswith(mount["mountPath"] + "/"):
                return str(volumes[mount["name"]]["secret"]["secretName"])
        raise AssertionError(f"{path} is not mounted in {pod.name}/{container}")

    secret_file = command[command.index("--secret-file") + 1]
    assert secret_at(receiver, "owui-provision-webhook", secret_file) == secret_at(
        gate, "owui-proxy", config["OWUI_PROXY_SIGNIN_HOOK_SECRET_FILE"]
    )
    # The receiver acts through the internal listener's Service.
    receiver_env = env(receiver.containers["owui-provision-webhook"])
    assert receiver_env["OWUI_PROVISION_URL"] == (
        f"http://owui-proxy-internal:{gate.ports['internal']}"
    )


def test_one_login_place_the_ingress_routes_oauth2_to_the_auth_service() -> None:
    config = proxy_config()
    prefix = Settings.model_fields["auth_path_prefix"].default
    public = urlsplit(config["OWUI_PROXY_PUBLIC_URL"])
    assert config["OWUI_PROXY_LOGIN_URL"] == f"{config['OWUI_PROXY_PUBLIC_URL']}{prefix}start"
    assert config["OWUI_PROXY_FORWARD_AUTH_URL"] == f"http://oauth2-proxy:4180{prefix}auth"
    (ingress,) = of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname
    routes = {
        path["path"]: (path["pathType"], path["backend"]["service"]["name"])
        for path in rule["http"]["paths"]
    }
    assert routes == {prefix: ("Prefix", "oauth2-proxy"), "/": ("Prefix", "owui-proxy")}
    # oauth2-proxy runs the kit's one config file, unchanged.
    (auth_config,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "oauth2-proxy"]
    shipped = (REPO / "deploy" / "oauth2-proxy" / "oauth2-proxy.cfg").read_text(encoding="utf-8")
    assert auth_config["data"]["oauth2-proxy.cfg"] == shipped


def test_every_probe_has_a_three_second_timeout() -> None:
    for pod in pods().values():
        for name, container in pod.containers.items():
            probes = [
                k for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container
            ]
            assert probes, (pod.name, name)
            for probe in probes:
                assert container[probe]["timeoutSeconds"] == 3, (pod.name, name, probe)


def test_the_ports_in_the_config_are_the_ones_the_policy_guards() -> None:
    config = proxy_config()
    gate = pods()["owui-gate"]
    for setting, port in (
        ("OWUI_PROXY_LISTEN", "public"),
        ("OWUI_PROXY_INTERNAL_LISTEN", "internal"),
        ("OWUI_PROXY_ADMIN_LISTEN", "admin"),
    ):
        assert config[setting].rsplit(":", 1)[1] == str(gate.ports[port]), setting


def test_deployments_select_exactly_their_pods() -> None:
    all_pods = pods()
    for deployment in of_kind("Deployment"):
        chosen = {
            p.name for p in all_pods.values() if selects(deployment["spec"]["selector"], p.labels)
        }
        assert chosen == {deployment["metadata"]["name"]}


def test_pods_run_non_root_read_only_with_secrets_not_world_readable() -> None:
    for deployment in of_kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            if container["image"].startswith("ghcr.io/open-webui/"):
                continue  # OpenWebUI's own image decides its user and writes its own files
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] != 0
            assert context["readOnlyRootFilesystem"] is True
            mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
            for volume in spec["volumes"]:
                if "secret" in volume and volume["name"] in mounts:
                    assert volume["secret"]["defaultMode"] in (0o400, 0o440), volume["name"]
                    assert mounts[volume["name"]]["readOnly"] is True
