"""`make bench` end to end on a tiny tier: it runs, and writes a well-formed results file and plot.

A smoke test, not a measurement: no time or target is asserted (the figures are for `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        [sys.executable, str(ROOT / "hack" / "bench.py"), "--tier", "XS", "--no-engine"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    r = doc["results"]
    for key in (
        "cold_s", "bare_write_s", "cold_ratio", "freshness_p50_ms", "freshness_p99_ms", "watch_p50_ms",
        "fanout_s", "writes_per_noop", "writes_per_change", "restart_writes", "rss_steady_mib",
        "rss_peak_mib", "api_qps_peak", "http_429",
    ):  # fmt: skip
        assert isinstance(r[key], int | float), key
    assert r["tier"] == "XS" and r["pods"] == 60
    assert sum(r["verdictMix"].values()) == 60 + r["fanoutPods"]
    assert set(doc["targets"]) >= {"cold_ratio", "freshness_p50_ms", "restart_writes"}
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert not (tmp_path / "cluster" / "pids" / "etcd.pid").exists(), "the bench left its cluster running"
