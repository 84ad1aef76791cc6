"""The install path users follow, for real: the operator's own image as a pod on the real node,
installed exactly as the README says (`kubectl apply -f crds/`, wait for Established,
`kubectl apply -k manifests/`), with its non-root user, read-only root filesystem, liveness probe,
memory limit, metrics Service and in-cluster RBAC exercised.

Run with NMISIM_OPERATOR=external (make test's second phase): the cluster e2e suite in
tests/integration then runs against this operator, as hack/kind-e2e.sh does on kind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.realnode import NODE_NAME, container_pid, elapsed, require_real_node, run_pod
from tests.support import ROOT, Cluster, eventually, install_crds

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.incluster]

NS = "nmisim-system"
DEPLOY = "nmisim-operator"


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> dict[str, Any]:
    if os.environ.get("NMISIM_OPERATOR") != "external":
        pytest.skip("in-cluster install tests run with NMISIM_OPERATOR=external (make test's second phase)")
    require_real_node(cluster)
    t0 = time.monotonic()
    install_crds(cluster)
    applied = cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
    cluster.kubectl(
        "wait", "--for=condition=Available", f"deployment/{DEPLOY}", "-n", NS, "--timeout=60s", timeout=70
    )
    available_s = elapsed(t0)
    print(f"install -> Deployment Available in {available_s} s")
    return {"available_s": available_s, "apply_stderr": applied.stderr}


def operator_pod(cluster: Cluster) -> dict[str, Any]:
    pods = cluster.get_json("pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")["items"]
    running = [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = running[0]
    return pod


def test_deployment_is_available_on_the_real_node_within_60_s(
    cluster: Cluster, deployed: dict[str, Any]
) -> None:
    assert deployed["available_s"] <= 60
    pod = operator_pod(cluster)
    assert pod["spec"]["nodeName"] == NODE_NAME
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["image"].endswith("nmisim-operator:dev")
    assert status["imageID"].startswith("sha256:") or "@sha256:" in status["imageID"]


def test_pod_security_restricted_admits_it(cluster: Cluster, deployed: dict[str, Any]) -> None:
    labels = cluster.get_json("namespace", NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "would violate PodSecurity" not in deployed["apply_stderr"]
    # Admitted (it runs) under `enforce: restricted`, and a dry run of the same pod spec passes too.
    pod = operator_pod(cluster)
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-probe", "namespace": NS},
        "spec": {k: v for k, v in pod["spec"].items() if k not in {"nodeName"}},
    }
    dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
    assert dry.returncode == 0 and "Warning" not in dry.stderr, dry.stderr


def test_runs_as_65532_with_a_read_only_root_filesystem(cluster: Cluster, deployed: dict[str, Any]) -> None:
    name = operator_pod(cluster)["metadata"]["name"]

    def exec_(*cmd: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("exec", name, "-n", NS, "-c", "operator", "--", *cmd, check=False)

    assert exec_("id", "-u").stdout.strip() == "65532"
    assert exec_("id", "-g").stdout.strip() == "65532"
    for path in ("/opt/venv/nmisim-write-test", "/nmisim-write-test", "/etc/nmisim-write-test"):
        denied = exec_("touch", path)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (path, denied.stderr)
    assert exec_("touch", "/tmp/nmisim-write-test").returncode == 0


METRICS_CLIENT = """
import os, urllib.request
url = "http://%s:%s/metrics" % (os.environ["SVC_HOST"], os.environ["SVC_PORT"])
text = urllib.request.urlopen(url, timeout=10).read().decode()
print(len([l for l in text.splitlines() if l.startswith("nmisim_")]))
"""


def test_metrics_service_answers_from_another_pod(
    cluster: Cluster, namespace: str, deployed: dict[str, Any]
) -> None:
    svc = cluster.get_json("service", "nmisim-metrics", "-n", NS)["spec"]
    script = METRICS_CLIENT.replace('os.environ["SVC_HOST"]', repr(svc["clusterIP"])).replace(
        'os.environ["SVC_PORT"]', repr(str(svc["ports"][0]["port"]))
    )
    samples = int(run_pod(cluster, namespace, "metrics-client", script).strip())
    assert samples > 0


def test_in_cluster_rbac_is_enough(cluster: Cluster, deployed: dict[str, Any]) -> None:
    """Its log after seeding: no 403 or Forbidden (the ServiceAccount's ClusterRole covers every call)."""
    name = operator_pod(cluster)["metadata"]["name"]
    eventually(
        lambda: "seeded:" in cluster.kubectl("logs", name, "-n", NS, "-c", "operator").stdout,
        timeout=60,
        what="operator seeded",
    )
    log = cluster.kubectl("logs", name, "-n", NS, "-c", "operator").stdout
    assert "403" not in log and "Forbidden" not in log and "Traceback" not in log, log[-3000:]


def test_verdicts_are_written_by_the_operator_in_the_pod(
    cluster: Cluster, namespace: str, deployed: dict[str, Any]
) -> None:
    """A pod on a kwok node gets its NMIVerdict from the in-cluster operator, equal to `nmisim evaluate`."""
    cluster.kubectl("run", "plain", "--image=registry.invalid/app:1", "-n", namespace)
    got = eventually(
        lambda: (
            cluster.kubectl("get", "nmiverdict", "plain", "-n", namespace, "-o", "json", check=False).stdout
        ),
        timeout=30,
        what="NMIVerdict for the pod",
    )
    verdict = json.loads(got)["status"]
    nmisim = str(Path(sys.executable).parent / "nmisim")
    expected = json.loads(
        subprocess.run(
            [nmisim, "evaluate", "--cluster", "-n", namespace, "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    mine = next(r for r in expected["results"] if r["name"] == "plain")
    assert verdict["verdict"] == mine["verdict"] == "intercepted"
    assert verdict["tokenRequest"]["status"] == mine["tokenRequest"]["status"] == 404


def test_a_frozen_operator_is_restarted_by_its_liveness_probe(
    cluster: Cluster, deployed: dict[str, Any]
) -> None:
    """SIGSTOP from the host (a signal from inside the container's pid namespace cannot stop its init):
    the probe times out, the kubelet kills and restarts the container, and it is Ready again."""
    pod = operator_pod(cluster)
    name = pod["metadata"]["name"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = container_pid(cluster, NS, name, "operator")
    t0 = time.monotonic()
    os.kill(pid, 19)  # SIGSTOP
    try:
        eventually(
            lambda: (
                cluster.get_json("pod", name, "-n", NS)["status"]["containerStatuses"][0]["restartCount"]
                > restarts
            ),
            timeout=120,
            interval=1,
            what="the kubelet to restart the frozen operator",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 18)  # SIGCONT, should it still exist
    restarted_s = elapsed(t0)
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", NS, "--timeout=90s", timeout=100)
    print(f"frozen -> restarted in {restarted_s} s, Ready again after {elapsed(t0)} s")
