"""`make bench-serve`: `nmisim serve` answering real pods through NMI's DNAT, against the floor.

On the embedded cluster's real node (started if none runs, stopped afterwards if started here), a pod of
`nmisim-clients:dev` runs `imdsload` (Go, keep-alive connections, as SDK clients use) at
169.254.169.254:80 in three cases: 1 client and 16 clients as fast as answered (closed loop), and
200 requests/s from 16 clients (open loop, latency from the scheduled send). The same cases run first
against the floor: a bare fixed-body HTTP server (Python asyncio, the agent's runtime, no parsing) on
127.0.0.1:2579 behind NMI's very rule, so both sides share the path: pod, bridge, PREROUTING DNAT,
loopback. Then the agent's memory with 1,000 pods on its node (a second `nmisim serve` on the host,
for a kwok node, `--ipt-disabled`; its pods gauge says when it holds them all).

    .venv/bin/python hack/bench_serve.py [--duration 10] [--pods 1000]

Writes .bench/serve.json and .bench/serve.png; prints each target met or MISSED. Every request is sent
from a pod's network namespace: nothing on the host sends to 169.254.169.254.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realpod import clients_pod

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(os.environ.get("NMISIM_CLUSTER_DIR") or ROOT / ".cluster")
KUBECONFIG = CLUSTER / "kubeconfig"
OUT = Path(os.environ.get("NMISIM_BENCH_OUT") or ROOT / ".bench")
BIN = Path(sys.executable).parent
NS = "nmisim-bench-serve"
NODE = "nmisim-node"
CHAIN = "aad-metadata"
NMI_PORT = 2579
TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
CASES = (("1 client", ["-c", "1"]), ("16 clients", ["-c", "16"]), ("200 req/s", ["-c", "16", "-rate", "200"]))
TARGETS = (
    "p50 1 client <= 2x floor",
    "p50 16 clients <= 2x floor",
    "p99 at 200 req/s <= 20 ms",
    "req/s 16 clients >= 1000",
    "agent RSS with 1,000 pods <= 100 MiB",
)


def say(msg: str) -> None:
    print(f"\033[1m[bench-serve]\033[0m {msg}", flush=True)


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    cmd = [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench-serve: kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def apply(objs: list[dict[str, Any]]) -> None:
    kubectl(
        "apply", "-n", NS, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-serve: timed out waiting for {what}")
        time.sleep(0.5)


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", "-t", "nat", *args], capture_output=True, text=True, check=check
    )


def chain_present() -> bool:
    return f"-N {CHAIN}" in iptables("-S").stdout


# ------------------------------------------------------------------------------------------- the floor
FLOOR_BODY = json.dumps(
    {"access_token": "x" * 180, "expires_in": "86399", "resource": "r", "token_type": "Bearer"}
)


def floor_server(port: int) -> None:
    """A bare HTTP/1.1 server: one fixed answer per request head, keep-alive, no parsing."""
    body = FLOOR_BODY.encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            n = self.buf.count(b"\r\n\r\n")
            if n:
                self.buf = self.buf[self.buf.rindex(b"\r\n\r\n") + 4 :]
                self.transport.write(answer * n)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port, reuse_address=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def floor_behind_nmis_rule() -> Iterator[None]:
    """The floor on 127.0.0.1:2579 and NMI's own rule in front of it; both gone afterwards."""
    if chain_present():
        raise SystemExit(f"bench-serve: nat chain {CHAIN} exists already (is an agent running?)")
    proc = subprocess.Popen([sys.executable, __file__, "--floor", str(NMI_PORT)])
    try:
        wait_for("the floor server", lambda: _listening(NMI_PORT), timeout=20)
        iptables("-N", CHAIN)
        iptables(
            "-A",
            CHAIN,
            "!",
            "-s",
            "127.0.0.1/32",
            "-d",
            "169.254.169.254/32",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            f"127.0.0.1:{NMI_PORT}",
        )
        iptables("-A", CHAIN, "-j", "RETURN")
        iptables("-A", "PREROUTING", "-j", CHAIN)
        yield
    finally:
        iptables("-D", "PREROUTING", "-j", CHAIN, check=False)
        iptables("-F", CHAIN, check=False)
        iptables("-X", CHAIN, check=False)
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Case:
    name: str
    floor: dict[str, Any]
    agent: dict[str, Any]


@dataclass
class Results:
    date: str
    duration_s: float
    cores: int | None
    cases: list[Case] = field(default_factory=list)
    agent_rss_mib: float = 0.0
    agent_peak_rss_mib: float = 0.0
    memory_pods: int = 0
    agent_serving_rss_mib: float = 0.0
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


def in_loader(*argv: str, check: bool = True, timeout: float = 120) -> str:
    """Run a command in the loader pod (its own network namespace, on the real node); its stdout."""
    return kubectl("exec", "-n", NS, "loader", "--", *argv, check=check, timeout=timeout)


def load(args: list[str], duration: int) -> dict[str, Any]:
    out = in_loader("imdsload", "-url", TOKEN_URL, "-d", f"{duration}s", *args, timeout=duration + 60)
    result: dict[str, Any] = json.loads(out)
    if result["errors"] or set(result["statuses"]) != {"200"}:
        raise SystemExit(
            f"bench-serve: not every answer was 200: {result['statuses']} {result.get('first_error')}"
        )
    return result


def run_cases(label: str, duration: int) -> list[dict[str, Any]]:
    results = []
    for name, args in CASES:
        r = load(args, duration)
        say(
            f"  {label:<6} {name:<11} {r['rps']:8.0f} req/s"
            f"   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
        )
        results.append(r)
    return results


def setup(pods: int) -> None:
    say("CRDs, SimulationConfig/default, the loader pod (bound to an identity) on the real node")
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=nmisim")
    kubectl("apply", "-f", str(ROOT / "manifests" / "simulationconfig.yaml"))
    kubectl("create", "namespace", NS, check=False)
    identity = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentity",
        "metadata": {"name": "bench"},
        "spec": {
            "type": 0,
            "clientID": "0b1c2d3e-0000-4000-8000-0000000be4c4",
            "resourceID": "/subscriptions/0/resourcegroups/rg/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/bench",
        },
    }
    binding = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": "bench"},
        "spec": {"azureIdentity": "bench", "selector": "bench"},
    }
    loader = clients_pod(
        "loader", {"aadpodidbinding": "bench"}, resources={"limits": {"cpu": "1", "memory": "128Mi"}}
    )
    apply([identity, binding, loader])
    kubectl("wait", "--for=condition=Ready", "pod/loader", "-n", NS, "--timeout=90s")


def agent_up() -> int:
    """The DaemonSet; the host pid of the real node's agent, once its rule is in place and it answers
    the loader."""
    kubectl("apply", "-k", str(ROOT / "manifests" / "nmi"))
    wait_for("the agent's rule", chain_present, timeout=120)

    def answers() -> bool:
        out = in_loader(
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Metadata:true",
            TOKEN_URL,
            check=False,
        )
        return out == "200"

    wait_for("the agent to answer the loader", answers, timeout=60)
    pids = [p for p in _pids("nmisim serve") if _in_agent_container(p)]
    if len(pids) != 1:
        raise SystemExit(f"bench-serve: expected one agent process on the host, found {pids}")
    return pids[0]


def agent_down() -> None:
    kubectl("delete", "-k", str(ROOT / "manifests" / "nmi"), "--wait=true", "--ignore-not-found", timeout=180)
    wait_for("the agent's rule gone", lambda: not chain_present(), timeout=60)


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _in_agent_container(pid: int) -> bool:
    with suppress(OSError):
        return "kubepods" in Path(f"/proc/{pid}/cgroup").read_text()
    return False


def rss_mib(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    vals = {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]
    return round(vals["VmRSS"] / 1024, 1), round(vals["VmHWM"] / 1024, 1)


def memory_with_pods(pods: int) -> tuple[float, float]:
    """A second agent (on the host, no rules) for a kwok node holding ``pods`` pods: its RSS once it
    holds them all."""
    nodes = json.loads(kubectl("get", "nodes", "-l", "type=kwok", "-o", "json"))["items"]
    node = nodes[0]["metadata"]["name"] if nodes else "kwok-node-1"
    say(f"{pods} pods on {node} (a kwok node), a quarter of them bound")
    items = []
    for i in range(pods):
        labels = {"aadpodidbinding": "bench"} if i % 4 == 0 else {"app": f"app-{i % 50}"}
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"mem-{i:05d}", "labels": labels},
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "c", "image": "registry.invalid/none"}],
                    "tolerations": [{"operator": "Exists"}],
                },
            }
        )
    for start in range(0, pods, 250):
        apply(items[start : start + 250])

    def running() -> bool:
        got = json.loads(
            kubectl("get", "pods", "-n", NS, "--field-selector", f"spec.nodeName={node}", "-o", "json")
        )
        return sum(1 for p in got["items"] if p.get("status", {}).get("podIP")) >= pods

    wait_for(f"{pods} pods with IPs", running, timeout=300)
    ports = [_free_port() for _ in range(3)]
    cmd = [
        str(BIN / "nmisim"),
        "serve",
        "--kubeconfig",
        str(KUBECONFIG),
        "--node",
        node,
        "--ipt-disabled",
        "--allow-network-plugin-kubenet",
        "--nmi-port",
        str(ports[0]),
        "--http-probe-port",
        str(ports[1]),
        "--probe-listen-address",
        "127.0.0.1",
        "--prometheus-port",
        str(ports[2]),
        "--prometheus-listen-address",
        "127.0.0.1",
    ]
    log = (OUT / "serve-memory-agent.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:

        def holds_all() -> bool:
            return _pods_gauge(ports[2]) >= pods

        wait_for(f"the agent to hold {pods} pods", holds_all, timeout=120)
        samples = []
        for _ in range(10):
            samples.append(rss_mib(proc.pid))
            time.sleep(0.5)
        return samples[-1][0], max(s[1] for s in samples)
    finally:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pods_gauge(port: int) -> int:
    import urllib.request  # noqa: PLC0415

    with suppress(OSError):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        m = re.search(r'^nmisim_serve_objects\{kind="Pod"\} (\d+)$', text, re.M)
        return int(m.group(1)) if m else 0
    return 0


def judge(r: Results) -> None:
    by = {c.name: c for c in r.cases}
    one, many, rate = by["1 client"], by["16 clients"], by["200 req/s"]
    values = (
        (one.agent["p50_ms"], 2 * one.floor["p50_ms"], "<="),
        (many.agent["p50_ms"], 2 * many.floor["p50_ms"], "<="),
        (rate.agent["p99_ms"], 20.0, "<="),
        (many.agent["rps"], 1000.0, ">="),
        (r.agent_rss_mib, 100.0, "<="),
    )
    for name, (value, target, op) in zip(TARGETS, values, strict=True):
        met = value <= target if op == "<=" else value >= target
        r.targets[name] = {"value": round(value, 2), "target": round(target, 2), "met": met}


def plot(r: Results, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(r.cases) + 1, figsize=(18, 4.6))
    for ax, case in zip(axes, r.cases, strict=False):
        for side, label in ((case.floor, "floor (bare server)"), (case.agent, "nmisim serve")):
            xs = side["sample_ms"]
            ax.plot(
                xs,
                [(i + 1) / len(xs) for i in range(len(xs))],
                label=f"{label}: p50 {side['p50_ms']:.2f}, p99 {side['p99_ms']:.2f} ms",
            )
        ax.set(title=f"{case.name}: latency CDF", xlabel="ms", ylabel="fraction", xscale="log")
        ax.legend(fontsize=8)
    ax = axes[-1]
    names = [c.name for c in r.cases]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [c.floor["rps"] for c in r.cases], 0.4, label="floor")
    ax.bar([x + 0.2 for x in xs], [c.agent["rps"] for c in r.cases], 0.4, label="nmisim serve")
    ax.set_xticks(list(xs), names)
    ax.set(title="requests/s", ylabel="requests/s")
    ax.legend()
    fig.suptitle(
        f"nmisim serve through NMI's DNAT from a real pod ({r.cores} cores, {r.date}); "
        f"agent RSS {r.agent_rss_mib} MiB with {r.memory_pods} pods on its node"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cluster_running() -> bool:
    return (
        KUBECONFIG.exists()
        and subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "get", "node", NODE],
            capture_output=True,
            check=False,
            timeout=30,
        ).returncode
        == 0
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="hack/bench_serve.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10, help="seconds per case (default 10)")
    ap.add_argument("--pods", type=int, default=1000, help="pods on the memory agent's node (default 1000)")
    ap.add_argument("--floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor:
        floor_server(args.floor)
        return 0
    if os.geteuid() != 0:
        print("bench-serve: needs root (the real node, iptables)", file=sys.stderr)
        return 2
    started_here = not cluster_running()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "NMISIM_REAL_NODE": "1"}
    if started_here:
        say("starting the embedded cluster with its real node (hack/cluster.sh up)")
        subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up"], check=True, env=env)
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    r = Results(date=time.strftime("%Y-%m-%d"), duration_s=0, cores=os.cpu_count())
    try:
        agent_down()
        setup(args.pods)
        say(f"floor: a bare server behind NMI's rule, {args.duration} s per case")
        with floor_behind_nmis_rule():
            floors = run_cases("floor", args.duration)
        say("nmisim serve (manifests/nmi/) on the real node")
        pid = agent_up()
        agents = run_cases("agent", args.duration)
        r.agent_serving_rss_mib = rss_mib(pid)[0]
        r.cases = [Case(name, f, a) for (name, _), f, a in zip(CASES, floors, agents, strict=True)]
        agent_down()
        r.memory_pods = args.pods
        r.agent_rss_mib, r.agent_peak_rss_mib = memory_with_pods(args.pods)
    finally:
        agent_down()
        kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
        if started_here:
            subprocess.run([str(ROOT / "hack" / "cluster.sh"), "down"], check=False, env=env)
    r.duration_s = round(time.monotonic() - t0, 1)
    judge(r)
    (OUT / "serve.json").write_text(json.dumps(asdict(r), indent=2))
    plot(r, OUT / "serve.png")
    print()
    for name, t in r.targets.items():
        word = "\033[32mmet\033[0m" if t["met"] else "\033[31mMISSED\033[0m"
        print(f"  {name:<40} {t['value']:>9} (target {t['target']})  {word}")
    say(
        f"agent RSS while serving {r.agent_serving_rss_mib} MiB; "
        f"with {r.memory_pods} pods {r.agent_rss_mib} MiB "
        f"(peak {r.agent_peak_rss_mib})"
    )
    say(f"wrote {OUT / 'serve.json'} and {OUT / 'serve.png'} in {r.duration_s} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
