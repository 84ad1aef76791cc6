"""manifests/nmi/: the node agent's DaemonSet and least-privilege RBAC, and flags `nmisim serve` accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import kubectl_path

from nmisim.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [kubectl_path(), "kustomize", str(ROOT / "manifests" / "nmi")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(out) if d}


def test_daemonset_is_nmi_shaped(objects: dict[str, dict[str, Any]]) -> None:
    ds = objects["DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["serviceAccountName"] == "nmisim-agent"
    assert {"operator": "Exists"} in spec["tolerations"]
    (c,) = spec["containers"]
    assert c["image"] == "nmisim-operator:dev" and c["command"] == ["nmisim"] and c["args"][0] == "serve"
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/run/xtables.lock" in mounts
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # every flag is one `nmisim serve` accepts (the downward API values substituted)
    args = [a.replace("$(NODE_NAME)", "n").replace("$(HOST_IP)", "10.0.0.1") for a in c["args"]]
    parsed = build_parser().parse_args(args)
    assert (parsed.node, parsed.http_probe_port, parsed.nmi_port) == ("n", 8085, 2579)


def test_namespace_is_privileged_not_nmisim_system(objects: dict[str, dict[str, Any]]) -> None:
    ns = objects["Namespace"]
    assert ns["metadata"]["name"] == "nmisim-agent"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert objects["DaemonSet"]["metadata"]["namespace"] == "nmisim-agent"


def test_rbac_reads_only_what_nmi_reads(objects: dict[str, dict[str, Any]]) -> None:
    rules = objects["ClusterRole"]["rules"]
    assert all(r["verbs"] == ["list", "watch"] for r in rules)
    resources = {(g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]}
    assert resources == {
        ("", "pods"),
        ("aadpodidentity.k8s.io", "azureidentities"),
        ("aadpodidentity.k8s.io", "azureidentitybindings"),
        ("aadpodidentity.k8s.io", "azureassignedidentities"),
        ("aadpodidentity.k8s.io", "azurepodidentityexceptions"),
        ("nmisim.dev", "simulationconfigs"),
    }
    binding = objects["ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nmisim-agent", "namespace": "nmisim-agent"}
    ]
