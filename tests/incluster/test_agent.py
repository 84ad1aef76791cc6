"""`nmisim serve` as a DaemonSet on the real node (manifests/nmi/), asked by real clients in real pods.

Every request here is sent from inside a pod on the real node (its own network namespace, through NMI's
own DNAT rule), never from the host's. The clients are the ones teams run: `curl`, Python
`azure-identity`'s and Go `azidentity`'s `ManagedIdentityCredential` (image `nmisim-clients:dev`,
hack/images/clients/). For every case the answer equals what `nmisim request --cluster --pod NS/NAME`
prints for the same objects: status, body, the headers nmisim simulates, and the wait.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.realnode import NODE_NAME, iptables, pod_manifest, require_real_node, rule_packets
from tests.support import ROOT, Cluster, eventually, parse_metrics

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.incluster]

NMISIM = str(Path(sys.executable).parent / "nmisim")
CLIENTS_IMAGE = "nmisim-clients:dev"
IMDS = "http://169.254.169.254"
TOKEN_PATH = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
SCOPE = "https://management.azure.com/.default"
# What the DaemonSet runs with (manifests/nmi/daemonset.yaml: NMI's default --ipt-update-interval-sec).
IPT_UPDATE_INTERVAL = 60
# Short NMI retries for the unbound-pod cases: the wait is real, so keep it a few seconds.
SHORT_RETRIES = {
    "retryAttemptsForCreated": 3,
    "retryAttemptsForAssigned": 1,
    "findIdentityRetryIntervalSeconds": 2,
}


def resource_id(name: str) -> str:
    return (
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


def client_id(n: int) -> str:
    return f"0b1c2d3e-0000-4000-8000-{n:012d}"


def identity_and_binding(name: str, cid: str, selector: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentity",
            "metadata": {"name": name},
            "spec": {"type": 0, "clientID": cid, "resourceID": resource_id(name)},
        },
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding",
            "metadata": {"name": name},
            "spec": {"azureIdentity": name, "selector": selector},
        },
    ]


def apply_list(cluster: Cluster, namespace: str, items: list[dict[str, Any]]) -> None:
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), namespace)


def aad_chain_present() -> bool:
    return "-N aad-metadata" in iptables("-t", "nat", "-S")


def agent_pod(cluster: Cluster) -> str:
    pods = cluster.get_json("pods", "-n", "nmisim-agent", "--field-selector", f"spec.nodeName={NODE_NAME}")
    return str(pods["items"][0]["metadata"]["name"]) if pods["items"] else ""


def wait_for_agent(cluster: Cluster) -> None:
    """The DaemonSet rolled out, one agent Ready and not terminating on the real node, NMI's chain in place:
    from then on a pod's IMDS request meets the agent (not a closed port mid-restart)."""
    cluster.kubectl("rollout", "status", "daemonset", "-n", "nmisim-agent", "--timeout=120s", timeout=150)

    def ready_on_real_node() -> bool:
        pods = cluster.get_json(
            "pods", "-n", "nmisim-agent", "--field-selector", f"spec.nodeName={NODE_NAME}"
        )
        return len(pods["items"]) == 1 and all(
            all(c.get("ready") for c in p["status"].get("containerStatuses", []))
            and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            for p in pods["items"]
        )

    eventually(ready_on_real_node, timeout=120, what="the agent Ready on the real node")
    eventually(aad_chain_present, timeout=60, what="NMI's nat chain aad-metadata on the real node")


def agent_log(cluster: Cluster) -> str:
    return cluster.kubectl("logs", "-n", "nmisim-agent", agent_pod(cluster), check=False).stdout


@pytest.fixture(scope="module")
def agent(cluster: Cluster) -> Iterator[None]:
    require_real_node(cluster)
    cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "nmi"))
    wait_for_agent(cluster)
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", "-k", str(ROOT / "manifests" / "nmi"), "--wait=true", check=False, timeout=120
        )


def replace_simulation_spec(cluster: Cluster, spec: dict[str, Any], *, check: bool = True) -> None:
    """SimulationConfig/default's whole spec replaced by ``spec`` (a JSON patch, as a user's edit would)."""
    patch = json.dumps([{"op": "replace", "path": "/spec", "value": spec}])
    cluster.kubectl("patch", "simulationconfig", "default", "--type=json", "-p", patch, check=check)


@contextmanager
def configured(
    cluster: Cluster, nmi: dict[str, Any] | None = None, imds: dict[str, Any] | None = None
) -> Iterator[None]:
    """SimulationConfig/default with these spec.nmi / spec.imds fields, for the agent and nmisim request
    alike; the agent has re-read it (it logs the new configuration) before the body runs. Put back after."""
    before = cluster.get_json("simulationconfig", "default")["spec"]
    spec = json.loads(json.dumps(before))
    spec.setdefault("nmi", {}).update(nmi or {})
    spec.setdefault("imds", {}).update(imds or {})

    def set_spec(value: dict[str, Any]) -> None:
        seen = agent_log(cluster).count("configuration: ")
        replace_simulation_spec(cluster, value)
        eventually(
            lambda: agent_log(cluster).count("configuration: ") > seen,
            timeout=30,
            what="the agent to re-read SimulationConfig/default",
        )

    set_spec(spec)
    try:
        yield
    finally:
        set_spec(before)


def sleeper(cluster: Cluster, namespace: str, name: str, labels: dict[str, str]) -> None:
    """A pod of the clients image on the real node that waits to be exec'd into."""
    manifest = pod_manifest(name, "import time; time.sleep(3600)", image=CLIENTS_IMAGE, labels=labels)
    cluster.apply(json.dumps(manifest), namespace)
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=60s")


def exec_in(
    cluster: Cluster, namespace: str, pod: str, *argv: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", pod, "-n", namespace, "--", *argv, check=False, timeout=timeout)


def curl_argv(path: str, header: bool) -> list[str]:
    argv = ["curl", "-s", "-S", "-i", "--max-time", "200", "-w", "\n@@time_total=%{time_total}"]
    return [*argv, *(["-H", "Metadata:true"] if header else []), IMDS + path]


def parse_curl(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """curl -i's output as status, headers and body, plus the seconds it took (its time_total)."""
    if proc.returncode != 0:
        return {"curl_exit": proc.returncode, "error": proc.stderr.strip()}
    response, _, took = proc.stdout.rpartition("\n@@time_total=")
    # kubectl's output is read as text: universal newlines turned curl's CRLFs into LFs.
    head, _, body = response.partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return {"status": int(status_line.split()[1]), "headers": headers, "body": body, "seconds": float(took)}


def curl(
    cluster: Cluster, namespace: str, pod: str, path: str = TOKEN_PATH, header: bool = True
) -> dict[str, Any]:
    return parse_curl(exec_in(cluster, namespace, pod, *curl_argv(path, header)))


def sdk(cluster: Cluster, namespace: str, pod: str, client: str, *args: str) -> dict[str, Any]:
    """azpy (Python azure-identity) or azgo (Go azidentity) in the pod: their one-line JSON result."""
    proc = exec_in(cluster, namespace, pod, client, *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
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
    assert got.get("status") == want["status"], (got, want)
    assert got["body"] == want["body"]
    for key, value in want["headers"].items():
        assert got["headers"].get(key) == value, (key, got["headers"], want["headers"])
    # The wait is real: at least what NMI waits, plus no more than the path's own latency.
    assert want["waitSeconds"] - 0.05 <= got["seconds"] <= want["waitSeconds"] + 1.5, (got, want)


def token_of(answer: dict[str, Any]) -> str:
    return str(json.loads(answer["body"])["access_token"])


def agent_waiting(cluster: Cluster, namespace: str, pod: str) -> float:
    """The agent's ``nmisim_serve_waiting_requests`` gauge, read from ``pod`` by curl as every other answer
    here: its /metrics listens on the node's address (manifests/nmi/daemonset.yaml)."""
    agent = cluster.get_json("pods", "-n", "nmisim-agent", "--field-selector", f"spec.nodeName={NODE_NAME}")
    host_ip = agent["items"][0]["status"]["hostIP"]
    proc = exec_in(
        cluster, namespace, pod, "curl", "-s", "-S", "--max-time", "10", f"http://{host_ip}:9090/metrics"
    )
    return parse_metrics(proc.stdout)["nmisim_serve_waiting_requests"]


def known_to_agent(cluster: Cluster, namespace: str, pod: str) -> None:
    """Wait until the agent has the pod in its index (a pod it does not know gets NMI's 500
    `pod list is empty` after 1.2 s)."""
    eventually(
        lambda: curl(cluster, namespace, pod).get("status") not in (None, 500),
        timeout=60,
        what=f"the agent to know pod {namespace}/{pod}",
    )


def test_curl_from_a_bound_pod_prints_what_nmisim_request_predicts(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    apply_list(cluster, namespace, identity_and_binding("agent-e2e", client_id(1), "agent-e2e"))
    sleeper(cluster, namespace, "bound", {"aadpodidbinding": "agent-e2e"})
    want = predicted(namespace, "bound")
    assert want["status"] == 200 and "NOT-A-REAL-CREDENTIAL" in want["body"]
    got = eventually(
        lambda: (r := curl(cluster, namespace, "bound")).get("status") == 200 and r,
        timeout=60,
        what="the agent to know the bound pod and its identity",
    )
    same_answer(got, want)
    # The README's command, as a user types it: the body alone.
    plain = exec_in(cluster, namespace, "bound", "curl", "-s", "-H", "Metadata:true", IMDS + TOKEN_PATH)
    assert plain.stdout == want["body"]


def test_the_sdks_accept_the_simulated_token(cluster: Cluster, namespace: str, agent: None) -> None:
    apply_list(cluster, namespace, identity_and_binding("sdk", client_id(2), "sdk"))
    sleeper(cluster, namespace, "sdk", {"aadpodidbinding": "sdk"})
    want = token_of(predicted(namespace, "sdk"))
    known_to_agent(cluster, namespace, "sdk")
    for client in ("azpy", "azgo"):
        result = sdk(cluster, namespace, "sdk", client, "--scope", SCOPE)
        assert result["ok"] is True, (client, result)
        assert result["token"] == want, (client, result)


def test_client_id_selects_among_several_identities(cluster: Cluster, namespace: str, agent: None) -> None:
    ids = {"multi-a": client_id(3), "multi-b": client_id(4)}
    apply_list(cluster, namespace, [o for n, c in ids.items() for o in identity_and_binding(n, c, "multi")])
    sleeper(cluster, namespace, "multi", {"aadpodidbinding": "multi"})
    known_to_agent(cluster, namespace, "multi")
    for cid in ids.values():
        want = predicted(namespace, "multi", "--query", f"client_id={cid}")
        assert want["status"] == 200 and cid in token_of(want)
        same_answer(curl(cluster, namespace, "multi", f"{TOKEN_PATH}&client_id={cid}"), want)
        for client in ("azpy", "azgo"):
            result = sdk(cluster, namespace, "multi", client, "--client-id", cid)
            assert result["ok"] is True and result["token"] == token_of(want), (client, result)
    # No client_id: NMI takes the first identity it lists; the same one as nmisim request says.
    same_answer(curl(cluster, namespace, "multi"), predicted(namespace, "multi"))


def test_an_unbound_pod_waits_then_gets_404_and_the_sdks_fail(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    sleeper(cluster, namespace, "unbound", {"app": "unbound"})
    with configured(cluster, nmi=SHORT_RETRIES):
        known_to_agent(cluster, namespace, "unbound")
        want = predicted(namespace, "unbound")
        assert want["status"] == 404 and want["waitSeconds"] >= 2, want
        same_answer(curl(cluster, namespace, "unbound"), want)
        # The SDKs see the 404 after NMI's wait (no retries of their own here, so one wait each);
        # NMI's 404 body is text, so azure-identity fails to decode it and reports the identity
        # unavailable, as it does against real NMI.
        py = sdk(cluster, namespace, "unbound", "azpy", "--retries", "0")
        assert py["ok"] is False and py["error"] == "CredentialUnavailableError", py
        assert py["cause"] == "JSONDecodeError", py
        go = sdk(cluster, namespace, "unbound", "azgo", "--retries", "-1")
        assert go["ok"] is False and "404" in go["error"], go
        for result in (py, go):
            assert result["seconds"] >= want["waitSeconds"] - 0.05, result


def test_setretryafterheader_turns_the_404_into_503_with_retry_after(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    sleeper(cluster, namespace, "retry", {"app": "retry"})
    with configured(cluster, nmi={**SHORT_RETRIES, "setRetryAfterHeader": True}):
        known_to_agent(cluster, namespace, "retry")
        want = predicted(namespace, "retry")
        assert want["status"] == 503 and want["headers"]["Retry-After"] == "20", want
        same_answer(curl(cluster, namespace, "retry"), want)


def test_while_one_caller_waits_another_is_served_in_milliseconds(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    apply_list(cluster, namespace, identity_and_binding("fast", client_id(5), "fast"))
    sleeper(cluster, namespace, "fast", {"aadpodidbinding": "fast"})
    sleeper(cluster, namespace, "waiter", {"app": "waiter"})
    known_to_agent(cluster, namespace, "fast")
    waiting = subprocess.Popen(
        [
            cluster.kubectl_bin,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "exec",
            "waiter",
            "-n",
            namespace,
            "--",
            *curl_argv(TOKEN_PATH, True),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the waiter's request is inside NMI's 80 s wait (NMI's defaults here)
        eventually(
            lambda: agent_waiting(cluster, namespace, "fast") >= 1, timeout=30, what="a caller in NMI's wait"
        )
        served = [curl(cluster, namespace, "fast") for _ in range(5)]
        assert waiting.poll() is None, "the waiting request ended early"
    finally:
        waiting.kill()
        waiting.communicate()
    assert all(r["status"] == 200 for r in served), served
    assert max(r["seconds"] for r in served) < 0.25, [r["seconds"] for r in served]


def test_an_exempt_pod_is_answered_by_the_imds_model(cluster: Cluster, namespace: str, agent: None) -> None:
    exception = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": "exempt"},
        "spec": {"podLabels": {"app": "exempt"}},
    }
    apply_list(cluster, namespace, [exception])
    sleeper(cluster, namespace, "exempt", {"app": "exempt"})
    known_to_agent(cluster, namespace, "exempt")
    # NMI fetches the exempt pod's token itself; IMDS's 400 (no identity on the VM) becomes NMI's 403.
    want = predicted(namespace, "exempt")
    assert want["status"] == 403 and "Identity not found" in want["body"], want
    same_answer(curl(cluster, namespace, "exempt"), want)
    with configured(cluster, imds={"systemAssigned": True}):
        want = predicted(namespace, "exempt")
        assert want["status"] == 200 and "system-assigned" in want["body"], want
        same_answer(curl(cluster, namespace, "exempt"), want)
        result = sdk(cluster, namespace, "exempt", "azpy")
        assert result["ok"] is True and result["token"] == token_of(want), result


HOST_IMDS = "http://127.0.0.1:2580"  # manifests/nmi/daemonset.yaml: --host-imds-address
GUARD = "nmisim-test: nothing from the host to 169.254/16"


@contextmanager
def host_output_guard() -> Iterator[None]:
    """While a hostNetwork pod runs a client: any packet from the host's namespace to 169.254.0.0/16 is
    rejected (the harness's safety chains see forwarded and input traffic only), and must count zero."""
    rule = ["OUTPUT", "-d", "169.254.0.0/16", "-m", "comment", "--comment", GUARD, "-j", "REJECT"]
    iptables("-I", *rule)
    try:
        yield
        assert rule_packets("OUTPUT", GUARD) == 0, "a hostNetwork client sent to 169.254.0.0/16"
    finally:
        iptables("-D", *rule)


def test_a_hostnetwork_pod_is_not_intercepted_and_its_sdk_reaches_the_host_listener(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    # The rule: DNAT from PREROUTING only, which a hostNetwork pod's packets never traverse (they leave
    # through OUTPUT); nothing in OUTPUT jumps to aad-metadata.
    assert "-A PREROUTING -j aad-metadata" in iptables("-t", "nat", "-S", "PREROUTING")
    assert "aad-metadata" not in iptables("-t", "nat", "-S", "OUTPUT")
    manifest = pod_manifest("hostnet", "import time; time.sleep(3600)", image=CLIENTS_IMAGE)
    manifest["spec"]["hostNetwork"] = True
    container = manifest["spec"]["containers"][0]
    container["env"] = [{"name": "AZURE_POD_IDENTITY_AUTHORITY_HOST", "value": HOST_IMDS}]
    # The verdict: nmisim request sends the pod straight to IMDS, never to NMI.
    with host_output_guard():
        cluster.apply(json.dumps(manifest), namespace)
        cluster.kubectl("wait", "--for=condition=Ready", "pod/hostnet", "-n", namespace, "--timeout=60s")
        with configured(cluster, imds={"systemAssigned": True}):
            want = predicted(namespace, "hostnet")
            assert want["route"] == "direct" and want["servedBy"] == "imds", want
            assert want["status"] == 200, want
            # The agent's second listener answers with the same IMDS model (curl and the SDK alike).
            got = parse_curl(
                exec_in(cluster, namespace, "hostnet", *curl_argv("", True)[:-1], HOST_IMDS + TOKEN_PATH)
            )
            assert got["status"] == want["status"] and got["body"] == want["body"], (got, want)
            result = sdk(cluster, namespace, "hostnet", "azpy")
            assert result["ok"] is True and result["token"] == token_of(want), result


def test_missing_metadata_header_gets_nmis_400(cluster: Cluster, namespace: str, agent: None) -> None:
    sleeper(cluster, namespace, "plain", {"app": "plain"})
    want = predicted(namespace, "plain", "--no-default-headers")
    assert want["status"] == 400 and want["body"].endswith("\n")
    same_answer(curl(cluster, namespace, "plain", header=False), want)


def test_blocked_instance_metadata_gets_403(cluster: Cluster, namespace: str, agent: None) -> None:
    sleeper(cluster, namespace, "instance", {"app": "instance"})
    path = "/metadata/instance?api-version=2021-02-01"
    with configured(cluster, nmi={"blockInstanceMetadata": True}):
        want = predicted(namespace, "instance", "--path", path)
        assert want["status"] == 403, want
        same_answer(curl(cluster, namespace, "instance", path), want)


def test_a_chain_deleted_by_hand_is_repaired_within_the_interval(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    sleeper(cluster, namespace, "repair", {"app": "repair"})
    assert curl(cluster, namespace, "repair", header=False)["status"] == 400  # answered by the agent
    iptables("-t", "nat", "-D", "PREROUTING", "-j", "aad-metadata")
    iptables("-t", "nat", "-F", "aad-metadata")
    iptables("-t", "nat", "-X", "aad-metadata")
    deleted = time.monotonic()
    # Meanwhile nothing intercepts: the harness's safety rule refuses the pod (curl exit 7), nothing answers.
    refused = curl(cluster, namespace, "repair")
    assert refused.get("curl_exit") == 7, refused
    eventually(aad_chain_present, timeout=IPT_UPDATE_INTERVAL + 15, what="the agent to repair its chain")
    took = time.monotonic() - deleted
    assert took <= IPT_UPDATE_INTERVAL + 5, took
    assert re.search(r"flushing iptables to add aad-metadata custom chains", agent_log(cluster))
    assert curl(cluster, namespace, "repair", header=False)["status"] == 400


def test_stopping_the_agent_removes_its_rule_and_the_pod_is_refused(
    cluster: Cluster, namespace: str, agent: None
) -> None:
    sleeper(cluster, namespace, "after", {"app": "after"})
    assert curl(cluster, namespace, "after", header=False)["status"] == 400  # answered by the agent
    cluster.kubectl("delete", "-k", str(ROOT / "manifests" / "nmi"), "--wait=true", timeout=120)
    eventually(lambda: not aad_chain_present(), timeout=60, what="the agent's rules gone")
    got = curl(cluster, namespace, "after")
    assert got.get("curl_exit") == 7 and "Couldn't connect" in got["error"], got
