#!/usr/bin/env python3
"""`make bench`: nmisim on the embedded cluster, measured against the API server's own limits.

Every figure sits beside the same work done by a bare client in the same run. Writes are counted from
kube-apiserver's audit log (the operator's own user), not from the operator's bookkeeping.

    .venv/bin/python hack/bench.py [--tier S|M] [--keep-cluster]

Phases: a cluster of its own (.cluster-bench, audit log on), generated namespaces/exceptions/identities/
pods, the bare client's writes, the operator's cold start, no-op updates, verdict changes at 20/s
(freshness), exception fan-out over 1,000 pods, a restart, and the engine benchmark. Writes
.bench/results.json, .bench/report.png and prints which targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# The kubernetes client reads KUBECONFIG when it is imported: point it at the bench's own cluster first.
CLUSTER = Path(
    os.environ.get("NMISIM_BENCH_CLUSTER") or Path(__file__).resolve().parent.parent / ".cluster-bench"
)
os.environ["KUBECONFIG"] = str(CLUSTER / "kubeconfig")

import aiohttp
import kopf
import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nmisim.controller.api import KubeAPI, ssl_context
from nmisim.controller.status import semantic, verdict_status
from nmisim.engine.models import (
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    PodIdentityException,
)
from nmisim.engine.world import World

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("NMISIM_BENCH_OUT") or ROOT / ".bench")
KUBECTL = str(ROOT / ".venv" / "bin" / "kubectl")
NMISIM = str(ROOT / ".venv" / "bin" / "nmisim")
OPERATOR_USER = "system:serviceaccount:nmisim-system:nmisim"
# tier: (pods, namespaces, pods under one exception for the fan-out, seconds of label changes)
TIERS = {"XS": (60, 6, 50, 3.0), "S": (1_000, 50, 1_000, 30.0), "M": (10_000, 500, 1_000, 30.0)}
CHANGE_RATE = 20.0  # label changes per second (freshness)
TARGETS = {
    "cold_ratio": ("<=", 1.5),
    "freshness_p50_ms": ("<=", 300),
    "freshness_p99_ms": ("<=", 2000),
    "fanout_s": ("<=", 10),
    "writes_per_noop": ("==", 0),
    "writes_per_change": ("<=", 2),
    "restart_writes": ("==", 0),
    "rss_steady_mib": ("<=", 250),
    "rss_peak_over_steady": ("<=", 1.5),
    "http_429": ("==", 0),
}
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: Metadata
"""


def say(msg: str) -> None:
    print(f"\033[1m[bench]\033[0m {msg}", flush=True)


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.monotonic()
        self._last = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        tty = sys.stdout.isatty()
        if now - self._last < (0.2 if tty else 5.0) and done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total) if self.total else width
        line = (
            f"  {self.label:<34} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
            f"  {now - self.t0:5.1f}s"
        )
        if tty:
            sys.stdout.write("\r" + line + ("\n" if done >= self.total else ""))
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()


def kubectl(*args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(CLUSTER / "kubeconfig")}
    return subprocess.run(
        [KUBECTL, *args], input=input, capture_output=True, text=True, check=True, env=env
    ).stdout


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


# --- the cluster and what is on it ---------------------------------------------------------------------


def cluster_up() -> None:
    CLUSTER.mkdir(exist_ok=True)
    (CLUSTER / "audit-policy.yaml").write_text(AUDIT_POLICY)
    env = {
        **os.environ,
        "NMISIM_CLUSTER_DIR": str(CLUSTER),
        "NMISIM_APISERVER_EXTRA_ARGS": (
            f"--audit-policy-file={CLUSTER / 'audit-policy.yaml'} --audit-log-path={CLUSTER / 'audit.log'}"
            " --audit-log-maxsize=2000 --audit-log-maxbackup=1"
        ),
    }
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up"], check=True, env=env)


def cluster_down() -> None:
    env = {**os.environ, "NMISIM_CLUSTER_DIR": str(CLUSTER)}
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "down"], check=False, env=env)


@dataclass
class Workload:
    namespaces: list[str]
    objects: list[dict[str, Any]]  # exceptions, identities, bindings (namespaced)
    pods: list[dict[str, Any]]
    flip: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (ns, pod, label that an exception matches)


def generate(n_pods: int, n_ns: int, fanout: int, seed: int = 7) -> Workload:
    rnd = random.Random(seed)
    namespaces = [f"bench-{i:03d}" for i in range(n_ns)]
    objects: list[dict[str, Any]] = []
    for i, ns in enumerate(namespaces):
        for j in range(rnd.randint(1, 5)):
            objects.append(
                {
                    "apiVersion": "aadpodidentity.k8s.io/v1",
                    "kind": "AzurePodIdentityException",
                    "metadata": {"name": f"exc-{j}", "namespace": ns},
                    "spec": {"podLabels": {"team": f"team-{j}", f"extra-{j}": "Yes"}},
                }
            )
        objects.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentity",
                "metadata": {"name": "app-id", "namespace": ns},
                "spec": {
                    "type": 0,
                    "clientID": f"{i:08d}-0000-0000-0000-000000000000",
                    "resourceID": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/b"
                    f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{ns}",
                },
            }
        )
        objects.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentityBinding",
                "metadata": {"name": "app-binding", "namespace": ns},
                "spec": {"azureIdentity": "app-id", "selector": f"{ns}-app"},
            }
        )
    pods: list[dict[str, Any]] = []
    flip: list[tuple[str, str, str]] = []
    for k in range(n_pods):
        ns = namespaces[k % n_ns]
        name = f"pod-{k:05d}"
        labels = {"app": f"app-{k % 13}"}
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "registry.invalid/bench:1"}]}
        r = rnd.random()
        if r < 0.3:
            labels["team"] = "TEAM-0"  # exempt by exc-0 (values compare case-insensitively)
        elif r < 0.6:
            labels["aadpodidbinding"] = f"{ns}-app"
        elif r < 0.65:
            spec["hostNetwork"] = True
        else:
            flip.append((ns, name, "team"))  # intercepted and denied; flips to exempt with team=team-0
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": spec,
            }
        )
    fan_ns = "bench-fanout"
    namespaces.append(fan_ns)
    for k in range(fanout):
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"fan-{k:04d}", "namespace": fan_ns, "labels": {"fanout": "yes"}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/bench:1"}]},
            }
        )
    return Workload(namespaces, objects, pods, flip)


def api_path(obj: dict[str, Any], name: bool = False) -> str:
    group_version = obj["apiVersion"]
    kind = obj["kind"]
    plural = {
        "Pod": "pods",
        "AzurePodIdentityException": "azurepodidentityexceptions",
        "AzureIdentity": "azureidentities",
        "AzureIdentityBinding": "azureidentitybindings",
    }[kind]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{obj['metadata']['namespace']}/{plural}"
    return f"{path}/{obj['metadata']['name']}" if name else path


async def gather_limited(
    items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]], label: str, total: int, limit: int = 48
) -> list[Any]:
    sem = asyncio.Semaphore(limit)
    prog = Progress(label, total)
    done = 0
    results: list[Any] = []

    async def one(item: Any) -> None:
        nonlocal done
        async with sem:
            results.append(await fn(item))
        done += 1
        prog.update(done)

    await asyncio.gather(*(one(i) for i in items))
    prog.update(total)
    return results


async def create(api: KubeAPI, obj: dict[str, Any], path: str | None = None) -> None:
    """POST, retried until the API server has it (201, or 409: already there from an earlier try)."""
    err = ""
    for attempt in range(10):
        try:
            resp = await api.request("POST", path or api_path(obj), obj)
        except (aiohttp.ClientError, TimeoutError) as exc:
            err = str(exc)
        else:
            if resp.ok or resp.status == 409:
                return
            err = f"HTTP {resp.status}: {resp.message}"
        await asyncio.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"cannot create {obj['kind']} {obj['metadata'].get('name')}: {err}")


# --- watching ---------------------------------------------------------------------------------------------


class Watcher:
    """Streams a watch and records, per object, when it was first seen satisfying a predicate."""

    def __init__(self, info: Any, path: str) -> None:
        self.info, self.path = info, path
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.callbacks: list[Callable[[float, str, dict[str, Any]], None]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, api: KubeAPI) -> None:
        resp = await api.request("GET", f"{self.path}?limit=1")
        rv = resp.body["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        headers = {"User-Agent": "nmisim-bench-watcher", **self.info.as_http_headers()}
        conn = aiohttp.TCPConnector(ssl=ssl_context(self.info))
        async with aiohttp.ClientSession(headers=headers, connector=conn) as s:
            while True:
                url = f"{self.info.server}{self.path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                    async for line in resp.content:
                        now = time.monotonic()
                        ev = json.loads(line)
                        obj = ev["object"]
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            for cb in self.callbacks:
                                cb(now, ev["type"], obj)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


# --- the operator and its audit trail ------------------------------------------------------------------


class Operator:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: list[tuple[float, float]] = []  # (time, MiB)
        self._sampler: asyncio.Task[None] | None = None
        self.log = CLUSTER / "logs" / "bench-operator.log"

    def start(self) -> float:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        out = self.log.open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [NMISIM, "run", "--standalone", "--all-namespaces", "--metrics-port=0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        return t0

    async def _sample(self) -> None:
        assert self.proc is not None
        while self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append((time.monotonic(), int(line.split()[1]) / 1024))
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(150):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
        if self._sampler:
            self._sampler.cancel()


async def quiesce(audit: Audit, quiet: float = 3.0, timeout: float = 300.0) -> float:
    """Wait until the operator has written nothing for `quiet` seconds; the seconds it took."""
    t0 = time.monotonic()
    audit.mark()
    last_change = time.monotonic()
    while time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.5)
        if Audit.writes(audit.since_mark()):
            audit.mark()
            last_change = time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return round(last_change - t0, 2)
    raise RuntimeError("the operator kept writing")


class Audit:
    """Counts the operator's writes from kube-apiserver's audit log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self, user: str = OPERATOR_USER) -> list[dict[str, Any]]:
        out = []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("user", {}).get("username") == user and ev.get("stage") == "ResponseComplete":
                    out.append(ev)
        return out

    @staticmethod
    def writes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["verb"] in ("create", "update", "patch", "delete", "deletecollection")]


def token_kubeconfig() -> Path:
    cfg = yaml.safe_load((CLUSTER / "kubeconfig").read_text())
    token = kubectl("create", "token", "nmisim", "-n", "nmisim-system", "--duration=6h").strip()
    path = CLUSTER / "operator.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cfg["clusters"][0]["cluster"]}],
                "users": [{"name": "nmisim", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nmisim"}}],
                "current-context": "c",
            }
        )
    )
    return path


def login() -> Any:
    os.environ["KUBECONFIG"] = str(CLUSTER / "kubeconfig")
    return kopf.login_via_client(logger=logging.getLogger("bench"), settings=kopf.OperatorSettings())


# --- the run --------------------------------------------------------------------------------------------


async def run(tier: str) -> dict[str, Any]:
    n_pods, n_ns, fanout, change_seconds = TIERS[tier]
    results: dict[str, Any] = {"tier": tier, "pods": n_pods, "namespaces": n_ns, "fanoutPods": fanout}
    series: dict[str, Any] = {}
    say(f"tier {tier}: {n_pods} pods in {n_ns} namespaces (+{fanout} fan-out pods); cluster in {CLUSTER}")
    cluster_up()
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=nmisim")
    for f in ("namespace", "serviceaccount", "rbac", "simulationconfig"):
        kubectl("apply", "-f", str(ROOT / "manifests" / f"{f}.yaml"))
    info = login()
    setup = KubeAPI(info, concurrency=48, qps=0)
    work = generate(n_pods, n_ns, fanout)

    say("creating the workload")
    await gather_limited(
        work.namespaces,
        lambda ns: create(
            setup, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, "/api/v1/namespaces"
        ),
        "namespaces",
        len(work.namespaces),
    )
    await gather_limited(
        work.objects,
        lambda o: create(setup, o),
        "exceptions, identities, bindings",
        len(work.objects),
    )
    await gather_limited(work.pods, lambda o: create(setup, o), "pods", len(work.pods))
    prog = Progress("pods running (kwok)", len(work.pods))
    while True:
        pods = [
            p
            for p in await setup.list_all("/api/v1/pods", limit=1000)
            if p["metadata"]["namespace"].startswith("bench")
        ]
        running = sum(1 for p in pods if p.get("status", {}).get("podIP"))
        prog.update(running)
        if running >= len(work.pods):
            break
        await asyncio.sleep(1)

    # What every verdict must say: the engine on the objects as the API server holds them.
    world = World()
    for o in await setup.list_all("/apis/aadpodidentity.k8s.io/v1/azurepodidentityexceptions", limit=1000):
        world.upsert(PodIdentityException.from_k8s(o))
    for o in await setup.list_all("/apis/aadpodidentity.k8s.io/v1/azureidentities", limit=1000):
        world.upsert(AzureIdentity.from_k8s(o))
    for o in await setup.list_all("/apis/aadpodidentity.k8s.io/v1/azureidentitybindings", limit=1000):
        world.upsert(AzureIdentityBinding.from_k8s(o))
    pod_models = [Pod.from_k8s(p) for p in pods]
    for p in pod_models:
        world.upsert(p)
    expected: dict[tuple[str, str], str] = {}
    statuses: dict[tuple[str, str], dict[str, Any]] = {}
    for p in pod_models:
        st = verdict_status(world.evaluate(p), p)
        statuses[(p.namespace, p.name)] = st
        expected[(p.namespace, p.name)] = semantic(st)
    results["verdictMix"] = dict(
        sorted(
            {
                v: sum(1 for s in statuses.values() if s["verdict"] == v)
                for v in ("intercepted", "exempt", "bypass", "inactive")
            }.items()
        )
    )

    # --- the bare client: the same writes (create, status, Event; same sizes), no logic --------------
    say("bare client: the operator's writes, without the operator")
    bare_ns = "bench-bare"
    await setup.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": bare_ns}}
    )
    # The operator's own defaults (nmisim run --concurrency 16 --api-qps 200 --api-burst 400).
    bare = KubeAPI(info, concurrency=16, qps=200.0, burst=400)
    bare_done: list[float] = []
    t_bare = time.monotonic()

    async def bare_write(item: tuple[tuple[str, str], dict[str, Any]]) -> None:
        (ns, name), st = item
        vname = f"{ns}.{name}"
        body = {
            "apiVersion": "nmisim.dev/v1alpha1",
            "kind": "NMIVerdict",
            "metadata": {
                "name": vname,
                "namespace": bare_ns,
                "labels": {"app.kubernetes.io/managed-by": "nmisim"},
            },
            "spec": {},
        }
        base = f"/apis/nmisim.dev/v1alpha1/namespaces/{bare_ns}/nmiverdicts"
        await bare.request("POST", base, body)
        await bare.request(
            "POST",
            f"/api/v1/namespaces/{bare_ns}/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{vname}.1", "namespace": bare_ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": bare_ns},
                "reason": "IMDSDenied",
                "type": "Warning",
                "source": {"component": "nmisim-bare"},
                "message": "x" * 200,
                "count": 1,
            },
        )
        await bare.request(
            "PATCH",
            f"{base}/{vname}/status",
            {
                "status": {
                    **st,
                    "observedPodResourceVersion": "1",
                    "transitions": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            },
            content_type="application/merge-patch+json",
        )
        bare_done.append(time.monotonic() - t_bare)

    await gather_limited(
        list(statuses.items()), bare_write, "bare writes (3 per pod)", len(statuses), limit=16
    )
    results["bare_write_s"] = round(time.monotonic() - t_bare, 2)
    series["bare_done"] = sorted(bare_done)
    await bare.close()
    await setup.request("DELETE", f"/api/v1/namespaces/{bare_ns}")
    while (await setup.request("GET", f"/api/v1/namespaces/{bare_ns}")).status != 404:
        await asyncio.sleep(0.5)  # gone before the operator starts, or it would clean up after us

    # --- cold start --------------------------------------------------------------------------------------
    say("operator cold start: every NMIVerdict correct")
    audit = Audit(CLUSTER / "audit.log")
    verdict_seen: dict[tuple[str, str], float] = {}
    verdict_state: dict[tuple[str, str], str] = {}
    watcher = Watcher(info, "/apis/nmisim.dev/v1alpha1/nmiverdicts")

    def on_verdict(now: float, kind: str, obj: dict[str, Any]) -> None:
        k = key_of(obj)
        state = "" if kind == "DELETED" else semantic(obj.get("status"))
        verdict_state[k] = state
        if k in expected and state == expected[k] and k not in verdict_seen:
            verdict_seen[k] = now

    watcher.callbacks.append(on_verdict)
    await watcher.start(setup)
    op = Operator(token_kubeconfig())
    t0 = op.start()
    prog = Progress("verdicts correct", len(expected))
    while len(verdict_seen) < len(expected):
        prog.update(len(verdict_seen))
        if op.proc and op.proc.poll() is not None:
            raise RuntimeError(f"operator exited; see {op.log}")
        await asyncio.sleep(0.2)
    prog.update(len(expected))
    results["cold_s"] = round(max(verdict_seen.values()) - t0, 2)
    results["cold_ratio"] = round(results["cold_s"] / results["bare_write_s"], 2)
    series["cold_done"] = sorted(t - t0 for t in verdict_seen.values())
    # The verdicts are right; the rest (exception status, totals) follows. Count it all, then go on from
    # a quiet operator, so that the next phases count only their own writes.
    cold_audit = Audit(audit.path)
    cold_audit.offset = audit.offset
    results["cold_tail_s"] = await quiesce(audit)
    cold_writes = Audit.writes(cold_audit.since_mark())
    results["cold_writes"] = len(cold_writes)
    results["cold_writes_by_resource"] = by_resource(cold_writes, 1)
    results["api_qps_peak"] = peak_rate(cold_writes)

    # --- no-op updates: annotations on pods cannot change a verdict --------------------------------------
    say("no-op pod updates")
    await quiesce(audit)
    audit.mark()
    sample = random.Random(1).sample(pod_models, min(500, len(pod_models)))

    async def annotate(p: Pod) -> None:
        await setup.request(
            "PATCH",
            f"/api/v1/namespaces/{p.namespace}/pods/{p.name}",
            {"metadata": {"annotations": {"bench.nmisim.dev/touch": str(time.time())}}},
            content_type="application/merge-patch+json",
        )

    await gather_limited(sample, annotate, "annotate pods", len(sample), limit=16)
    await asyncio.sleep(5)
    noop_writes = Audit.writes(audit.since_mark())
    results["writes_per_noop"] = round(len(noop_writes) / len(sample), 3)

    # --- verdict changes at 20/s: freshness beside the watch itself ----------------------------------
    say(f"verdict changes at {CHANGE_RATE:g}/s for {change_seconds:g}s: freshness")
    await quiesce(audit)
    audit.mark()
    pod_watch = Watcher(info, "/api/v1/pods")
    pending_pod: dict[tuple[str, str], tuple[float, str]] = {}  # key -> (accepted, expected team label)
    pending_verdict: dict[tuple[str, str], tuple[float, str]] = {}
    watch_lat: list[float] = []
    fresh_lat: list[float] = []

    def on_pod(now: float, kind: str, obj: dict[str, Any]) -> None:
        k = key_of(obj)
        if k in pending_pod and obj["metadata"].get("labels", {}).get("team", "") == pending_pod[k][1]:
            watch_lat.append(now - pending_pod.pop(k)[0])

    def on_verdict_change(now: float, kind: str, obj: dict[str, Any]) -> None:
        k = key_of(obj)
        if k in pending_verdict and (obj.get("status") or {}).get("verdict") == pending_verdict[k][1]:
            fresh_lat.append(now - pending_verdict.pop(k)[0])

    pod_watch.callbacks.append(on_pod)
    watcher.callbacks.append(on_verdict_change)
    await pod_watch.start(setup)
    flips = work.flip[:]
    random.Random(3).shuffle(flips)
    n_changes = min(int(CHANGE_RATE * change_seconds), 2 * len(flips))
    state: dict[tuple[str, str], bool] = {}
    prog = Progress("label changes", n_changes)
    t_start = time.monotonic()
    tasks = []

    async def change(i: int) -> None:
        ns, name, _ = flips[i % len(flips)]
        k = (ns, name)
        exempt = not state.get(k, False)
        state[k] = exempt
        label = "team-0" if exempt else None
        await setup.request(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}",
            {"metadata": {"labels": {"team": label}}},
            content_type="application/merge-patch+json",
        )
        accepted = time.monotonic()
        pending_pod[k] = (accepted, label or "")
        pending_verdict[k] = (accepted, "exempt" if exempt else "intercepted")

    for i in range(n_changes):
        await asyncio.sleep(max(0.0, t_start + i / CHANGE_RATE - time.monotonic()))
        tasks.append(asyncio.create_task(change(i)))
        prog.update(i + 1)
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 30
    while (pending_verdict or pending_pod) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)
    change_writes = Audit.writes(audit.since_mark())
    results["changes"] = n_changes
    results["writes_per_change"] = round(len(change_writes) / n_changes, 3)
    results["writes_per_change_by_resource"] = by_resource(change_writes, n_changes)
    results["freshness_p50_ms"] = round(percentile(fresh_lat, 50) * 1000)
    results["freshness_p99_ms"] = round(percentile(fresh_lat, 99) * 1000)
    results["watch_p50_ms"] = round(percentile(watch_lat, 50) * 1000)
    results["watch_p99_ms"] = round(percentile(watch_lat, 99) * 1000)
    results["freshness_vs_watch_p50"] = round(
        results["freshness_p50_ms"] / max(results["watch_p50_ms"], 1), 2
    )
    results["freshness_lost"] = len(pending_verdict)
    series["freshness_ms"] = [x * 1000 for x in fresh_lat]
    series["watch_ms"] = [x * 1000 for x in watch_lat]
    await pod_watch.stop()
    # put the flipped pods back
    for k, exempt in state.items():
        if exempt:
            await setup.request(
                "PATCH",
                f"/api/v1/namespaces/{k[0]}/pods/{k[1]}",
                {"metadata": {"labels": {"team": None}}},
                content_type="application/merge-patch+json",
            )

    # --- fan-out: one exception, 1,000 pods -------------------------------------------------------------
    say(f"fan-out: an exception over {fanout} pods, created then deleted")
    fan = {k for k in expected if k[0] == "bench-fanout"}

    async def wait_fan(verdict: str) -> float:
        t = time.monotonic()
        while True:
            done = sum(1 for k in fan if json.loads(verdict_state.get(k) or "{}").get("verdict") == verdict)
            if done == len(fan):
                return time.monotonic() - t
            await asyncio.sleep(0.05)

    exc = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": "fanout", "namespace": "bench-fanout"},
        "spec": {"podLabels": {"fanout": "YES"}},
    }
    t_fan = time.monotonic()
    await setup.request("POST", api_path(exc), exc)
    create_s = await wait_fan("exempt")
    await setup.request("DELETE", api_path(exc, name=True))
    delete_s = await wait_fan("intercepted")
    results["fanout_create_s"] = round(create_s, 2)
    results["fanout_delete_s"] = round(delete_s, 2)
    results["fanout_s"] = round(time.monotonic() - t_fan, 2)

    # --- steady memory, then a restart with nothing changed -----------------------------------------
    await asyncio.sleep(5)
    steady = [m for t, m in op.rss if t > time.monotonic() - 5]
    results["rss_steady_mib"] = round(statistics.median(steady), 1) if steady else None
    results["rss_peak_mib"] = round(max(m for _, m in op.rss), 1)
    results["rss_peak_over_steady"] = round(results["rss_peak_mib"] / results["rss_steady_mib"], 2)
    series["rss"] = [(t - t0, m) for t, m in op.rss]
    say("restart with nothing changed")
    await op.stop()
    audit.mark()
    op2 = Operator(op.kubeconfig)
    op2.start()
    seeded_before = op.log.read_text(errors="replace").count("seeded:")
    t_restart = time.monotonic()
    while op.log.read_text(errors="replace").count("seeded:") <= seeded_before:
        if time.monotonic() - t_restart > 120:
            raise RuntimeError(f"restarted operator did not seed; see {op.log}")
        await asyncio.sleep(0.2)
    results["restart_seeded_s"] = round(time.monotonic() - t_restart, 2)
    await asyncio.sleep(10)  # every object seen, every key compared
    results["restart_writes"] = len(Audit.writes(audit.since_mark()))
    await op2.stop()
    await watcher.stop()

    # --- 429s anywhere in the run -------------------------------------------------------------------
    all_ops = Audit(CLUSTER / "audit.log")
    all_ops.offset = 0
    mine = all_ops.since_mark()
    results["http_429"] = sum(1 for e in mine if e.get("responseStatus", {}).get("code") == 429)
    await setup.close()
    return {"results": results, "series": series}


def by_resource(writes: list[dict[str, Any]], per: int) -> dict[str, float]:
    counts: dict[str, int] = {}
    for e in writes:
        ref = e.get("objectRef", {})
        name = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{e['verb']} {name}"] = counts.get(f"{e['verb']} {name}", 0) + 1
    return {k: round(v / per, 3) for k, v in sorted(counts.items())}


def peak_rate(writes: list[dict[str, Any]]) -> int:
    secs: dict[int, int] = {}
    for e in writes:
        ts = datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        secs[int(ts)] = secs.get(int(ts), 0) + 1
    return max(secs.values(), default=0)


def engine_bench() -> dict[str, Any]:
    say("engine: nmisim evaluate throughput, indexed vs naive")
    path = OUT / "engine.json"
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bench_engine.py"), "--pods", "100000", "--json", str(path)],
        check=True,
    )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def verdict_of(value: Any, op: str, target: float) -> bool:
    if value is None:
        return False
    return {"<=": value <= target, "==": value == target}[op]


def plot(doc: dict[str, Any]) -> None:
    s, r = doc["series"], doc["results"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    for name, label in (
        ("bare_done", f"bare client ({r['bare_write_s']} s)"),
        ("cold_done", f"nmisim cold start ({r['cold_s']} s)"),
    ):
        xs = s.get(name, [])
        ax.plot(xs, range(1, len(xs) + 1), label=label)
    ax.set(title="Convergence: pods done over time", xlabel="seconds", ylabel="pods")
    ax.legend()
    ax = axes[1]
    for name, label in (
        ("watch_ms", "pod change seen by a watcher"),
        ("freshness_ms", "NMIVerdict updated (nmisim)"),
    ):
        xs = sorted(s.get(name, []))
        if xs:
            ax.plot(xs, [i / len(xs) for i in range(1, len(xs) + 1)], label=label)
    ax.set(
        title=f"Freshness at {CHANGE_RATE:g} changes/s (CDF)",
        xlabel="ms after the API accepted the change",
        ylabel="fraction",
        xscale="log",
    )
    ax.legend()
    ax = axes[2]
    rss = s.get("rss", [])
    ax.plot([t for t, _ in rss], [m for _, m in rss])
    ax.set(title="Operator resident memory", xlabel="seconds since start", ylabel="MiB")
    fig.suptitle(
        f"nmisim benchmark, tier {r['tier']}: {r['pods']} pods in {r['namespaces']} namespaces "
        f"(+{r['fanoutPods']} fan-out), {os.cpu_count()} cores"
    )
    fig.tight_layout()
    fig.savefig(OUT / "report.png", dpi=110)


def summary(doc: dict[str, Any]) -> None:
    r = doc["results"]
    print("\n\033[1mnmisim benchmark\033[0m", f"tier {r['tier']}")
    rows = [
        ("cold_s / bare_write_s", f"{r['cold_s']} s / {r['bare_write_s']} s", "cold_ratio"),
        ("freshness p50 / p99", f"{r['freshness_p50_ms']} / {r['freshness_p99_ms']} ms", "freshness_p50_ms"),
        ("", "", "freshness_p99_ms"),
        ("watch p50 / p99 (floor)", f"{r['watch_p50_ms']} / {r['watch_p99_ms']} ms", None),
        ("fan-out create + delete", f"{r['fanout_create_s']} + {r['fanout_delete_s']} s", "fanout_s"),
        ("writes per no-op update", str(r["writes_per_noop"]), "writes_per_noop"),
        ("writes per verdict change", str(r["writes_per_change"]), "writes_per_change"),
        ("writes after restart", str(r["restart_writes"]), "restart_writes"),
        ("RSS steady / peak", f"{r['rss_steady_mib']} / {r['rss_peak_mib']} MiB", "rss_steady_mib"),
        ("", "", "rss_peak_over_steady"),
        ("API write QPS peak", str(r["api_qps_peak"]), None),
        ("HTTP 429 answers", str(r["http_429"]), "http_429"),
    ]
    for label, value, key in rows:
        mark = ""
        if key:
            op, target = TARGETS[key]
            ok = verdict_of(r.get(key), op, target)
            word = "\033[32mmet\033[0m" if ok else "\033[31mMISSED\033[0m"
            mark = f"{word} ({key} {r.get(key)} {op} {target})"
        if label or mark:
            print(f"  {label:<28} {value:<24} {mark}")
    eng = doc.get("engine")
    if eng:
        print(f"  engine (100k pods)           {json.dumps(eng)[:200]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", choices=sorted(TIERS), default="S")
    ap.add_argument("--keep-cluster", action="store_true", help="leave .cluster-bench running")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine benchmark")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    cluster_down()
    shutil.rmtree(CLUSTER, ignore_errors=True)
    started = time.monotonic()
    try:
        doc = asyncio.run(run(args.tier))
    finally:
        if not args.keep_cluster:
            cluster_down()
    if not args.no_engine:
        doc["engine"] = engine_bench()
    doc["results"]["date"] = time.strftime("%Y-%m-%d")
    doc["results"]["machine"] = {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
    }
    doc["results"]["duration_s"] = round(time.monotonic() - started, 1)
    doc["targets"] = {
        k: {"op": op, "target": t, "met": verdict_of(doc["results"].get(k), op, t)}
        for k, (op, t) in TARGETS.items()
    }
    (OUT / "results.json").write_text(json.dumps(doc, indent=2))
    plot(doc)
    summary(doc)
    say(f"wrote {OUT / 'results.json'} and {OUT / 'report.png'} in {doc['results']['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
