"""The real node `nmisim-node` (hack/node.sh): finding it, and running real pods on it.

Pods go to kwok's fake nodes unless they tolerate the real node's taint and select its label; the
helpers here add both. Client pods run the `nmisim-base:dev` image (Debian 12 + python3) that
`make image` builds and loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import CLUSTER_DIR, ROOT, Cluster, eventually

NODE_NAME = "nmisim-node"
NODE_LABEL = {"nmisim.dev/node": "real"}
TOLERATION = {"key": "nmisim.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}
BASE_IMAGE = "nmisim-base:dev"
OPERATOR_IMAGE = "nmisim-operator:dev"
NODE_DIR = CLUSTER_DIR / "node"
CTR_SOCK = NODE_DIR / "run" / "containerd.sock"


def required() -> bool:
    """CI sets NMISIM_REAL_NODE=1: a missing real node is then a failure, not a skip."""
    return os.environ.get("NMISIM_REAL_NODE", "auto") in {"1", "yes", "true"}


def require_real_node(cluster: Cluster) -> dict[str, Any]:
    """The real node's Node object; skips (or fails where required) when the cluster has none."""
    proc = cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if proc.returncode != 0:
        why = "the cluster has no real node (hack/node.sh: needs root, bridges, netfilter)"
        if required():
            pytest.fail(f"NMISIM_REAL_NODE=1 but {why}: {proc.stderr.strip()}")
        pytest.skip(why)
    node: dict[str, Any] = json.loads(proc.stdout)
    return node


def pod_manifest(
    name: str,
    script: str,
    *,
    image: str = BASE_IMAGE,
    service_account: str | None = None,
    restart: str = "Never",
    labels: dict[str, str] | None = None,
    ports: list[int] | None = None,
) -> dict[str, Any]:
    """A pod on the real node running ``python3 -c SCRIPT`` as a non-root user."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "-u", "-c", textwrap.dedent(script)],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
    }
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "nodeSelector": NODE_LABEL,
        "tolerations": [TOLERATION],
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": service_account is not None,
        "containers": [container],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def run_pod(cluster: Cluster, namespace: str, name: str, script: str, timeout: float = 90, **kw: Any) -> str:
    """Run a pod on the real node to completion; its log (stdout). Fails with the log if it failed."""
    cluster.apply(json.dumps(pod_manifest(name, script, **kw)), namespace)

    def finished() -> str | None:
        phase = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
        return phase if phase in {"Succeeded", "Failed"} else None

    phase = eventually(finished, timeout=timeout, what=f"pod {namespace}/{name} to finish on the real node")
    log = cluster.kubectl("logs", name, "-n", namespace).stdout
    assert phase == "Succeeded", f"pod {name} {phase}; log:\n{log}"
    return log


def iptables(*args: str) -> str:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=True).stdout


def rule_packets(chain: str, comment: str, table: str = "filter") -> int:
    """Packets counted so far by the rule of ``chain`` with that comment."""
    for line in iptables("-t", table, "-L", chain, "-v", "-x", "-n").splitlines():
        if comment in line:
            return int(line.split()[0])
    raise AssertionError(f"no rule {comment!r} in {chain}")


def container_pid(cluster: Cluster, namespace: str, pod: str, container: str) -> int:
    """The host pid of a container's first process, from containerd."""
    status = cluster.get_json("pod", pod, "-n", namespace)["status"]
    cid = next(c["containerID"] for c in status["containerStatuses"] if c["name"] == container)
    cid = cid.removeprefix("containerd://")
    out = subprocess.run(
        ["ctr", "--address", str(CTR_SOCK), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"container {cid} of {pod} is not running in containerd")


def cluster_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "hack" / "cluster.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def node_ready(cluster: Cluster) -> bool:
    proc = cluster.kubectl(
        "get",
        "node",
        NODE_NAME,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    return proc.stdout == "True"


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 2)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
