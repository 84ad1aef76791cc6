#!/usr/bin/env python3
"""The in-cluster operator's memory at a given cluster size, measured where the limit applies: the
container's cgroup on the real node (memory.usage_in_bytes, memory.max_usage_in_bytes, total_rss) and
the kubelet's summary API (workingSetBytes, what the kubelet and `kubectl top` use for eviction and
OOM decisions). Sizes the manifests' requests and limits (README "Sizing").

    hack/measure_pod_memory.py --pods 1000 [--pods 10000] [--out .bench/pod-memory.json]

Needs the embedded cluster with the real node and the operator installed in it (`make demo IN_CLUSTER=1`
or make test's second phase). Pods go to kwok's fake nodes, 100 per namespace, and are deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(os.environ.get("NMISIM_CLUSTER_DIR") or ROOT / ".cluster")
KUBECTL = str(ROOT / ".venv" / "bin" / "kubectl")
CTR_SOCK = CLUSTER / "node" / "run" / "containerd.sock"
PER_NS = 100
PREFIX = "memsize-"  # + the run's size: namespaces of an earlier size may still be terminating


def kubectl(*args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", str(CLUSTER / "kubeconfig"))}
    proc = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def operator_container() -> tuple[str, int]:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", "nmisim-system", "-l", "app.kubernetes.io/component=operator", "-o", "json"
        )
    )["items"]
    pod = next(p for p in pods if p["status"].get("phase") == "Running")
    cid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    out = subprocess.run(
        ["ctr", "--address", str(CTR_SOCK), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pid = next(int(line.split()[1]) for line in out.splitlines()[1:] if line.split()[0] == cid)
    return pod["metadata"]["name"], pid


def cgroup_memory(pid: int) -> dict[str, int]:
    rel = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if line.split(":")[1].split(",").count("memory")
    )
    base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
    stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
    return {
        "usage_bytes": int((base / "memory.usage_in_bytes").read_text()),
        "max_usage_bytes": int((base / "memory.max_usage_in_bytes").read_text()),
        "rss_bytes": int(stat["total_rss"]),
        "limit_bytes": int((base / "memory.limit_in_bytes").read_text()),
        "proc_rss_bytes": int(
            next(
                x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS")
            ).split()[1]
        )
        * 1024,
    }


def summary_memory(pod: str) -> dict[str, int]:
    summary = json.loads(kubectl("get", "--raw", "/api/v1/nodes/nmisim-node/proxy/stats/summary"))
    for p in summary["pods"]:
        if p["podRef"]["name"] == pod:
            mem = p["containers"][0]["memory"]
            return {"working_set_bytes": mem["workingSetBytes"], "summary_rss_bytes": mem["rssBytes"]}
    raise SystemExit(f"pod {pod} not in the kubelet's summary")


def pod_doc(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": ns, "labels": {"app": f"a{i % 7}", "tier": "web"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1"}]},
    }


def create(total: int) -> list[str]:
    namespaces = [f"{PREFIX}{total}-{n}" for n in range((total + PER_NS - 1) // PER_NS)]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces
    ]
    kubectl("apply", "-f", "-", input="\n".join(json.dumps(d) for d in docs))
    for start in range(0, total, 1000):
        batch = [pod_doc(namespaces[i // PER_NS], i) for i in range(start, min(total, start + 1000))]
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}))
        print(f"  {min(total, start + 1000)}/{total} pods created", file=sys.stderr)
    return namespaces


def verdict_count(prefix: str = PREFIX) -> int:
    out = kubectl("get", "nmiverdicts", "-A", "--no-headers", "-o", "custom-columns=NS:.metadata.namespace")
    return sum(1 for line in out.splitlines() if line.startswith(prefix))


def leftovers() -> int:
    """Namespaces of earlier runs (terminating or not): measured sizes must be exact."""
    return sum(1 for line in kubectl("get", "namespaces", "-o", "name").splitlines() if PREFIX in line)


def measure(total: int) -> dict[str, Any]:
    while n := leftovers():
        print(f"  waiting for {n} namespaces of an earlier run to go", file=sys.stderr)
        time.sleep(5)
    t0 = time.monotonic()
    namespaces = create(total)
    while (n := verdict_count(f"{PREFIX}{total}-")) < total:
        print(f"  {n}/{total} verdicts", file=sys.stderr)
        if time.monotonic() - t0 > 1800:
            raise SystemExit("verdicts not all written in 30 min")
        time.sleep(5)
    time.sleep(15)  # let the exception-status batches and the config totals settle
    pod, pid = operator_container()
    result: dict[str, Any] = {"pods": total, "seconds_to_all_verdicts": round(time.monotonic() - t0, 1)}
    result |= cgroup_memory(pid) | summary_memory(pod)
    kubectl("delete", "namespace", *namespaces, "--wait=false")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, action="append", required=True)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "pod-memory.json")
    a = p.parse_args()
    results = []
    for total in a.pods:
        r = measure(total)
        results.append(r)
        mib = {k: round(v / 2**20, 1) for k, v in r.items() if k.endswith("_bytes")}
        print(json.dumps({"pods": total, **{k.removesuffix("_bytes") + "_mib": v for k, v in mib.items()}}))
        # Wait for the deletions to reach the operator before the next size; the cgroup's peak then
        # covers creating, settling and deleting every pod of this size.
        while verdict_count(f"{PREFIX}{total}-"):
            time.sleep(5)
        _, pid = operator_container()
        r["peak_after_delete_bytes"] = cgroup_memory(pid)["max_usage_bytes"]
        peak_mib = round(r["peak_after_delete_bytes"] / 2**20, 1)
        print(json.dumps({"pods": total, "peak_after_delete_mib": peak_mib}))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
