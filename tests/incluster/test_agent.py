"""`nmisim serve` as a DaemonSet on the real node (manifests/nmi/): a real pod's request to
169.254.169.254 is DNATed by NMI's own rule to the agent, which answers exactly what
`nmisim request --cluster --pod NS/NAME` prints for the same objects; deleting the DaemonSet removes
the rule, and the pod's next request is refused by the harness's safety rule, never answered.

Every request here is sent from inside a pod on the real node (its own network namespace), never from
the host's. The SDK clients, waits, bad input on the wire and the benchmark of issue 11 are still to
come; this is the end-to-end path they will run on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realnode import NODE_NAME, iptables, pod_manifest, require_real_node
from tests.support import ROOT, Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.incluster]

NMISIM = str(Path(sys.executable).parent / "nmisim")
CLIENT_ID = "0b1c2d3e-0000-4000-8000-00000000a9e7"
RESOURCE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-e2e"
)

# Runs in the pod: one request through NMI's DNAT, printed as the status, the headers nmisim simulates
# and the body (urllib, like any SDK, sends Host, User-Agent, Accept-Encoding and Connection too).
REQUEST = r"""
import errno, json, sys, urllib.error, urllib.request
path, header = sys.argv[1], sys.argv[2] == "with-header"
req = urllib.request.Request("http://169.254.169.254" + path, headers={"Metadata": "true"} if header else {})
try:
    resp = urllib.request.urlopen(req, timeout=30)
except urllib.error.HTTPError as err:
    resp = err
except OSError as err:
    cause = getattr(err, "reason", err)
    code = errno.errorcode.get(getattr(cause, "errno", 0))
    print(json.dumps({"error": type(cause).__name__, "errno": code}))
    sys.exit(0)
answer = {"status": resp.status, "headers": dict(resp.headers.items()), "body": resp.read().decode()}
print(json.dumps(answer))
"""
TOKEN_PATH = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"


def aad_chain_present() -> bool:
    return "-N aad-metadata" in iptables("-t", "nat", "-S")


@pytest.fixture(scope="module")
def agent(cluster: Cluster) -> Iterator[None]:
    require_real_node(cluster)
    cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "nmi"))

    def ready_on_real_node() -> bool:
        pods = cluster.get_json(
            "pods", "-n", "nmisim-agent", "--field-selector", f"spec.nodeName={NODE_NAME}"
        )
        return any(
            all(c.get("ready") for c in p["status"].get("containerStatuses", []))
            and p["status"].get("phase") == "Running"
            for p in pods["items"]
        )

    wait_for(ready_on_real_node, timeout=120, what="the agent Ready on the real node")
    wait_for(aad_chain_present, timeout=60, what="NMI's nat chain aad-metadata on the real node")
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", "-k", str(ROOT / "manifests" / "nmi"), "--wait=true", check=False, timeout=120
        )


def client(cluster: Cluster, namespace: str, name: str, labels: dict[str, str]) -> None:
    manifest = pod_manifest(name, "import time; time.sleep(3600)", labels=labels)
    cluster.apply(json.dumps(manifest), namespace)
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=60s")


def ask(cluster: Cluster, namespace: str, pod: str, path: str, header: bool = True) -> dict[str, Any]:
    out = cluster.kubectl(
        "exec",
        pod,
        "-n",
        namespace,
        "--",
        "python3",
        "-c",
        REQUEST,
        path,
        "with-header" if header else "none",
        timeout=60,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def predicted(namespace: str, pod: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [NMISIM, "request", "--cluster", "--pod", f"{namespace}/{pod}", "-o", "json", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def same_answer(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["status"] == want["status"], (got, want)
    assert got["body"] == want["body"]
    for key, value in want["headers"].items():
        assert got["headers"].get(key) == value, (key, got["headers"], want["headers"])


def test_a_bound_pod_gets_the_token_nmisim_request_predicts(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    identity = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentity",
        "metadata": {"name": "agent-e2e"},
        "spec": {"type": 0, "clientID": CLIENT_ID, "resourceID": RESOURCE_ID},
    }
    binding = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": "agent-e2e"},
        "spec": {"azureIdentity": "agent-e2e", "selector": "agent-e2e"},
    }
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [identity, binding]}), namespace)
    client(cluster, namespace, "bound", {"aadpodidbinding": "agent-e2e"})
    want = predicted(namespace, "bound")
    assert want["status"] == 200 and "NOT-A-REAL-CREDENTIAL" in want["body"]
    got = wait_for(
        lambda: (r := ask(cluster, namespace, "bound", TOKEN_PATH)).get("status") == 200 and r,
        timeout=60,
        what="the agent to know the bound pod and its identity",
    )
    same_answer(got, want)


def test_missing_metadata_header_gets_nmis_400(cluster: Cluster, namespace: str, agent: None) -> None:
    client(cluster, namespace, "plain", {"app": "plain"})
    want = predicted(namespace, "plain", "--no-default-headers")
    assert want["status"] == 400 and want["body"].endswith("\n")
    same_answer(ask(cluster, namespace, "plain", TOKEN_PATH, header=False), want)


def test_stopping_the_agent_removes_its_rule_and_the_pod_is_refused(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    client(cluster, namespace, "after", {"app": "after"})
    assert (
        ask(cluster, namespace, "after", TOKEN_PATH, header=False)["status"] == 400
    )  # answered by the agent
    cluster.kubectl("delete", "-k", str(ROOT / "manifests" / "nmi"), "--wait=true", timeout=120)
    wait_for(lambda: not aad_chain_present(), timeout=60, what="the agent's rules gone")
    got = ask(cluster, namespace, "after", TOKEN_PATH)
    assert got == {"error": "ConnectionRefusedError", "errno": "ECONNREFUSED"}, got
