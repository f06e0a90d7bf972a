"""deploy/kubernetes/base: valid Kubernetes objects, and NetworkPolicies that admit exactly
the pods they are meant to.

Validation is offline, against the API schemas bundled with PyPI's ``kubernetes-validate``
(strict: an unknown field is an error). The policy checks evaluate the manifests the way the
API server does (label selectors with matchLabels and matchExpressions; policies are
additive; a pod selected by no policy with ingress rules is closed by the default deny).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.edge import REPO

BASE = REPO / "deploy" / "kubernetes" / "base"
MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def every_object() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in every_object() if doc["kind"] == kind]


@dataclass(frozen=True)
class Pod:
    """A Deployment's pod template: its labels and named container ports."""

    name: str
    labels: dict[str, str]
    ports: dict[str, int]


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
        name = deployment["metadata"]["name"]
        found[name] = Pod(name, template["metadata"]["labels"], ports)
    return found


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
    (policy,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"].startswith("open")]
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


def test_only_the_proxys_pods_reach_openwebui() -> None:
    owui = pods()["open-webui"]
    assert admitted(owui, owui.ports["http"]) == ({"owui-proxy"}, [])
    for port in (22, 80, 443, 9000):
        assert admitted(owui, port) == (set(), []), port


def test_only_the_receivers_pods_reach_the_internal_listener() -> None:
    proxy = pods()["owui-proxy"]
    assert admitted(proxy, proxy.ports["internal"]) == ({"owui-provision-webhook"}, [])
    # The other listeners admit none of our own pods (the receiver uses the internal one).
    ours, outside = admitted(proxy, proxy.ports["public"])
    assert ours == set()
    assert outside == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_the_internal_port_in_the_config_is_the_one_the_policy_guards() -> None:
    (config,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "owui-proxy"]
    proxy = pods()["owui-proxy"]
    for setting, port in (
        ("OWUI_PROXY_LISTEN", "public"),
        ("OWUI_PROXY_INTERNAL_LISTEN", "internal"),
        ("OWUI_PROXY_ADMIN_LISTEN", "admin"),
    ):
        assert config["data"][setting].rsplit(":", 1)[1] == str(proxy.ports[port]), setting


def test_services_and_deployments_select_exactly_their_pods() -> None:
    all_pods = pods()
    expected = {
        "owui-proxy": {"owui-proxy"},
        "owui-proxy-internal": {"owui-proxy"},
        "open-webui": {"open-webui"},
        "owui-provision-webhook": {"owui-provision-webhook"},
    }
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    assert set(services) == set(expected)
    for name, service in services.items():
        chosen = {
            p.name
            for p in all_pods.values()
            if selects({"matchLabels": service["spec"]["selector"]}, p.labels)
        }
        assert chosen == expected[name], name
    for deployment in of_kind("Deployment"):
        chosen = {
            p.name for p in all_pods.values() if selects(deployment["spec"]["selector"], p.labels)
        }
        assert chosen == {deployment["metadata"]["name"]}


def test_owui_gate_pods_run_non_root_read_only_with_secrets_not_world_readable() -> None:
    for deployment in of_kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        if spec["containers"][0]["image"] != "owui-gate":
            continue  # OpenWebUI's own image decides its user
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            for volume in spec["volumes"]:
                if "secret" in volume:
                    assert volume["secret"]["defaultMode"] in (0o400, 0o440), volume["name"]
                    assert mounts[volume["name"]]["readOnly"] is True
