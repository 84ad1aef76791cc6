"""The Helm chart on the real node, as platform teams install cluster add-ons: `helm install` →
Deployment Available and verdicts written; `helm upgrade` with a changed SimulationConfig value →
every pod re-evaluated; `helm uninstall` → no nmisim object left but the CRDs (Helm never deletes
CRDs) and the NMIVerdicts the operator wrote (they are not part of the release).

The chart and `manifests/` name the same objects, so the kustomize install is taken out first and put
back afterwards (test_install.py and the e2e suite run after this module against it).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.realnode import NODE_NAME, require_real_node
from tests.support import ROOT, Cluster, eventually, install_crds

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.incluster]

NS = "nmisim-system"
CHART = str(ROOT / "charts" / "nmisim")
RELEASE_OBJECTS = [
    ("deployment", "nmisim-operator", NS),
    ("serviceaccount", "nmisim", NS),
    ("service", "nmisim-metrics", NS),
    ("clusterrole", "nmisim-operator", None),
    ("clusterrolebinding", "nmisim-operator", None),
    ("simulationconfig", "default", None),
    ("azurepodidentityexception", "mic-exception", "default"),
    ("azurepodidentityexception", "aks-addon-exception", "kube-system"),
]


def helm_bin() -> str:
    path = subprocess.run(
        [str(ROOT / "hack" / "helm.sh")], capture_output=True, text=True, check=False, timeout=1800
    )
    assert path.returncode == 0, f"hack/helm.sh could not build helm: {path.stderr[-2000:]}"
    return path.stdout.strip().splitlines()[-1]


def helm(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_bin(), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed: {proc.stderr.strip()}"
    return proc


def exists(cluster: Cluster, kind: str, name: str, ns: str | None) -> bool:
    where = ["-n", ns] if ns else []
    return cluster.kubectl("get", kind, name, *where, "-o", "name", check=False).returncode == 0


def kustomize_objects(cluster: Cluster) -> str:
    """manifests/ without its Namespace (which carries the embedded cluster's scheduling annotations)."""
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests")).stdout
    return yaml.safe_dump_all([o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Namespace"])


@pytest.fixture(scope="module")
def released(cluster: Cluster) -> Iterator[dict[str, Any]]:
    require_real_node(cluster)
    install_crds(cluster)
    cluster.kubectl(
        "delete",
        "-f",
        "-",
        "--ignore-not-found",
        "--wait=true",
        input=kustomize_objects(cluster),
        timeout=120,
    )
    install = helm(cluster, "install", "nmisim", CHART, "-n", NS, "--wait", "--timeout", "3m")
    try:
        yield {"notes": install.stdout}
    finally:
        subprocess.run(
            [helm_bin(), "--kubeconfig", str(cluster.kubeconfig), "uninstall", "nmisim", "-n", NS, "--wait"],
            capture_output=True,
            check=False,
            timeout=300,
        )
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait",
            "--for=condition=Available",
            "deployment/nmisim-operator",
            "-n",
            NS,
            "--timeout=120s",
            timeout=130,
        )


def token_status(cluster: Cluster, namespace: str, name: str) -> int | None:
    proc = cluster.kubectl("get", "nmiverdict", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    status: int | None = json.loads(proc.stdout).get("status", {}).get("tokenRequest", {}).get("status")
    return status


def test_install_upgrade_uninstall(cluster: Cluster, namespace: str, released: dict[str, Any]) -> None:
    # Installed: the Deployment runs the image on the real node and the operator writes verdicts.
    pods = cluster.get_json("pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")["items"]
    assert [p["spec"]["nodeName"] for p in pods if p["status"].get("phase") == "Running"] == [NODE_NAME]
    assert all(exists(cluster, *obj) for obj in RELEASE_OBJECTS)
    cluster.kubectl("run", "plain", "--image=registry.invalid/app:1", "-n", namespace)
    assert eventually(lambda: token_status(cluster, namespace, "plain"), timeout=60, what="verdict") == 404

    # Upgraded with a changed SimulationConfig value: NMI's Retry-After turns the 404 into 503.
    helm(
        cluster,
        "upgrade",
        "nmisim",
        CHART,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "simulationConfig.nmi.setRetryAfterHeader=true",
        "--wait",
        "--timeout",
        "3m",
    )
    spec = cluster.get_json("simulationconfig", "default")["spec"]
    assert spec["nmi"]["setRetryAfterHeader"] is True
    eventually(
        lambda: token_status(cluster, namespace, "plain") == 503,
        timeout=60,
        what="re-evaluated verdict (503)",
    )

    # Uninstalled: nothing of the release is left; the CRDs stay, as Helm's rule is.
    helm(cluster, "uninstall", "nmisim", "-n", NS, "--wait")
    left = [obj for obj in RELEASE_OBJECTS if exists(cluster, *obj)]
    assert left == []
    crds = cluster.kubectl(
        "get", "crd", "-l", "app.kubernetes.io/part-of=nmisim", "-o", "name"
    ).stdout.split()
    assert len(crds) >= 6, crds
