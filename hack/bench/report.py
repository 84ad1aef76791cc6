"""What a run leaves: results.json, the plot, the summary on the terminal; and the engine benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.config import Paths
from bench.progress import console, say
from bench.results import FRESHNESS_TITLE, Document, summary_rows, title


def engine_bench(paths: Paths) -> dict[str, Any]:
    say("engine: nmisim evaluate throughput, indexed vs naive")
    path = paths.out / "engine.json"
    subprocess.run(
        [
            sys.executable,
            str(paths.root / "hack" / "bench_engine.py"),
            "--pods",
            "100000",
            "--json",
            str(path),
        ],
        check=True,
    )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_json(doc: Document, path: Path) -> None:
    path.write_text(json.dumps(doc.to_json(), indent=2))


def plot(doc: Document, path: Path, cores: int | None = None) -> None:
    """Three panels: convergence (bare client vs cold start), freshness CDF, resident memory."""
    import matplotlib  # noqa: PLC0415 - the bench extra; no backend chosen at import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    s, r = doc.series, doc.results
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    for xs, label in (
        (s.bare_done, f"bare client ({r.value('bare_write_s')} s)"),
        (s.cold_done, f"nmisim cold start ({r.value('cold_s')} s)"),
    ):
        ax.plot(xs, range(1, len(xs) + 1), label=label)
    ax.set(title="Convergence: pods done over time", xlabel="seconds", ylabel="pods")
    ax.legend()
    ax = axes[1]
    for values, label in (
        (s.watch_ms, "pod change seen by a watcher"),
        (s.freshness_ms, "NMIVerdict updated (nmisim)"),
    ):
        xs = sorted(values)
        if xs:
            ax.plot(xs, [i / len(xs) for i in range(1, len(xs) + 1)], label=label)
    ax.set(
        title=FRESHNESS_TITLE,
        xlabel="ms after the API accepted the change",
        ylabel="fraction",
        xscale="log",
    )
    if ax.lines:
        ax.legend()
    ax = axes[2]
    ax.plot([t for t, _ in s.rss], [m for _, m in s.rss])
    ax.set(title="Operator resident memory", xlabel="seconds since start", ylabel="MiB")
    fig.suptitle(title(r, cores if cores is not None else os.cpu_count()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(doc: Document) -> list[str]:
    """The summary, one line per figure, in rich markup: each target met or MISSED."""
    r = doc.results
    reached = doc.targets()
    lines = [f"\n[bold]nmisim benchmark[/bold] tier {r.tier}"]
    for label, value, key in summary_rows(r):
        mark = ""
        if key and key in reached:
            t = reached[key]
            word = "[green]met[/green]" if t.met else "[red]MISSED[/red]"
            mark = f"{word} ({key} {r.value(key)} {t.op} {t.target})"
        if label or mark:
            lines.append(f"  {label:<28} {value:<24} {mark}")
    if doc.engine:
        lines.append(f"  engine (100k pods)           {json.dumps(doc.engine)[:200]}")
    return lines


def summary(doc: Document) -> None:
    for line in summary_lines(doc):
        console.print(line, markup=True, highlight=False)
