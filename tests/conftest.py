"""Shared fixtures: one real cluster per test session, a fresh namespace per test.

The cluster is the embedded local one (hack/cluster.sh, state in .cluster/) unless KUBECONFIG points
somewhere else, for example at a kind cluster: then the same tests run against that cluster.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import (
    CLUSTER_DIR,
    LOCAL_KUBECONFIG,
    ROOT,
    Cluster,
    OperatorProcess,
    eventually,
    install_crds,
    is_local_kubeconfig,
    kubectl_path,
    token_kubeconfig,
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    kubeconfig = Path(os.environ.get("KUBECONFIG") or LOCAL_KUBECONFIG)
    local = is_local_kubeconfig(kubeconfig)
    started = False
    if local:
        status = subprocess.run(
            [str(ROOT / "hack" / "cluster.sh"), "status"], capture_output=True, text=True, check=False
        )
        if "stopped" in status.stdout or not kubeconfig.exists():
            subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up"], check=True, timeout=900)
            started = True
    c = Cluster(kubeconfig=kubeconfig, local=local, kubectl_bin=kubectl_path())
    c.kubectl("get", "--raw", "/readyz")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        yield c
    finally:
        if started and not os.environ.get("NMISIM_KEEP_CLUSTER"):
            subprocess.run([str(ROOT / "hack" / "cluster.sh"), "down"], check=False, timeout=120)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for each test, deleted afterwards."""
    base = request.node.name.lower().replace("_", "-")
    base = "".join(ch for ch in base if ch.isalnum() or ch == "-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    eventually(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def in_cluster_operator() -> bool:
    """NMISIM_OPERATOR=external: the operator runs in the cluster (its Deployment from manifests/,
    on kind or on the embedded cluster's real node); otherwise the tests run it as a local process."""
    return os.environ.get("NMISIM_OPERATOR") == "external"


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """The CRDs and the manifests applied: all of them when the operator runs in the cluster; without
    the Deployment when the tests run the operator themselves (on the embedded cluster the Deployment's
    pod really runs on the real node, and two operators would both write)."""
    install_crds(cluster)
    if in_cluster_operator():
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        return cluster
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests")).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Deployment"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    cluster.kubectl(
        "delete",
        "deployment",
        "nmisim-operator",
        "-n",
        "nmisim-system",
        "--ignore-not-found",
        "--wait=true",
        timeout=90,
    )
    return cluster


@pytest.fixture(scope="session")
def operator(
    installed: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess | None]:
    """The operator as a real process, authenticated as the manifests' own ServiceAccount, so every
    test also proves that the RBAC in manifests/ is enough. NMISIM_OPERATOR=external: one already runs
    in the cluster (the kind path); tests that restart or kill it are skipped."""
    if in_cluster_operator():
        installed.kubectl(
            "wait",
            "--for=condition=Available",
            "deployment/nmisim-operator",
            "-n",
            "nmisim-system",
            "--timeout=180s",
            timeout=200,
        )
        yield None
        return
    tmp = tmp_path_factory.mktemp("operator")
    kubeconfig = token_kubeconfig(installed, tmp / "kubeconfig", "nmisim-system", "nmisim")
    log = CLUSTER_DIR / "test-operator.log" if installed.local else tmp / "operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    proc = OperatorProcess(kubeconfig, log)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
