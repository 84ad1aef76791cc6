"""The real node: a kubelet with containerd running real containers beside kwok's fake nodes, pods
that reach the API server and Services but nothing off this machine, and a host left as found.

Safety is tested, not assumed: a pod's packets to 169.254.0.0/16 and to an address off this machine
are refused by the harness's own rules (their counters move), and `cluster.sh node-down` leaves the
host's iptables, links, addresses, routes, mounts, sysctls, paths and processes as `up` found them.
Nothing here sends to 169.254.169.254 from the host's network namespace.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.realnode import (
    NODE_DIR,
    NODE_NAME,
    TOLERATION,
    cluster_sh,
    elapsed,
    iptables,
    node_ready,
    pod_manifest,
    read_lines,
    require_real_node,
    rule_packets,
    run_pod,
)
from tests.support import Cluster, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> dict[str, object]:
    return require_real_node(cluster)


def test_real_node_is_ready_beside_the_kwok_nodes(cluster: Cluster, node: dict[str, object]) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    assert {n for n in nodes if n.startswith("kwok-node-")}, "kwok's fake nodes are still there"
    real = nodes[NODE_NAME]
    ready = next(c for c in real["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    info = real["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    assert real["metadata"]["labels"]["nmisim.dev/node"] == "real"
    assert {"key": "nmisim.dev/node", "value": "real", "effect": "NoSchedule"} in real["spec"]["taints"]
    # kwok leaves it alone: no kwok annotation, and the kubelet (not kwok) posts its status.
    assert "kwok.x-k8s.io/node" not in real["metadata"].get("annotations", {})
    address = next(a["address"] for a in real["status"]["addresses"] if a["type"] == "InternalIP")
    assert address == "10.89.0.1", "the node IP is the harness's bridge, never the uplink"


def test_pods_without_the_toleration_stay_on_kwok_nodes(
    cluster: Cluster, namespace: str, node: object
) -> None:
    cluster.kubectl(
        "create", "deployment", "fake", "--image=registry.invalid/none:1", "--replicas=4", "-n", namespace
    )

    def placed() -> list[str] | None:
        pods = cluster.get_json("pods", "-n", namespace)["items"]
        names = [p["spec"].get("nodeName", "") for p in pods]
        return names if len(names) == 4 and all(names) else None

    assert NODE_NAME not in eventually(placed, timeout=60, what="4 pods scheduled")


def test_a_real_container_runs_and_its_log_is_read_through_the_kubelet(
    cluster: Cluster, namespace: str, node: object
) -> None:
    t0 = time.monotonic()
    log = run_pod(
        cluster,
        namespace,
        "hello",
        "import os, sys; print('hello from', sys.version.split()[0], os.getuid())",
    )
    assert re.fullmatch(r"hello from 3\.11\.\d+ 65532\n", log), log
    pod = cluster.get_json("pod", "hello", "-n", namespace)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith("10.89.0.")
    print(f"pod created -> finished in {elapsed(t0)} s")


def test_kubectl_exec_reaches_a_container(cluster: Cluster, namespace: str, node: object) -> None:
    cluster.apply(json.dumps(pod_manifest("sleeper", "import time; time.sleep(600)")), namespace)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "-n", namespace, "--timeout=60s")
    out = cluster.kubectl("exec", "sleeper", "-n", namespace, "--", "python3", "-c", "print(6 * 7)").stdout
    assert out.strip() == "42"


def test_safety_rules_come_first(node: object) -> None:
    """The harness's jumps are the first rules of FORWARD and INPUT (ahead of kube-proxy's), so no
    ACCEPT of anyone else's can let a pod's packet past them."""
    assert iptables("-S", "FORWARD").splitlines()[1] == "-A FORWARD -j NMISIM-FORWARD"
    assert iptables("-S", "INPUT").splitlines()[1] == "-A INPUT -j NMISIM-INPUT"
    forward = iptables("-S", "NMISIM-FORWARD")
    assert "-s 10.89.0.0/24 -d 169.254.0.0/16" in forward and "-j REJECT" in forward
    assert "-s 10.89.0.0/24 ! -d 10.89.0.0/24" in forward
    assert iptables("-S", "OUTPUT").splitlines()[1] == "-A OUTPUT -j NMISIM-OUTPUT"
    output = iptables("-S", "NMISIM-OUTPUT")
    for cidr in ("10.96.0.0/16", "10.244.0.0/16", "10.240.0.0/24"):
        assert f"-d {cidr}" in output
    assert "-j REJECT" in output


def test_the_host_never_sends_to_an_untranslated_service_or_kwok_address(node: object) -> None:
    """This machine's own connections to a Service address kube-proxy has no rule for, to a kwok
    pod's fake address and to a kwok node's (where the API server would dial its kubelet) are refused
    at once by NMISIM-OUTPUT (its counters move) instead of following the default route off the
    machine: the API server dials webhooks at their endpoints (--enable-aggregator-routing), and
    nothing on the host may reach these ranges otherwise."""
    targets = {
        "10.96.255.254": "untranslated Service addresses never leave",
        "10.244.255.254": "kwok pod addresses are not real",
        "10.240.0.4": "kwok node addresses are not real",  # kwok-node-1's InternalIP: its "kubelet"
    }
    for address, comment in targets.items():
        route = subprocess.run(["ip", "-4", "route", "get", address], check=False, capture_output=True)
        if route.returncode != 0:  # no route at all: nothing could leave, and OUTPUT is never reached
            pytest.skip(f"this machine has no route to {address}: nothing to refuse")
        before = rule_packets("NMISIM-OUTPUT", comment)
        with socket.socket() as s:
            s.settimeout(5)  # a packet that left would time out (TimeoutError), not be refused
            with pytest.raises(ConnectionRefusedError):
                s.connect((address, 10250))
        assert rule_packets("NMISIM-OUTPUT", comment) >= before + 1


PROBE = """
import errno, json, socket
out = {}
for host, port in %s:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        out[host] = "connected"
    except OSError as exc:
        out[host] = errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def test_pods_cannot_reach_link_local_or_leave_this_machine(
    cluster: Cluster, namespace: str, node: object
) -> None:
    """169.254.169.254 (IMDS's address), another link-local address and a documentation address off
    this machine (192.0.2.1, TEST-NET-1): every connection is refused at once by the harness's
    REJECT rules (their counters move) and none is answered."""
    link_local = rule_packets("NMISIM-FORWARD", "pods never reach link-local")
    off_machine = rule_packets("NMISIM-FORWARD", "pods never leave this machine")
    targets = [("169.254.169.254", 80), ("169.254.1.1", 80), ("192.0.2.1", 80)]
    t0 = time.monotonic()
    result = json.loads(run_pod(cluster, namespace, "probe", PROBE % targets))
    assert result == {
        "169.254.169.254": "ECONNREFUSED",
        "169.254.1.1": "ECONNREFUSED",
        "192.0.2.1": "ECONNREFUSED",
    }
    assert elapsed(t0) < 60
    assert rule_packets("NMISIM-FORWARD", "pods never reach link-local") >= link_local + 2
    assert rule_packets("NMISIM-FORWARD", "pods never leave this machine") >= off_machine + 1


API_PROBE = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
req = urllib.request.Request(f"https://{host}:{port}/version",
                             headers={"Authorization": "Bearer " + open(sa + "/token").read()})
with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
    print(json.dumps({"host": host, "status": resp.status, "version": json.load(resp)["gitVersion"]}))
"""


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    cluster: Cluster, namespace: str, node: object
) -> None:
    """In-cluster config as every client library does it: KUBERNETES_SERVICE_HOST, the projected
    token and CA; the certificate names 10.96.0.1 (verified, not skipped)."""
    out = json.loads(run_pod(cluster, namespace, "api", API_PROBE, service_account="default"))
    assert out == {"host": "10.96.0.1", "status": 200, "version": "v1.36.3"}


SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"served by " + self.server.server_address[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

# kube-proxy REJECTs a Service's address until it has synced the Service's endpoints (about a second
# after they are ready, its minSyncPeriod): a refused connection is retried until then, 30 s at most.
CLIENT = """
import os, time, urllib.error, urllib.request
url = "http://%s:80/" % os.environ["WEB_SERVICE_HOST"]
deadline = time.monotonic() + 30
while True:
    try:
        print(urllib.request.urlopen(url, timeout=10).read().decode())
        break
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""


def test_cluster_ip_services_work_through_kube_proxy(cluster: Cluster, namespace: str, node: object) -> None:
    cluster.apply(
        json.dumps(pod_manifest("web", SERVER, restart="Always", labels={"app": "web"}, ports=[8080])),
        namespace,
    )
    cluster.kubectl("expose", "pod", "web", "--name=web", "--port=80", "--target-port=8080", "-n", namespace)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "-n", namespace, "--timeout=60s")
    assert run_pod(cluster, namespace, "client", CLIENT).strip() == "served by 0.0.0.0"


def test_daemonsets_skip_the_real_node_unless_they_tolerate_it(
    cluster: Cluster, namespace: str, node: object
) -> None:
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "registry.invalid/none:1"}]},
            },
        },
    }
    cluster.apply(json.dumps(ds), namespace)
    kwok = [n for n in cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name").stdout.split() if n]
    got = eventually(
        lambda: (
            (s := cluster.get_json("ds", "agent", "-n", namespace)["status"]).get("desiredNumberScheduled")
            == len(kwok)
            and s
        ),
        timeout=30,
        what="DaemonSet scheduled on the kwok nodes only",
    )
    assert got["desiredNumberScheduled"] == len(kwok)
    assert TOLERATION["key"] == "nmisim.dev/node"


def test_image_pulls_never_leave_this_machine(cluster: Cluster, namespace: str, node: object) -> None:
    """No registry is reachable here and none may be tried: containerd sends every registry request to
    a proxy address on loopback where nothing listens, so a missing image fails at once (no DNS lookup,
    no connection off this machine)."""
    manifest = pod_manifest("nopull", "print(1)", image="registry.invalid/none:1")
    manifest["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    cluster.apply(json.dumps(manifest), namespace)

    def pull_error() -> str | None:
        events = cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=nopull")
        failed = [e["message"] for e in events["items"] if e["reason"] == "Failed" and "pull" in e["message"]]
        return failed[0] if failed else None

    message = eventually(pull_error, timeout=60, what="the kubelet's pull failure")
    assert "proxyconnect tcp: dial tcp 127.0.0.1:1" in message and "connection refused" in message, message


def test_node_down_restores_the_host_and_node_up_brings_it_back(cluster: Cluster, node: object) -> None:
    """The comparison `make cluster-down` makes, run here on the real node alone: down, then the host
    equals the snapshot taken before the node first started (iptables and ip6tables rules and chains,
    nf_tables tables, links, addresses, routes, mounts, sysctls, paths, kubelet cgroups, processes);
    then up again. Runs last in this module (it restarts every real pod)."""
    before = read_lines(NODE_DIR / "host-before" / "sysctls")
    assert before, "the harness took no snapshot before starting the node"
    t0 = time.monotonic()
    down = cluster_sh("node-down")
    assert down.returncode == 0, f"host differs after node-down:\n{down.stderr}"
    down_s = elapsed(t0)
    # Independent of the harness's own comparison: nothing of the node is left.
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "NMISIM" not in saved and "KUBE-" not in saved
    assert subprocess.run(["ip", "link", "show", "nmisim0"], capture_output=True, check=False).returncode != 0
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(NODE_DIR) not in mounts and "/run/netns/cni-" not in mounts
    assert subprocess.run(["pgrep", "-f", str(NODE_DIR)], capture_output=True, check=False).returncode == 1
    now = {line.split(" = ")[0]: line.split(" = ")[1] for line in before}
    for key, value in now.items():
        if value == "absent":
            continue
        current = subprocess.run(
            ["sysctl", "-n", key], capture_output=True, text=True, check=False
        ).stdout.strip()
        assert current == value, f"{key}: {current} after, {value} before"
    t1 = time.monotonic()
    up = cluster_sh("node-up")
    assert up.returncode == 0, up.stderr
    eventually(lambda: node_ready(cluster), timeout=120, what="real node Ready again")
    print(f"node-down {down_s} s (host identical), node-up -> Ready {elapsed(t1)} s")
