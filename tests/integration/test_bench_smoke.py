"""`make bench` end to end on a tiny tier: it runs, and writes a well-formed results file and plot.

A smoke test, not a measurement: no time or target is asserted (the figures are for `make bench`). What
"well-formed" means comes from the benchmark's own typed results (hack/bench/results.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.config import TARGETS
from bench.results import Document, Results

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster


def test_bench_xs_writes_results_and_plot(tmp_path: Path) -> None:
    if os.environ.get("NMISIM_OPERATOR") == "external":
        pytest.skip("the benchmark runs its own embedded cluster")
    env = {
        **os.environ,
        "NMISIM_BENCH_OUT": str(tmp_path / "out"),
        "NMISIM_BENCH_CLUSTER": str(tmp_path / "cluster"),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bench"), "--tier", "XS", "--no-engine"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    doc = Document.from_json(stored)
    assert doc.to_json() == stored  # nothing in the file that the typed results do not know
    r = doc.results
    missing = [name for name in Results.PHASES if getattr(r, name) is None]
    assert not missing, f"phases without results: {missing}"
    for key in Results.numeric_keys():
        value = stored["results"][key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
    assert r.tier == "XS" and r.pods == 60
    assert sum(r.verdict_mix.values()) == 60 + r.fanout_pods
    assert set(stored["targets"]) == set(TARGETS)
    assert len(doc.series.cold_done) == 60 + r.fanout_pods and doc.series.rss
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert not (tmp_path / "cluster" / "pids" / "etcd.pid").exists(), "the bench left its cluster running"
