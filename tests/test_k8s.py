"""deploy/k8s stays deployable: every manifest is valid against the Kubernetes API schemas
bundled with kubernetes-validate (no network, no cluster), the kustomization lists them all, and
each container's command is one the services accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from coordinator_svc import config as coordinator_config
from scheduler_svc import config as scheduler_config
from worker_svc import config as worker_config

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
DEPLOYMENT_DOC = Path(__file__).resolve().parent.parent / "docs" / "DEPLOYMENT.md"
# The oldest Kubernetes release the manifests are written for (gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.29.0"
LOADERS = {
    "skiplock-scheduler": scheduler_config.load,
    "skiplock-coordinator": coordinator_config.load,
    "skiplock-worker": worker_config.load,
}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((f"{path.name}:{doc['kind']}", doc))
    return found


def containers() -> list[dict[str, Any]]:
    return [
        c
        for _, doc in manifests()
        if doc["kind"] in ("Deployment", "StatefulSet")
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_manifest_is_valid_against_the_api_schema(name: str, doc: dict[str, Any]) -> None:
    # strict: a misspelt or misplaced field is an error, not silently ignored.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    _, deployment = next((n, d) for n, d in manifests() if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_all_three_services_are_deployed_with_probes_and_limits() -> None:
    by_command = {c["command"][0]: c for c in containers()}
    assert set(by_command) == set(LOADERS)
    for container in by_command.values():
        assert container["readinessProbe"] and container["livenessProbe"]
        assert container["resources"]["limits"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("container", containers(), ids=lambda c: c["name"])
def test_each_command_is_accepted_by_its_service(container: dict[str, Any]) -> None:
    """The flags parse, with the environment the manifest gives (secrets as placeholders)."""
    env = {
        e["name"]: e.get("value", "placeholder-" + "x" * 32)
        for e in container.get("env", [])
    }
    env["DATABASE_URL"] = env.get("DATABASE_URL", "") and "postgresql://u:p@db:5432/skiplock"
    LOADERS[container["command"][0]](container["command"][1:], env)


def test_every_secret_key_is_documented() -> None:
    keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for c in containers()
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert keys == {"DATABASE_URL", "SKIPLOCK_API_TOKEN", "SKIPLOCK_CLUSTER_TOKEN"}
    doc = DEPLOYMENT_DOC.read_text()
    for key in keys:
        assert key in doc, key
