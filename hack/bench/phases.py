"""The benchmark, one function per phase. Each takes the run's shared state (:class:`Run`) and fills
its own part of :class:`bench.results.Results` (and the plot's series)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from bench.config import CHANGE_RATE, Paths, Tier
from bench.kube import (
    Watcher,
    api_path,
    client,
    cluster_up,
    create,
    key_of,
    kubectl,
    login,
    merge_patch,
    token_kubeconfig,
)
from bench.operator_process import Audit, Operator, by_resource, peak_rate, quiesce
from bench.progress import bar, gather_limited, say
from bench.results import (
    BareClient,
    ColdStart,
    Fanout,
    Freshness,
    Memory,
    NoOp,
    Restart,
    Results,
    Series,
)
from bench.workload import FANOUT_NAMESPACE, Workload, generate
from nmisim.controller.migration import migration_status
from nmisim.controller.status import semantic, verdict_status
from nmisim.engine.migration.assess import assess
from nmisim.engine.models import AzureIdentity, AzureIdentityBinding, Pod, PodIdentityException
from nmisim.engine.world import World
from nmisim.kube.client import APIClient
from nmisim.sources.migration import from_live

Key = tuple[str, str]
VERDICTS = "/apis/nmisim.dev/v1alpha1/nmiverdicts"
AAD = "/apis/aadpodidentity.k8s.io/v1"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


@dataclass
class Run:
    """What the phases share: the cluster, the workload, what every verdict must say, the operator."""

    paths: Paths
    tier: Tier
    info: kopf.ConnectionInfo
    setup: APIClient  # the benchmark's own client (no rate limit)
    work: Workload
    results: Results
    series: Series = field(default_factory=Series)
    pods: list[Pod] = field(default_factory=list)
    pod_bodies: list[dict[str, Any]] = field(default_factory=list)  # as the API server holds them
    statuses: dict[Key, dict[str, Any]] = field(default_factory=dict)  # the engine's verdict status
    expected: dict[Key, str] = field(default_factory=dict)  # its semantic digest
    verdict_state: dict[Key, str] = field(default_factory=dict)  # digest of what the API holds now
    verdicts: Watcher | None = None
    operator: Operator | None = None
    audit: Audit | None = None
    t0: float = 0.0  # when the operator started

    def need_audit(self) -> Audit:
        assert self.audit is not None, "the cold start comes first"
        return self.audit

    def need_operator(self) -> Operator:
        assert self.operator is not None, "the cold start comes first"
        return self.operator


# --- the cluster and what is on it ---------------------------------------------------------------------


async def start_cluster(paths: Paths, tier: Tier, environ: dict[str, str]) -> Run:
    """The benchmark's own cluster with the CRDs, the operator's ServiceAccount, RBAC and SimulationConfig."""
    say(
        f"tier {tier.name}: {tier.pods} pods in {tier.namespaces} namespaces (+{tier.fanout} fan-out pods); "
        f"cluster in {paths.cluster}"
    )
    cluster_up(paths, {"NMISIM_NODES": str(tier.nodes), **environ})
    kubectl(paths, "apply", "-f", str(paths.root / "crds"))
    kubectl(paths, "wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=nmisim")
    for f in ("namespace", "serviceaccount", "rbac", "simulationconfig"):
        kubectl(paths, "apply", "-f", str(paths.root / "manifests" / f"{f}.yaml"))
    info = login(paths.kubeconfig)
    results = Results(tier=tier.name, pods=tier.pods, namespaces=tier.namespaces, fanout_pods=tier.fanout)
    return Run(
        paths=paths,
        tier=tier,
        info=info,
        setup=client(info, concurrency=48, qps=0),
        work=generate(tier.pods, tier.namespaces, tier.fanout),
        results=results,
    )


async def create_workload(run: Run) -> None:
    """Namespaces, exceptions, identities, bindings and pods; until kwok runs every pod."""
    say("creating the workload")
    setup, work = run.setup, run.work
    await gather_limited(
        work.namespaces,
        lambda ns: create(
            setup, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, "/api/v1/namespaces"
        ),
        "namespaces",
        len(work.namespaces),
    )
    await gather_limited(
        work.objects, lambda o: create(setup, o), "exceptions, identities, bindings", len(work.objects)
    )
    await gather_limited(work.pods, lambda o: create(setup, o), "pods", len(work.pods))
    with bar("pods running (kwok)", len(work.pods)) as update:
        while True:
            pods = [
                p
                for p in await setup.list_all("/api/v1/pods", limit=1000)
                if p["metadata"]["namespace"].startswith("bench")
            ]
            running = sum(1 for p in pods if p.get("status", {}).get("podIP"))
            update(running)
            if running >= len(work.pods):
                break
            await asyncio.sleep(1)
    run.pods = [Pod.from_k8s(p) for p in pods]
    run.pod_bodies = pods


async def expect(run: Run) -> None:
    """What every verdict must say: the engine on the objects as the API server holds them."""
    world = World()
    kinds = (
        ("azurepodidentityexceptions", PodIdentityException),
        ("azureidentities", AzureIdentity),
        ("azureidentitybindings", AzureIdentityBinding),
    )
    for plural, model in kinds:
        for o in await run.setup.list_all(f"{AAD}/{plural}", limit=1000):
            world.upsert(model.from_k8s(o))
    for p in run.pods:
        world.upsert(p)
    # each pod's status.migration: the migration engine on the same objects, as `nmisim migrate` reads
    # them live (the operator assesses one workload at a time; the bench's pods are bare, each its own)
    spaces = {p.namespace for p in run.pods}
    sas = [o for o in await run.setup.list_all("/api/v1/serviceaccounts", limit=1000)
           if o["metadata"]["namespace"] in spaces]  # fmt: skip
    nss = [o for o in await run.setup.list_all("/api/v1/namespaces", limit=1000)
           if o["metadata"]["name"] in spaces]  # fmt: skip
    inp = from_live(world, pods=run.pod_bodies, owners=[], service_accounts=sas, namespaces=nss, others=[],
                    webhook_installed=False, warn=say)  # fmt: skip
    migration = {(a.namespace, a.name): migration_status(a) for a in assess(inp, "plan").pods}
    for p in run.pods:
        st = verdict_status(world.evaluate(p), p, migration.get((p.namespace, p.name)))
        run.statuses[(p.namespace, p.name)] = st
        run.expected[(p.namespace, p.name)] = semantic(st)
    mix = {
        v: sum(1 for s in run.statuses.values() if s["verdict"] == v)
        for v in ("intercepted", "exempt", "bypass", "inactive")
    }
    run.results.verdict_mix = dict(sorted(mix.items()))


# --- the bare client: the same writes (create, status, Event; same sizes), no logic ------------------


async def bare_client(run: Run) -> None:
    say("bare client: the operator's writes, without the operator")
    bare_ns = "bench-bare"
    setup = run.setup
    await setup.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": bare_ns}}
    )
    # The operator's own defaults (nmisim run --concurrency 16 --api-qps 200 --api-burst 400).
    bare = client(run.info, concurrency=16, qps=200.0, burst=400)
    done: list[float] = []
    t_bare = time.monotonic()

    async def bare_write(item: tuple[Key, dict[str, Any]]) -> None:
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
        status = {
            **st,
            "observedPodResourceVersion": "1",
            "transitions": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        await merge_patch(bare, f"{base}/{vname}/status", {"status": status})
        done.append(time.monotonic() - t_bare)

    items = list(run.statuses.items())
    await gather_limited(items, bare_write, "bare writes (3 per pod)", len(items), limit=16)
    run.results.bare = BareClient(bare_write_s=round(time.monotonic() - t_bare, 2))
    run.series.bare_done = sorted(done)
    await bare.close()
    await setup.request("DELETE", f"/api/v1/namespaces/{bare_ns}")
    while (await setup.request("GET", f"/api/v1/namespaces/{bare_ns}")).status != 404:
        await asyncio.sleep(0.5)  # gone before the operator starts, or it would clean up after us


# --- the operator ------------------------------------------------------------------------------------


async def cold_start(run: Run) -> None:
    """The operator from nothing to every NMIVerdict correct; then until it is quiet."""
    say("operator cold start: every NMIVerdict correct")
    assert run.results.bare is not None, "the bare client's time comes first"
    run.audit = audit = Audit(run.paths.audit_log)
    seen: dict[Key, float] = {}
    run.verdicts = Watcher(run.info, VERDICTS)

    def on_verdict(now: float, kind: str, obj: dict[str, Any]) -> None:
        k = key_of(obj)
        state = "" if kind == "DELETED" else semantic(obj.get("status"))
        run.verdict_state[k] = state
        if k in run.expected and state == run.expected[k] and k not in seen:
            seen[k] = now

    run.verdicts.callbacks.append(on_verdict)
    await run.verdicts.start(run.setup)
    run.operator = op = Operator(run.paths, token_kubeconfig(run.paths))
    run.t0 = t0 = op.start()
    with bar("verdicts correct", len(run.expected)) as update:
        while len(seen) < len(run.expected):
            update(len(seen))
            if op.exited:
                raise RuntimeError(f"operator exited; see {op.log}")
            await asyncio.sleep(0.2)
    cold_s = round(max(seen.values()) - t0, 2)
    run.series.cold_done = sorted(t - t0 for t in seen.values())
    # The verdicts are right; the rest (exception status, totals) follows. Count it all, then go on from
    # a quiet operator, so that the next phases count only their own writes.
    whole = Audit(audit.path, offset=audit.offset)
    tail_s = await quiesce(audit, timeout=300 * run.tier.scale)
    cold = whole.writes_since_mark()
    run.results.cold = ColdStart(
        cold_s=cold_s,
        cold_ratio=round(cold_s / run.results.bare.bare_write_s, 2),
        cold_tail_s=tail_s,
        cold_writes=len(cold),
        cold_writes_by_resource=by_resource(cold, 1),
        api_qps_peak=peak_rate(cold),
    )


async def noop_updates(run: Run) -> None:
    """Annotations on pods cannot change a verdict: the writes they cost."""
    say("no-op pod updates")
    audit = run.need_audit()
    await quiesce(audit, timeout=300 * run.tier.scale)
    audit.mark()
    sample = random.Random(1).sample(run.pods, min(500, len(run.pods)))

    async def annotate(p: Pod) -> None:
        body = {"metadata": {"annotations": {"bench.nmisim.dev/touch": str(time.time())}}}
        await merge_patch(run.setup, f"/api/v1/namespaces/{p.namespace}/pods/{p.name}", body)

    await gather_limited(sample, annotate, "annotate pods", len(sample), limit=16)
    await asyncio.sleep(5)
    run.results.noop = NoOp(writes_per_noop=round(len(audit.writes_since_mark()) / len(sample), 3))


async def freshness(run: Run) -> None:
    """Verdict changes at CHANGE_RATE a second: how soon each verdict follows, beside a bare watch."""
    seconds = run.tier.change_seconds
    say(f"verdict changes at {CHANGE_RATE:g}/s for {seconds:g}s: freshness")
    audit = run.need_audit()
    assert run.verdicts is not None
    await quiesce(audit, timeout=300 * run.tier.scale)
    audit.mark()
    pod_watch = Watcher(run.info, "/api/v1/pods")
    pending_pod: dict[Key, tuple[float, str]] = {}  # key -> (accepted, expected team label)
    pending_verdict: dict[Key, tuple[float, str]] = {}  # key -> (accepted, expected verdict)
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
    run.verdicts.callbacks.append(on_verdict_change)
    await pod_watch.start(run.setup)
    flips = run.work.flip[:]
    random.Random(3).shuffle(flips)
    n_changes = min(int(CHANGE_RATE * seconds), 2 * len(flips))
    exempt_now: dict[Key, bool] = {}
    tasks = []

    async def change(i: int) -> None:
        ns, name, _ = flips[i % len(flips)]
        k = (ns, name)
        exempt = not exempt_now.get(k, False)
        exempt_now[k] = exempt
        label = "team-0" if exempt else None
        await merge_patch(
            run.setup, f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"labels": {"team": label}}}
        )
        accepted = time.monotonic()
        pending_pod[k] = (accepted, label or "")
        pending_verdict[k] = (accepted, "exempt" if exempt else "intercepted")

    t_start = time.monotonic()
    with bar("label changes", n_changes) as update:
        for i in range(n_changes):
            await asyncio.sleep(max(0.0, t_start + i / CHANGE_RATE - time.monotonic()))
            tasks.append(asyncio.create_task(change(i)))
            update(i + 1)
        await asyncio.gather(*tasks)
    deadline = time.monotonic() + 30
    while (pending_verdict or pending_pod) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)
    changed = audit.writes_since_mark()
    p50, p99 = round(percentile(fresh_lat, 50) * 1000), round(percentile(fresh_lat, 99) * 1000)
    w50, w99 = round(percentile(watch_lat, 50) * 1000), round(percentile(watch_lat, 99) * 1000)
    run.results.freshness = Freshness(
        changes=n_changes,
        writes_per_change=round(len(changed) / n_changes, 3),
        writes_per_change_by_resource=by_resource(changed, n_changes),
        freshness_p50_ms=p50,
        freshness_p99_ms=p99,
        watch_p50_ms=w50,
        watch_p99_ms=w99,
        freshness_vs_watch_p50=round(p50 / max(w50, 1), 2),
        freshness_lost=len(pending_verdict),
    )
    run.series.freshness_ms = [x * 1000 for x in fresh_lat]
    run.series.watch_ms = [x * 1000 for x in watch_lat]
    await pod_watch.stop()
    run.verdicts.callbacks.remove(on_verdict_change)
    for (ns, name), exempt in exempt_now.items():  # put the flipped pods back
        if exempt:
            await merge_patch(
                run.setup, f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"labels": {"team": None}}}
            )


async def fanout(run: Run) -> None:
    """One exception over the fan-out namespace's pods, created then deleted."""
    say(f"fan-out: an exception over {run.tier.fanout} pods, created then deleted")
    fan = {k for k in run.expected if k[0] == FANOUT_NAMESPACE}

    async def wait_fan(verdict: str) -> float:
        t = time.monotonic()
        while True:
            states = (json.loads(run.verdict_state.get(k) or "{}").get("verdict") for k in fan)
            if sum(1 for s in states if s == verdict) == len(fan):
                return time.monotonic() - t
            await asyncio.sleep(0.05)

    exc = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": "fanout", "namespace": FANOUT_NAMESPACE},
        "spec": {"podLabels": {"fanout": "YES"}},
    }
    audit = run.need_audit()
    await quiesce(audit, timeout=300 * run.tier.scale)
    t_fan = time.monotonic()
    audit.mark()
    await run.setup.request("POST", api_path(exc), exc)
    create_s = await wait_fan("exempt")
    create_writes = audit.writes_since_mark()
    audit.mark()
    await run.setup.request("DELETE", api_path(exc, name=True))
    delete_s = await wait_fan("intercepted")
    delete_writes = audit.writes_since_mark()
    run.results.fanout = Fanout(
        fanout_create_s=round(create_s, 2),
        fanout_delete_s=round(delete_s, 2),
        fanout_s=round(time.monotonic() - t_fan, 2),
        fanout_create_writes={k: int(v) for k, v in by_resource(create_writes, 1).items()},
        fanout_delete_writes={k: int(v) for k, v in by_resource(delete_writes, 1).items()},
    )


async def memory(run: Run) -> None:
    """The operator's resident memory: the median of the last 5 s, and the peak of the whole run."""
    op = run.need_operator()
    await asyncio.sleep(5)
    now = time.monotonic()
    steady = [m for t, m in op.rss if t > now - 5]
    steady_mib = round(statistics.median(steady), 1) if steady else None
    peak_mib = round(max(m for _, m in op.rss), 1) if op.rss else None
    ratio = round(peak_mib / steady_mib, 2) if peak_mib is not None and steady_mib else None
    run.results.memory = Memory(rss_steady_mib=steady_mib, rss_peak_mib=peak_mib, rss_peak_over_steady=ratio)
    run.series.rss = [(t - run.t0, m) for t, m in op.rss]


async def restart(run: Run) -> None:
    """A second operator process over the same cluster, nothing changed: what it writes once seeded."""
    say("restart with nothing changed")
    op, audit = run.need_operator(), run.need_audit()
    await op.stop()
    audit.mark()
    seeded_before = op.seeded_count()  # the same log file: count before the new process writes to it
    op2 = Operator(run.paths, op.kubeconfig)
    op2.start()
    t_restart = time.monotonic()
    while op2.seeded_count() <= seeded_before:
        if time.monotonic() - t_restart > 120 * run.tier.scale:
            raise RuntimeError(f"restarted operator did not seed; see {op2.log}")
        if op2.exited:
            raise RuntimeError(f"restarted operator exited; see {op2.log}")
        await asyncio.sleep(0.2)
    seeded_s = round(time.monotonic() - t_restart, 2)
    await asyncio.sleep(10)  # every object seen, every key compared
    run.results.restart = Restart(restart_seeded_s=seeded_s, restart_writes=len(audit.writes_since_mark()))
    await op2.stop()


def http_429(run: Run) -> None:
    """429 answers to the operator anywhere in the run."""
    everything = Audit(run.paths.audit_log, offset=0).since_mark()
    run.results.http_429 = sum(1 for e in everything if e.get("responseStatus", {}).get("code") == 429)


class PhaseFailed(RuntimeError):
    """A phase failed; the figures of the phases before it."""

    def __init__(self, phase: str, results: Results, series: Series) -> None:
        super().__init__(f"phase {phase} failed")
        self.phase, self.results, self.series = phase, results, series


async def run_all(paths: Paths, tier: Tier, environ: dict[str, str] | None = None) -> tuple[Results, Series]:
    """Every phase, in order, on a cluster this starts (the caller stops it)."""
    run = await start_cluster(paths, tier, dict(os.environ if environ is None else environ))
    phase = "create_workload"
    try:
        steps = (
            create_workload,
            expect,
            bare_client,
            cold_start,
            noop_updates,
            freshness,
            fanout,
            memory,
            restart,
        )
        for step in steps:
            phase = step.__name__
            await step(run)
        phase = "http_429"
        http_429(run)
    except Exception as exc:
        # an hour of a large tier is not thrown away with its last phase: what was measured is kept
        raise PhaseFailed(phase, run.results, run.series) from exc
    finally:
        if run.operator is not None:
            await run.operator.stop()
        if run.verdicts is not None:
            await run.verdicts.stop()
        await run.setup.close()
    return run.results, run.series
