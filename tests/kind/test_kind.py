"""kind, for real: the safety rules of hack/kind.sh, then the README's install path exactly as written
(Helm, kustomize, `kind load docker-image`, the node agent and a pod's curl), each answer compared with
what `nmisim request --cluster` predicts. Run in this order by `make test-kind`; hack/kind-e2e.sh runs
the integration suite against the operator installed here afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.docblocks import README, blocks
from tests.realnode import rule_packets
from tests.support import ROOT, Cluster

CLIENTS_IMAGE = "nmisim-clients:dev"
TOKEN_URL = (
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
    "&resource=https://management.azure.com/"
)
SCOPE = "https://management.azure.com/.default"
KIND_DIR = Path(os.environ.get("NMISIM_KIND_DIR") or ROOT / ".kind")


def readme_block(first_command: str) -> str:
    """The README's ``sh`` block whose commands start with ``first_command`` (its marker comment kept)."""
    for b in blocks(README):
        if b.language == "sh" and any(ln.startswith(first_command) for ln in b.text.splitlines()):
            return b.text
    raise AssertionError(f"no README block runs {first_command!r}")


def bash(script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A README block as a user runs it: bash -euo pipefail, in the repository, with the environment of
    hack/test-kind.sh (KUBECONFIG of the kind cluster, kind/helm/.venv on PATH, kind's DOCKER_HOST)."""
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def client_pod(name: str, labels: dict[str, str], *, host_network: bool = False) -> str:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "hostNetwork": host_network,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": CLIENTS_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }
    return json.dumps(pod)


def curl(cluster: Cluster, ns: str, pod: str, url: str, seconds: int = 3) -> tuple[int, str]:
    """curl's exit code and ``BODY STATUS`` from inside the pod."""
    proc = cluster.kubectl(
        "exec", "-n", ns, pod, "--", "curl", "-sS", "-m", str(seconds), "-w", " %{http_code}",
        "-H", "Metadata:true", url, check=False, timeout=seconds + 30,
    )  # fmt: skip
    if proc.returncode == 0:
        return 0, proc.stdout
    match = re.search(r"command terminated with exit code (\d+)", proc.stderr)
    return (int(match.group(1)) if match else proc.returncode), proc.stderr


def imds_drops() -> int:
    """Packets from the kind network to 169.254.0.0/16 dropped before routing (hack/kind.sh's guard)."""
    return rule_packets("PREROUTING", "nmisim-kind:no-link-local", table="raw")


def ready(cluster: Cluster, ns: str, name: str) -> None:
    cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=90s", timeout=120)


def test_nothing_from_a_pod_reaches_imds_or_leaves_the_machine(cluster: Cluster, namespace: str) -> None:
    """Before any node agent: a pod's request to IMDS is dropped at the host's bridge (the guard counts
    it), an address outside the machine is never routed (the host does not forward), and the host's own
    services refuse the kind network."""
    cluster.apply(client_pod("probe", {"app": "probe"}), namespace)
    ready(cluster, namespace, "probe")
    before = imds_drops()
    rc, _ = curl(cluster, namespace, "probe", TOKEN_URL)
    assert rc == 28  # no answer: dropped
    assert imds_drops() > before
    rc, _ = curl(cluster, namespace, "probe", "http://192.0.2.1/")  # this machine's uplink network
    assert rc == 28
    gateway = (
        subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", "nmkind0"], capture_output=True, text=True, check=True
        )
        .stdout.split()[3]
        .split("/")[0]
    )
    before = rule_packets("INPUT", "nmisim-kind:pods-get-no-answer")
    rc, _ = curl(cluster, namespace, "probe", f"http://{gateway}:2024/")  # a host listener
    assert rc == 28  # no answer: dropped, not refused (the host has no route back to a pod)
    assert rule_packets("INPUT", "nmisim-kind:pods-get-no-answer") > before


def test_the_readme_helm_install(cluster: Cluster) -> None:
    """The README's Helm block as written, then `helm uninstall` (the kustomize path follows)."""
    out = bash(readme_block("helm install"), timeout=600)
    assert "NAMESPACE" in out.stdout or "No resources found" in out.stderr
    pods = cluster.get_json("pods", "-n", "nmisim-system")["items"]
    assert any(p["status"].get("phase") == "Running" for p in pods)
    bash("helm uninstall nmisim -n nmisim-system --wait")


def test_the_readme_kustomize_install(cluster: Cluster) -> None:
    bash(readme_block("make image"), timeout=900)
    deploy = cluster.get_json("deployment", "nmisim-operator", "-n", "nmisim-system")
    assert deploy["status"].get("availableReplicas") == 1
    node = cluster.get_json("pods", "-n", "nmisim-system", "-l", "app.kubernetes.io/component=operator")
    assert node["items"][0]["spec"]["nodeName"].startswith("kind-")  # a kind node


def predict(pod: str, namespace: str = "default") -> dict[str, Any]:
    proc = subprocess.run(
        ["nmisim", "request", "--cluster", "--pod", f"{namespace}/{pod}", "-o", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


BOUND = """
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: kind-demo-id}
spec:
  type: 0
  clientID: 00000000-0000-4000-8000-00000000c0de
  resourceID: >-
    /subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kind-demo-id
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: kind-demo-binding}
spec: {azureIdentity: kind-demo-id, selector: kind-demo}
"""


def test_the_readme_serving_block(cluster: Cluster) -> None:
    """`kind load docker-image`, the agent from manifests/nmi/, and the curl from a pod, as the README
    says (POD: a bound pod of the test's own in the default namespace); the answer is nmisim request's."""
    cluster.apply(BOUND, "default")
    cluster.apply(client_pod("kind-demo", {"aadpodidbinding": "kind-demo"}), "default")
    ready(cluster, "default", "kind-demo")
    try:
        script = readme_block("kind load docker-image").replace("kubectl exec POD", "kubectl exec kind-demo")
        out = bash(script, timeout=300).stdout
        body = out[out.index("{") :].strip()
        want = predict("kind-demo")
        assert want["status"] == 200 and body == want["body"]
        token = json.loads(body)["access_token"]
        assert token.endswith("00000000-0000-4000-8000-00000000c0de")
        # real SDKs in the same pod, through NMI's DNAT in the kind node's network namespace
        for client in ("azpy", "azgo"):
            proc = cluster.kubectl("exec", "-n", "default", "kind-demo", "--", client, "--scope", SCOPE)
            result = json.loads(proc.stdout)
            assert result["ok"] is True and result["token"] == token, (client, result)
    finally:
        cluster.kubectl("delete", "pod", "kind-demo", "-n", "default", "--wait=false", check=False)


def test_agent_answers_as_predicted_and_host_network_is_not_intercepted(
    cluster: Cluster, namespace: str
) -> None:
    """With the agent on every kind node: an AKS add-on pod exempt by kube-system's default exception
    gets NMI's 403 at once; a hostNetwork pod's request never meets the agent (it leaves the node, and
    the host's guard drops it), as `nmisim request` says (route direct)."""
    cluster.apply(client_pod("addon", {"kubernetes.azure.com/managedby": "aks"}), "kube-system")
    cluster.apply(client_pod("hostnet", {"app": "hostnet"}, host_network=True), namespace)
    try:
        ready(cluster, "kube-system", "addon")
        ready(cluster, namespace, "hostnet")
        rc, out = curl(cluster, "kube-system", "addon", TOKEN_URL, seconds=20)
        want = predict("addon", "kube-system")
        assert rc == 0 and out.endswith(f" {want['status']}") and want["status"] == 403
        assert out[: -len(" 403")] == want["body"]
        assert predict("hostnet", namespace)["route"] == "direct"
        before = imds_drops()
        started = time.monotonic()
        rc, _ = curl(cluster, namespace, "hostnet", TOKEN_URL)
        assert rc == 28 and time.monotonic() - started >= 3
        assert imds_drops() > before
    finally:
        cluster.kubectl("delete", "pod", "addon", "-n", "kube-system", "--wait=false", check=False)


@pytest.mark.parametrize(
    "sysctl", ["vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "fs.file-max"]
)
def test_host_wide_kernel_settings_are_the_hosts(sysctl: str) -> None:
    """What kubelet and systemd in the nodes would set host-wide is still what it was before `up`."""
    before = (KIND_DIR / "before" / "sysctls").read_text()
    now = subprocess.run(["sysctl", sysctl], capture_output=True, text=True, check=True).stdout.strip()
    assert now in before.splitlines()
