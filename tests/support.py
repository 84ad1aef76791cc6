"""Helpers for tests against a real cluster (the embedded local one, or any KUBECONFIG), and the one poll
helper every suite uses: :func:`eventually` (:func:`eventually_async` inside an event loop)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
#: the embedded cluster's state; NMISIM_CLUSTER_DIR gives a second one (hack/cluster.sh honours it too)
CLUSTER_DIR = Path(os.environ.get("NMISIM_CLUSTER_DIR") or ROOT / ".cluster")
LOCAL_KUBECONFIG = CLUSTER_DIR / "kubeconfig"


def kubectl_path() -> str:
    venv = Path(sys.executable).parent / "kubectl"
    if venv.exists():
        return str(venv)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make install`")
    return found


@dataclass
class Cluster:
    """A reachable cluster and how to talk to it."""

    kubeconfig: Path
    local: bool  # the embedded cluster from hack/cluster.sh (fault tests need it)
    kubectl_bin: str

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, check=False, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def cluster_sh(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not self.local:
            pytest.skip("needs the embedded local cluster (hack/cluster.sh)")
        return subprocess.run(
            [str(ROOT / "hack" / "cluster.sh"), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )


def token_kubeconfig(cluster: Cluster, path: Path, namespace: str, account: str) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a TokenRequest token), nothing else."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=4h").stdout.strip()
    server = cfg["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    return path


def install_crds(cluster: Cluster) -> None:
    """`kubectl apply -f crds/` and wait until every nmisim CRD is served, as the README says."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=nmisim",
        "--timeout=60s",
    )


#: what a predicate may raise to say "not yet" (a failed assertion or command, a missing key, a bad value)
NOT_YET = (AssertionError, subprocess.SubprocessError, KeyError, ValueError)


def _attempt(predicate: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        last = predicate()
    except NOT_YET as exc:
        return False, exc
    return bool(last), last


def _pauses(interval: float) -> Iterator[float]:
    """10 ms, then doubling up to ``interval``."""
    pause = min(0.01, interval)
    while True:
        yield pause
        pause = min(pause * 2, interval)


def _timed_out(timeout: float, what: str, predicate: Callable[[], Any], last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


def eventually(
    predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until predicate() is truthy; return its value or fail naming what was awaited (and the last
    value or :data:`NOT_YET` exception seen). Polls start 10 ms apart and back off to ``interval``."""
    deadline = time.monotonic() + timeout
    for pause in _pauses(interval):
        ok, last = _attempt(predicate)
        if ok:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, predicate, last)
        time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


async def eventually_async(
    predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.1, what: str = ""
) -> Any:
    """:func:`eventually` inside an event loop: the loop runs while it waits (a synchronous predicate)."""
    deadline = time.monotonic() + timeout
    for pause in _pauses(interval):
        ok, last = _attempt(predicate)
        if ok:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, predicate, last)
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


# --- objects to apply -------------------------------------------------------------------------------------


def pod(name: str, labels: dict[str, str] | None = None, host_network: bool = False) -> dict[str, Any]:
    """A Pod to apply (its image is never pulled: the operator's verdict needs no running container)."""
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def exception(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """An AzurePodIdentityException to apply."""
    return {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": name},
        "spec": {"podLabels": labels},
    }


def is_local_kubeconfig(kubeconfig: Path) -> bool:
    return kubeconfig.resolve() == LOCAL_KUBECONFIG.resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {'name{labels}': value} (comments dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


#: the operator's log line once the start-up LIST is loaded (Controller.seed): what it saw, what it queued
SEEDED = re.compile(
    r"seeded: (?P<pods>\d+) pods, (?P<exceptions>\d+) exceptions, (?P<verdicts>\d+) verdicts; "
    r"(?P<pending>\d+) writes pending"
)


def parse_seeded(log: str, start: int = 1) -> dict[str, int]:
    """The numbers of the ``start``-th "seeded:" line of an operator log; {} before that start seeded."""
    found = list(SEEDED.finditer(log))
    if len(found) < start:
        return {}
    return {k: int(v) for k, v in found[start - 1].groupdict().items()}


def caught_up(metrics: dict[str, float], pending: int) -> bool:
    """An operator is done with what seeding queued: every pending key reconciled, plus the first
    SimulationConfig totals check its status loop queues after seeding, and the queue empty when a worker
    last took from it (nmisim_reconcile_seconds counts reconciles that finished without error)."""
    done = metrics.get("nmisim_reconcile_seconds_count", 0)
    return done >= pending + 1 and metrics.get("nmisim_queue_depth", 0) == 0


class OperatorProcess:
    """``nmisim run`` as a real process against a cluster, with its log and /metrics."""

    def __init__(self, kubeconfig: Path, log: Path, *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.extra = extra
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        nmisim = Path(sys.executable).parent / "nmisim"
        cmd = [str(nmisim), "run", "--standalone", "--all-namespaces", f"--metrics-port={self.metrics_port}"]
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1}: {' '.join(cmd + list(self.extra))}\n".encode())
            self.proc = subprocess.Popen([*cmd, *self.extra], stdout=out, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        if wait:
            eventually(self.ready, timeout=60, what="operator seeded (see its log)")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}; log: {self.log}")
        text = self.log.read_text(errors="replace")
        return text.count("seeded:") >= self.starts

    def seeded(self) -> dict[str, int]:
        """This start's "seeded:" numbers (pods, exceptions, verdicts, pending); {} until it seeded."""
        return parse_seeded(self.log.read_text(errors="replace"), self.starts)

    def caught_up(self) -> bool:
        """Seeded, and done with every write seeding queued (see :func:`caught_up`)."""
        seeded = self.seeded()
        if not seeded:
            return False
        try:
            metrics = self.metrics()
        except OSError:  # /metrics not answering (yet)
            return False
        return caught_up(metrics, seeded["pending"])

    def stop(self, sig: int = 15, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def writes_by_kind(self) -> dict[str, int]:
        """Requests this process sent that were not reads (POST, PATCH, PUT, DELETE), by metric labels."""
        return writes_by_kind(self.metrics())

    def writes(self) -> int:
        return sum(self.writes_by_kind().values())

    def errors_in_log(self) -> list[str]:
        """Tracebacks and errors; not kopf's own "… failed; will retry" lines for requests it retries
        (for example 429 while a just-started API server initialises its watch cache)."""
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "Traceback" in line or ("[ERROR" in line and "will retry" not in line)
        ]


def writes_by_kind(metrics: dict[str, float]) -> dict[str, int]:
    """An operator's requests that were not reads (POST, PATCH, PUT, DELETE), by metric labels."""
    return {
        key.removeprefix("nmisim_api_requests_total"): int(value)
        for key, value in metrics.items()
        if key.startswith("nmisim_api_requests_total{") and 'verb="GET"' not in key and value
    }


@dataclass
class InClusterOperator:
    """The operator the manifests run (NMISIM_OPERATOR=external: one replica), its /metrics read through
    the API server's proxy to its running pod (not to the ``nmisim-metrics`` Service, which the Helm
    chart's test may have taken away with its release)."""

    cluster: Cluster

    def metrics(self) -> dict[str, float]:
        pods = self.cluster.get_json(
            "pods", "-n", "nmisim-system", "-l", "app.kubernetes.io/component=operator"
        )["items"]
        running = [
            p["metadata"]["name"]
            for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        assert len(running) == 1, f"one running operator pod expected, found {running}"
        path = f"/api/v1/namespaces/nmisim-system/pods/{running[0]}:9090/proxy/metrics"
        return parse_metrics(self.cluster.kubectl("get", "--raw", path).stdout)

    def writes(self) -> int:
        return sum(writes_by_kind(self.metrics()).values())


class _Writes(Protocol):
    def writes(self) -> int: ...


def settle(op: _Writes, quiet: float = 2.0, timeout: float = 60) -> None:
    """Wait until the operator has written nothing for ``quiet`` seconds (an operator in the cluster:
    :class:`InClusterOperator`)."""
    deadline = time.monotonic() + timeout
    last, since = op.writes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = op.writes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError("operator kept writing")
