#!/usr/bin/env python3
"""Engine throughput: the indexed World versus a naive scan (NMI's loop over every exception).

Generates N pods (default 10k and 100k) and 1k exceptions spread over namespaces, then evaluates every pod
(a) with ``World.evaluate`` and (b) with a naive exception match that, like NMI's ``IsPodExcepted`` fed by
an unindexed list, loops over *all* exceptions and filters by namespace. Prints pods/s side by side.

    .venv/bin/python hack/bench_engine.py [--pods 10000 100000] [--exceptions 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nmisim.engine.exceptions import exception_matches
from nmisim.engine.models import AzureIdentity, AzureIdentityBinding, Pod, PodIdentityException
from nmisim.engine.world import World


def progress(label: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 20) == 0:
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r  {label:<28} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def generate(
    n_pods: int, n_exc: int, n_ns: int, seed: int = 42
) -> tuple[list[Pod], list[PodIdentityException], list[object]]:
    rnd = random.Random(seed)
    namespaces = [f"ns-{i}" for i in range(n_ns)]
    excs = [
        PodIdentityException(
            namespace=namespaces[i % n_ns],
            name=f"exc-{i}",
            pod_labels={"app": f"app-{rnd.randrange(200)}", f"k{i % 7}": rnd.choice(["A", "b", "C"])},
        )
        for i in range(n_exc)
    ]
    other: list[object] = []
    for i in range(n_ns):
        ns = namespaces[i]
        other.append(AzureIdentity(namespace=ns, name="id", client_id=f"{i:08d}-0000-0000-0000-000000000000"))
        other.append(AzureIdentityBinding(namespace=ns, name="b", azure_identity="id", selector=f"sel-{i}"))
    pods = []
    for i in range(n_pods):
        ns_i = rnd.randrange(n_ns)
        labels = {"app": f"app-{rnd.randrange(400)}", "tier": rnd.choice(["web", "db"])}
        if rnd.random() < 0.5:
            labels["aadpodidbinding"] = f"sel-{ns_i}"
        if rnd.random() < 0.2:
            labels[f"k{rnd.randrange(7)}"] = rnd.choice(["a", "B", "c"])
        pods.append(
            Pod(
                namespace=namespaces[ns_i],
                name=f"pod-{i}",
                labels=labels,
                node_name=f"node-{i % 50}",
                pod_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                phase="Running",
                host_network=rnd.random() < 0.01,
            )
        )
    return pods, excs, other


def timed(label: str, pods: Sequence[Pod], fn: Callable[[Pod], object]) -> float:
    start = time.perf_counter()
    total = len(pods)
    for i, p in enumerate(pods, 1):
        fn(p)
        progress(label, i, total)
    return time.perf_counter() - start


def naive_matcher(excs: Sequence[PodIdentityException]) -> Callable[[Pod], object]:
    def match(p: Pod) -> list[str]:
        # NMI lists exceptions and loops over each one (here: every exception in the cluster)
        return sorted(e.name for e in excs if e.namespace == p.namespace and exception_matches(p.labels, e))

    return match


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--exceptions", type=int, default=1_000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument(
        "--naive-sample", type=int, default=10_000, help="pods timed for the naive scan (it is slow)"
    )
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    rows = []
    for n in args.pods:
        print(f"{n} pods, {args.exceptions} exceptions, {args.namespaces} namespaces", file=sys.stderr)
        pods, excs, other = generate(n, args.exceptions, args.namespaces)
        w = World()
        for o in [*excs, *other, *pods]:
            w.upsert(o)  # type: ignore[arg-type]
        t_match = timed("indexed exception match", pods, w.matching_exceptions)
        t_full = timed("indexed full evaluate", pods, w.evaluate)
        sample = pods[: min(n, args.naive_sample)]
        naive = naive_matcher(excs)
        t_naive = timed(f"naive scan ({len(sample)} pods)", sample, naive)
        # sanity: the two matchers agree
        assert all(w.matching_exceptions(p) == naive(p) for p in sample[:2000])
        rows.append(
            {
                "pods": n,
                "exceptions": args.exceptions,
                "indexedMatchPodsPerSecond": round(n / t_match),
                "indexedEvaluatePodsPerSecond": round(n / t_full),
                "indexedEvaluateSeconds": round(t_full, 3),
                "naiveMatchPodsPerSecond": round(len(sample) / t_naive),
                "naiveSampledPods": len(sample),
            }
        )
    print(
        f"\n{'pods':>8} {'exceptions':>10} {'indexed match/s':>16} "
        f"{'indexed evaluate/s':>19} {'evaluate s':>11} {'naive match/s':>14}"
    )
    for r in rows:
        print(
            f"{r['pods']:>8} {r['exceptions']:>10} {r['indexedMatchPodsPerSecond']:>16} "
            f"{r['indexedEvaluatePodsPerSecond']:>19} "
            f"{r['indexedEvaluateSeconds']:>11} {r['naiveMatchPodsPerSecond']:>14}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": rows}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
