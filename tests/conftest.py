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

from tests.support import LOCAL_KUBECONFIG, ROOT, Cluster, is_local_kubeconfig, kubectl_path, wait_for


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
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
