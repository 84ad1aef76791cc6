"""hack/bench without a cluster: importing it changes nothing, its typed results read and write the
stored results files unchanged (the format `make bench` has always written), the targets, summary and plot
follow from them, the workload is what the tiers say, and its login equals kopf's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from bench.config import TARGETS, TIERS, Paths
from bench.report import plot, summary_lines
from bench.results import Document, Results, Series
from bench.workload import FANOUT_NAMESPACE, generate

ROOT = Path(__file__).resolve().parents[2]

STORED = sorted((ROOT / "hack" / "bench-results").glob("results-*.json"))


def test_importing_changes_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os, sys
        before = dict(os.environ)
        sys.path.insert(0, sys.argv[1])
        import bench, bench.cli, bench.config, bench.kube, bench.operator_process, bench.phases
        import bench.progress, bench.report, bench.results, bench.workload
        print(json.dumps({"env": dict(os.environ) == before, "matplotlib": "matplotlib" in sys.modules}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "hack")],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )  # fmt: skip
    assert json.loads(proc.stdout) == {"env": True, "matplotlib": False}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_stored_results_read_back_unchanged(path: Path) -> None:
    stored = json.loads(path.read_text())
    doc = Document.from_json(stored)
    assert all(getattr(doc.results, name) is not None for name in Results.PHASES)
    again = doc.to_json()
    assert again == stored
    assert list(again) == list(stored) and list(again["results"]) == list(stored["results"])


def test_there_are_stored_results() -> None:
    assert {p.name for p in STORED} >= {"results-S.json", "results-M.json"}


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_summary_says_met_or_missed_per_target(path: Path) -> None:
    doc = Document.from_json(json.loads(path.read_text()))
    text = "\n".join(summary_lines(doc))
    for key, t in doc.targets().items():
        word = "[green]met[/green]" if t.met else "[red]MISSED[/red]"
        assert f"{word} ({key} {doc.results.value(key)} {t.op} {t.target})" in text


def test_targets_follow_the_figures() -> None:
    doc = Document.from_json(json.loads((ROOT / "hack" / "bench-results" / "results-M.json").read_text()))
    assert doc.results.restart is not None and doc.results.memory is not None
    doc.results.restart.restart_writes = 0
    doc.results.memory.rss_steady_mib = 251.0
    reached = doc.targets()
    assert set(reached) == set(TARGETS)
    assert reached["restart_writes"].met
    assert not reached["rss_steady_mib"].met  # 251 > 250
    doc.results.restart = None  # a phase that did not run meets nothing
    assert not doc.targets()["restart_writes"].met
    assert "restart_writes" not in doc.results.to_json()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    doc = Document.from_json(json.loads(STORED[0].read_text()))
    plot(doc, tmp_path / "report.png", cores=2)
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    empty = Document(results=Results(tier="XS", pods=0, namespaces=0, fanout_pods=0), series=Series())
    plot(empty, tmp_path / "empty.png", cores=2)  # a run that stopped early still plots
    assert (tmp_path / "empty.png").stat().st_size > 0


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_workload_is_the_tier(tier: str) -> None:
    t = TIERS[tier]
    work = generate(t.pods, t.namespaces, t.fanout)
    assert len(work.pods) == t.pods + t.fanout
    assert len(work.namespaces) == t.namespaces + 1 and work.namespaces[-1] == FANOUT_NAMESPACE
    assert sum(1 for p in work.pods if p["metadata"]["namespace"] == FANOUT_NAMESPACE) == t.fanout
    assert work.flip and all(name.startswith("pod-") for _, name, _ in work.flip)
    assert generate(t.pods, t.namespaces, t.fanout) == work  # the same every run


def test_paths_follow_the_environment(tmp_path: Path) -> None:
    default = Paths.from_env({})
    assert (default.cluster, default.out) == (ROOT / ".cluster-bench", ROOT / ".bench")
    moved = Paths.from_env({"NMISIM_BENCH_CLUSTER": str(tmp_path / "c"), "NMISIM_BENCH_OUT": str(tmp_path)})
    assert (
        moved.kubeconfig == tmp_path / "c" / "kubeconfig" and moved.results_json == tmp_path / "results.json"
    )


def _kopf_login(kubeconfig: Path) -> dict[str, Any]:
    """kopf.login_via_client with KUBECONFIG pointing at ``kubeconfig``, in a process of its own."""
    script = textwrap.dedent(
        """
        import json, logging, kopf
        info = kopf.login_via_client(logger=logging.getLogger("t"), settings=kopf.OperatorSettings())
        print(json.dumps({"server": info.server, "scheme": info.scheme, "token": info.token,
                          "insecure": bool(info.insecure), "ca": open(info.ca_path).read()}))
        """
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_login_equals_kopfs(tmp_path: Path) -> None:
    import base64  # noqa: PLC0415

    from bench.kube import login  # noqa: PLC0415

    kubeconfig = tmp_path / "kubeconfig"
    ca = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    info = login(kubeconfig)
    assert info.ca_path is not None
    mine = {
        "server": info.server,
        "scheme": info.scheme,
        "token": info.token,
        "insecure": bool(info.insecure),
        "ca": Path(os.fsdecode(info.ca_path)).read_text(),
    }
    assert mine == _kopf_login(kubeconfig)
    assert mine["token"] == "t0ken" and mine["ca"] == ca


def test_a_failed_phase_keeps_what_the_phases_before_it_measured(tmp_path: Path, monkeypatch: Any) -> None:
    """hack/bench writes results.json and the plot with the figures measured before a phase failed, says
    which phase failed, and exits 1 (an hour of tier L is not thrown away with its last phase)."""
    from bench import cli  # noqa: PLC0415
    from bench.phases import PhaseFailed  # noqa: PLC0415
    from bench.results import BareClient  # noqa: PLC0415

    partial = Results(tier="XS", pods=60, namespaces=6, fanout_pods=50, bare=BareClient(bare_write_s=1.5))

    async def failing(*_: Any, **__: Any) -> tuple[Results, Series]:
        raise PhaseFailed("restart", partial, Series()) from RuntimeError("restarted operator did not seed")

    monkeypatch.setattr(cli, "run_all", failing)
    monkeypatch.setattr(cli, "cluster_down", lambda *_: None)
    monkeypatch.setenv("NMISIM_BENCH_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("NMISIM_BENCH_CLUSTER", str(tmp_path / "cluster"))
    assert cli.main(["--tier", "XS", "--no-engine"]) == 1
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["results"]["bare_write_s"] == 1.5 and "cold_s" not in written["results"]
    assert (tmp_path / "out" / "report.png").stat().st_size > 0
