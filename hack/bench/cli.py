"""The command line: a fresh cluster, every phase, the engine benchmark, then results.json, the plot and
the summary; the cluster is stopped afterwards unless --keep-cluster."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import bench
from bench import scaling
from bench.config import RESULTS_DIR, TIERS, Paths
from bench.kube import cluster_down
from bench.phases import PhaseFailed, run_all
from bench.progress import say
from bench.report import engine_bench, plot, summary, write_json
from bench.results import Document, Machine


def machine() -> Machine:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Machine(cores=os.cpu_count(), memory_gib=round(memory / 2**30))


def commit(paths: Paths) -> str | None:
    """The commit measured, with '-dirty' when the tree differs from it."""
    git = ["git", "-C", str(paths.root)]
    head = subprocess.run(
        [*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return None
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "operator", "hack/bench"], check=False)
    return head.stdout.strip() + ("-dirty" if dirty.returncode else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="hack/bench", description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tier", choices=sorted(TIERS), default="S")
    ap.add_argument("--keep-cluster", action="store_true", help="leave .cluster-bench running")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine benchmark")
    ap.add_argument(
        "--scaling",
        nargs="?",
        const=str(RESULTS_DIR),
        metavar="DIR",
        help="no run: the stored tiers side by side (DIR/results-*.json -> DIR/scaling.png and a table)",
    )
    args = ap.parse_args(argv)
    if args.scaling is not None:
        return scaling.main(Path(args.scaling))
    paths = Paths.from_env()
    environ = dict(os.environ)
    paths.out.mkdir(parents=True, exist_ok=True)
    cluster_down(paths, environ)
    shutil.rmtree(paths.cluster, ignore_errors=True)
    started = time.monotonic()
    measured = commit(paths)  # before the run: the tree may change while it runs
    failed: PhaseFailed | None = None
    try:
        results, series = asyncio.run(run_all(paths, TIERS[args.tier], environ))
    except PhaseFailed as exc:
        failed, results, series = exc, exc.results, exc.series
        say(f"{exc} ({exc.__cause__!r}): writing what the phases before it measured")
    finally:
        if not args.keep_cluster:
            cluster_down(paths, environ)
    doc = Document(results=results, series=series)
    if not args.no_engine:
        doc.engine = engine_bench(paths)
    results.date = time.strftime("%Y-%m-%d")
    results.commit = measured
    results.machine = machine()
    results.duration_s = round(time.monotonic() - started, 1)
    write_json(doc, paths.results_json)
    plot(doc, paths.report_png)
    summary(doc)
    say(f"wrote {paths.results_json} and {paths.report_png} in {results.duration_s} s")
    if failed is not None:
        say(f"INCOMPLETE: {failed}; its figures and those after it are missing")
        return 1
    return 0
