"""``nmisim migrate`` against the real cluster: the plan for a namespace's workloads, ``--emit`` applied with
the emitted ``apply.sh`` (kubectl: ServiceAccounts, patches, replace --force of a bare pod, the
SimulationConfig record of the federated credentials), then ``--verify`` on what the API server now holds
classes every migrated pod ``same-identity`` and the rest as predicted (docs/migration.md).

The cluster's ``SimulationConfig/default`` is shared with the operator's tests: its spec is restored after.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_explain_live import crds, nmisim  # noqa: F401 (fixture)
from tests.support import Cluster, eventually

pytestmark = pytest.mark.cluster

ISSUER = "https://eastus.oic.prod-aks.azure.com/11111111-1111-1111-1111-111111111111/33333333-3333-3333-3333-333333333333/"
CLIENT_ID = "00000000-0000-0000-0000-0000000000d1"
RESOURCE_ID = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/demo/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/migrate-live"
)


@pytest.fixture
def simulation_config(cluster: Cluster, crds: None) -> Iterator[None]:  # noqa: F811
    """SimulationConfig/default with the cluster's issuer, restored afterwards."""
    before = cluster.kubectl("get", "simulationconfig", "default", "-o", "json", check=False)
    patch = {"spec": {"workloadIdentity": {"issuer": ISSUER, "federatedCredentials": []}}}
    if before.returncode == 0:
        cluster.kubectl("patch", "simulationconfig", "default", "--type", "merge", "-p", json.dumps(patch))
    else:
        doc = {
            "apiVersion": "nmisim.dev/v1alpha1",
            "kind": "SimulationConfig",
            "metadata": {"name": "default"},
            **patch,
        }
        cluster.apply(yaml.safe_dump(doc))
    got = cluster.get_json("simulationconfig", "default")
    assert got["spec"]["workloadIdentity"]["issuer"] == ISSUER  # the CRD's schema keeps the section
    try:
        yield
    finally:
        if before.returncode == 0:
            old = json.loads(before.stdout)
            body = {"spec": old.get("spec") or {}}
            cluster.kubectl(
                "patch",
                "simulationconfig",
                "default",
                "--type",
                "json",
                "-p",
                json.dumps([{"op": "replace", "path": "/spec", "value": body["spec"]}]),
            )
        else:
            cluster.kubectl("delete", "simulationconfig", "default", "--ignore-not-found")


def _workloads(namespace: str) -> list[dict[str, Any]]:
    selector = f"mig-{namespace}"[:63]
    container = {"name": "app", "image": "mcr.microsoft.com/demo/app:1"}
    return [
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentity",
            "metadata": {"name": "app-identity"},
            "spec": {"type": 0, "clientID": CLIENT_ID, "resourceID": RESOURCE_ID},
        },
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding",
            "metadata": {"name": "app-binding"},
            "spec": {"azureIdentity": "app-identity", "selector": selector},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "web", "aadpodidbinding": selector},
                        "annotations": {"nmisim.dev/sdk": "python-azure-identity==1.15.0"},
                    },
                    "spec": {"containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tool", "labels": {"aadpodidbinding": selector}},
            "spec": {"containers": [container]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "agent", "labels": {"k8s-app": "agent"}},
            "spec": {"hostNetwork": True, "containers": [container]},
        },
    ]


def _running(cluster: Cluster, namespace: str, n: int, label: str = "") -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = cluster.get_json(
            "pods", "-n", namespace, *(["-l", label] if label else [])
        )["items"]
        ok = [
            p
            for p in items
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        return ok if len(ok) == n and len(items) == n else []

    pods: list[dict[str, Any]] = eventually(ready, timeout=120, what=f"{n} Running pods in {namespace}")
    return pods


def test_migrate_emit_apply_verify(
    cluster: Cluster, namespace: str, simulation_config: None, tmp_path: Path
) -> None:
    if not cluster.local:
        pytest.skip("needs kwok's fake nodes: the pods' images do not exist, a real kubelet never runs them")
    cluster.apply(yaml.safe_dump_all(_workloads(namespace)), namespace)
    _running(cluster, namespace, 4)

    planned_run = nmisim(cluster, "migrate", "--cluster", "-n", namespace, "-o", "json")
    assert planned_run.returncode == 0, planned_run.stderr
    planned = json.loads(planned_run.stdout)
    by_workload = {p["workload"]: p for p in planned["pods"]}
    assert by_workload[f"Deployment/{namespace}/web"]["class"]["removed"] == "same-identity"
    assert by_workload[f"Pod/{namespace}/tool"]["class"]["removed"] == "same-identity"  # SDK unknown: assumed
    assert by_workload[f"Pod/{namespace}/agent"]["class"]["removed"] == "unaffected"
    before = nmisim(cluster, "migrate", "--cluster", "-n", namespace, "--verify", "-o", "json")
    assert {
        p["class"]["removed"] for p in json.loads(before.stdout)["pods"] if p["before"]["identities"]
    } == {"loses-access"}

    emit = tmp_path / "emit"
    run = nmisim(cluster, "migrate", "--cluster", "-n", namespace, "--emit", str(emit))
    assert run.returncode == 0, run.stderr
    applied = subprocess.run(
        ["sh", str(emit / "apply.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": f"{Path(cluster.kubectl_bin).parent}:/usr/bin:/bin",
            "KUBECONFIG": str(cluster.kubeconfig),
        },
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # the Deployment rolls out new pods (label, ServiceAccount); the bare pod was recreated
    pods = _running(cluster, namespace, 4)
    for p in pods:
        if p["metadata"]["name"] != "agent":
            assert p["metadata"]["labels"].get("azure.workload.identity/use") == "true", p["metadata"]["name"]
            assert p["spec"]["serviceAccountName"] in ("web", "tool")
    sa = cluster.get_json("serviceaccount", "web", "-n", namespace)
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == CLIENT_ID
    record = cluster.get_json("simulationconfig", "default")["spec"]["workloadIdentity"][
        "federatedCredentials"
    ]
    assert {c["subject"] for c in record} >= {
        f"system:serviceaccount:{namespace}:web",
        f"system:serviceaccount:{namespace}:tool",
    }

    verified_run = nmisim(cluster, "migrate", "--cluster", "-n", namespace, "--verify", "-o", "json")
    assert verified_run.returncode == 0, verified_run.stderr
    verified = json.loads(verified_run.stdout)
    classes = {p["name"]: p["class"] for p in verified["pods"]}
    assert len(classes) == 4
    for p in verified["pods"]:
        expected = by_workload[p["workload"]]["class"]
        assert p["class"] == expected, (p["name"], p["class"], expected)
    migrated = [p for p in verified["pods"] if p["before"]["identities"]]
    assert len(migrated) == 3 and {p["class"]["removed"] for p in migrated} == {"same-identity"}
    assert all(
        step.startswith("(exists)") or "az identity" not in step
        for w in verified["workloads"]
        for step in w["steps"]
    )
