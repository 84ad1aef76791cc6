"""NMI's interception, for real, in network namespaces this test creates (no cluster).

A "node" namespace runs ``nmisim serve`` (its rule manager installs NMI's rules there); a "pod" namespace
is joined to it by a veth pair and nothing else. The pod asks http://169.254.169.254/... and is answered
by the agent, which sees the pod's own address; a chain deleted by hand is repaired within the interval;
after SIGTERM the rules are gone and the pod's request is refused, never answered.

Safety: nothing here sends to 169.254.0.0/16 from the host's namespace. Every such request comes from the
pod namespace, whose only link is the veth to the node namespace, which has no uplink and no default
route. Both namespaces are deleted in teardown, and the host's iptables and links are compared with a
snapshot taken first.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nmisim.agent.interception import Rules
from nmisim.engine.http import HttpRequest
from nmisim.engine.world import World
from nmisim.sources.files import load_files
from tests.support import eventually

NODE = "nmisim-netns-node"
PROBE = 18085
INTERVAL = 1
CID = "11111111-aaaa-bbbb-cccc-000000000001"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
MUST_RUN = os.environ.get("NMISIM_REAL_NODE") == "1" or bool(os.environ.get("CI"))


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def unavailable(reason: str) -> None:
    if MUST_RUN:
        pytest.fail(f"netns interception test cannot run: {reason} (required where NMISIM_REAL_NODE=1 or CI)")
    pytest.skip(reason)


def host_snapshot() -> tuple[set[str], set[str]]:
    rules = set(sh("iptables-save").stdout.splitlines())
    links = {ln.split(":")[1].strip().split("@")[0] for ln in sh("ip", "-o", "link").stdout.splitlines()}
    return {r for r in rules if not r.startswith("#")}, links


@dataclass
class Netns:
    node: str
    pod: str
    node_if: str
    pod_if: str
    node_ip: str
    pod_ip: str

    def node_exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.node, *argv, check=check)

    def pod_exec(
        self, *argv: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.pod, *argv, check=check, timeout=timeout)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0:
        unavailable("needs root (ip netns, iptables)")
    tag = secrets.token_hex(3)
    octet = int(tag[:2], 16)
    ns = Netns(
        f"nmisim-agent-test-{tag}-node",
        f"nmisim-agent-test-{tag}-pod",
        f"nat{tag}n",
        f"nat{tag}p",
        f"10.251.{octet}.1",
        f"10.251.{octet}.2",
    )
    run_netns = Path("/run/netns")
    had_run_netns = run_netns.exists()
    try:
        before = host_snapshot()
        sh("ip", "netns", "add", ns.node)
    except (OSError, subprocess.CalledProcessError) as exc:
        unavailable(f"ip netns does not work here: {exc}")
    try:
        sh("ip", "netns", "add", ns.pod)
        # the veth is created inside the node namespace and its peer put in the pod's: the host never has it
        sh(
            "ip",
            "-n",
            ns.node,
            "link",
            "add",
            ns.node_if,
            "type",
            "veth",
            "peer",
            "name",
            ns.pod_if,
            "netns",
            ns.pod,
        )
        sh("ip", "-n", ns.node, "addr", "add", f"{ns.node_ip}/24", "dev", ns.node_if)
        sh("ip", "-n", ns.pod, "addr", "add", f"{ns.pod_ip}/24", "dev", ns.pod_if)
        for name, link in ((ns.node, ns.node_if), (ns.pod, ns.pod_if)):
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "link", "set", link, "up")
        sh("ip", "-n", ns.pod, "route", "add", "default", "via", ns.node_ip)
        # no route off the machine: each namespace has exactly lo and its veth; the node has no default
        for name, link in ((ns.node, ns.node_if), (ns.pod, ns.pod_if)):
            names = {
                ln.split(":")[1].strip().split("@")[0]
                for ln in sh("ip", "-n", name, "-o", "link").stdout.splitlines()
            }
            assert names == {"lo", link}, names
        assert "default" not in sh("ip", "-n", ns.node, "route").stdout
        # as the real node's safety rule (hack/node.sh): what is not intercepted is refused at once; with
        # forwarding on (in this namespace only) and no route, the kernel answers "unreachable"
        ns.node_exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns.node_exec("iptables", "-A", "FORWARD", "-d", "169.254.0.0/16", "-j", "REJECT")
        yield ns
    finally:
        for name in (ns.pod, ns.node):
            sh("ip", "netns", "del", name, check=False)
        # `ip netns add` made /run/netns (a shared bind-mount of itself) if it was not there: undo that too
        if not had_run_netns and run_netns.exists() and not any(run_netns.iterdir()):
            sh("umount", str(run_netns), check=False)
            run_netns.rmdir()
        after = host_snapshot()
        ours = ("aad-metadata", ns.node_if, ns.pod_if, "nmisim-agent-test", ":2579")
        changed = (before[0] ^ after[0]) | (before[1] ^ after[1])
        # another cluster on this host may change its own rules meanwhile; nothing of ours may remain
        assert not [c for c in changed if any(o in c for o in ours)], changed
        assert not [ln for ln in after[1] if ln in (ns.node_if, ns.pod_if)]


OBJECTS = """
apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: default, labels: {{aadpodidbinding: s}}}}
spec: {{nodeName: {node}}}
status: {{phase: Running, podIP: {ip}}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {{name: id, namespace: default}}
spec:
  type: 0
  clientID: {cid}
  resourceID: /subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {{name: b, namespace: default}}
spec: {{azureIdentity: id, selector: s}}
"""

CLIENT = """
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers={"Metadata": "true"})
try:
    resp = urllib.request.urlopen(req, timeout=float(sys.argv[2]))
    status, headers, body = resp.status, list(resp.headers.items()), resp.read()
except urllib.error.HTTPError as e:
    status, headers, body = e.code, list(e.headers.items()), e.read()
except OSError as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(getattr(e, "reason", e))}))
    sys.exit(0)
print(json.dumps({"status": status, "headers": headers, "body": body.decode()}))
"""


def pod_request(ns: Netns, target: str = TOKEN, timeout: float = 5) -> dict[str, Any]:
    out = ns.pod_exec(
        sys.executable, "-c", CLIENT, f"http://169.254.169.254{target}", str(timeout), timeout=timeout + 10
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_pod_request_is_intercepted_answered_repaired_and_released(netns: Netns, tmp_path: Path) -> None:
    objs = tmp_path / "objects.yaml"
    objs.write_text(OBJECTS.format(node=NODE, ip=netns.pod_ip, cid=CID))
    log = tmp_path / "agent.log"
    argv = [
        "ip", "netns", "exec", netns.node, sys.executable, "-m", "nmisim.cli.main", "serve",
        "-f", str(objs), "--node", NODE, "--allow-network-plugin-kubenet",
        f"--ipt-update-interval-sec={INTERVAL}", "--route-localnet", netns.node_if,
        "--http-probe-port", str(PROBE), "--probe-listen-address", "127.0.0.1",
        "--prometheus-port", "0", "--shutdown-delay-sec", "0",
    ]  # fmt: skip
    with log.open("w") as out:
        agent = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{PROBE}/healthz"
        probe = f"import urllib.request;print(urllib.request.urlopen({url!r},timeout=1).read().decode())"

        def active() -> bool:
            if agent.poll() is not None:  # not an AssertionError: eventually() would keep waiting
                raise RuntimeError(f"the agent exited with {agent.returncode}:\n{log.read_text()}")
            return netns.node_exec(sys.executable, "-c", probe, check=False).stdout.strip() == "Active"

        eventually(active, 20, 0.1, "the agent's /healthz to say Active")
        rules = netns.node_exec("iptables", "-t", "nat", "-S", "aad-metadata").stdout.splitlines()
        assert rules == Rules().expected()
        prerouting = netns.node_exec("iptables", "-t", "nat", "-S", "PREROUTING").stdout.splitlines()
        assert prerouting[1] == "-A PREROUTING -j aad-metadata"
        key = f"net/ipv4/conf/{netns.node_if}/route_localnet"
        assert netns.node_exec("cat", f"/proc/sys/{key}").stdout.strip() == "1"

        # the pod's own request, through the DNAT, equals the engine's answer for that pod
        world = World()
        for obj in load_files([str(objs)]).objects:
            world.upsert(obj)
        want = world.request(HttpRequest(), pod=world.get_pod("default", "app"))
        got = pod_request(netns)
        assert got.get("status") == 200, (got, log.read_text())
        assert got["body"] == want.body
        headers = {k: v for k, v in got["headers"] if k not in ("Date", "Connection")}
        assert headers == want.headers
        assert f"req.remote={netns.pod_ip}" in log.read_text()  # the agent saw the pod's own address

        # deleted by hand: repaired within the interval
        netns.node_exec("iptables", "-t", "nat", "-D", "PREROUTING", "-j", "aad-metadata")
        netns.node_exec("iptables", "-t", "nat", "-F", "aad-metadata")
        netns.node_exec("iptables", "-t", "nat", "-X", "aad-metadata")
        started = time.monotonic()
        eventually(
            lambda: (
                netns.node_exec(
                    "iptables", "-t", "nat", "-S", "aad-metadata", check=False
                ).stdout.splitlines()
                == Rules().expected()
                and "-A PREROUTING -j aad-metadata"
                in netns.node_exec("iptables", "-t", "nat", "-S", "PREROUTING").stdout
            ),
            INTERVAL + 3,
            0.1,
            "the rules to be repaired",
        )
        assert time.monotonic() - started <= INTERVAL + 3
        assert "flushing iptables to add aad-metadata custom chains" in log.read_text()
        assert pod_request(netns).get("status") == 200

        # SIGTERM: rules removed, route_localnet restored, exit 0; the pod's request is never answered
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0, log.read_text()
        assert netns.node_exec("iptables", "-t", "nat", "-S", "aad-metadata", check=False).returncode != 0
        assert "aad-metadata" not in netns.node_exec("iptables", "-t", "nat", "-S", "PREROUTING").stdout
        assert netns.node_exec("cat", f"/proc/sys/{key}").stdout.strip() == "0"
        after = pod_request(netns, timeout=3)
        assert "status" not in after, after
        assert any(w in str(after["error"]) for w in ("refused", "unreachable", "No route")), after
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
