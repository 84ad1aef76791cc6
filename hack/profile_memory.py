#!/usr/bin/env python3
"""Where the operator's memory goes: run it in-process under tracemalloc against the current cluster
(KUBECONFIG), take a snapshot after it has settled, print the biggest allocators by file and by line.

    KUBECONFIG=.cluster-bench/kubeconfig .venv/bin/python hack/profile_memory.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
import tracemalloc

import kopf

import nmisim.controller.handlers  # noqa: F401 - registers the handlers
from nmisim.controller.controller import Options


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="run this long before the snapshot")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    tracemalloc.start(1)
    stop = threading.Event()
    report: list[str] = []

    def snapshot() -> None:
        time.sleep(args.seconds)
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report.append(
            f"traced now {current / 2**20:.1f} MiB, traced peak {peak / 2**20:.1f} MiB, max RSS {rss:.0f} MiB"
        )
        for kind in ("filename", "lineno"):
            report.append(f"\ntop {args.top} by {kind}:")
            for stat in snap.statistics(kind)[: args.top]:
                report.append(f"  {stat.size / 2**20:8.1f} MiB  {stat.count:8d} blocks  {stat.traceback}")
        stop.set()

    threading.Thread(target=snapshot, daemon=True).start()
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True, clusterwide=True, memo=kopf.Memo(options=Options(metrics_port=0)), stop_flag=stop
    )
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
