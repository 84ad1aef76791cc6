"""The tiers side by side: how each figure grows with the cluster, and what a bigger one would cost.

``python hack/bench --scaling [DIR]`` reads DIR/results-{S,M,L}.json (default hack/bench-results), draws
DIR/scaling.png and prints the table docs/performance.md carries: the measured tiers, the projection to
100,000 and 150,000 pods, and the tier-L check against the memory slope measured between S and M.

Projections are straight lines fitted by least squares through the measured tiers: memory, cold start,
the bare client's time and restart seeding all grow with the objects held or written, and the three
tiers show how straight they are (the fit's worst relative residual is printed beside each line).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import Results, summary_rows, targets

#: figures that grow with the number of pods, projected by a straight line
LINEAR: tuple[tuple[str, str, str], ...] = (
    ("rss_steady_mib", "RSS steady", "MiB"),
    ("cold_s", "cold start, every verdict correct", "s"),
    ("bare_write_s", "bare client, same writes", "s"),
    ("restart_seeded_s", "restart: seeded after", "s"),
)
#: figures a bigger cluster should not change (per change, per fan-out of 1,000 pods)
FLAT: tuple[tuple[str, str, str], ...] = (
    ("cold_ratio", "cold ratio", ""),
    ("freshness_p50_ms", "freshness p50", "ms"),
    ("freshness_p99_ms", "freshness p99", "ms"),
    ("fanout_create_s", "fan-out create", "s"),
    ("fanout_delete_s", "fan-out delete", "s"),
    ("writes_per_noop", "writes per no-op", ""),
    ("restart_writes", "restart writes", ""),
)
PROJECT_TO: tuple[int, ...] = (100_000, 150_000)
RSS_SLOPE_TOLERANCE = 0.10  # issue 24: tier L's RSS within 10 % of the S-M slope's prediction


@dataclass(frozen=True, slots=True)
class Line:
    """y = intercept + slope * pods, with the fit's worst relative residual over the measured tiers."""

    slope: float
    intercept: float
    worst_residual: float

    def at(self, pods: float) -> float:
        return self.intercept + self.slope * pods


def fit(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """Least squares through the points (two points: the line through them)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a line needs two points or more")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("the points share one x")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    line = Line(slope, my - slope * mx, 0.0)
    worst = max((abs(line.at(x) - y) / abs(y) for x, y in zip(xs, ys, strict=True) if y), default=0.0)
    return Line(slope, line.intercept, worst)


def load_documents(directory: Path) -> list[tuple[Results, dict[str, object] | None]]:
    """The stored tiers with their engine figures, smallest first (at least two)."""
    found = []
    for path in sorted(directory.glob("results-*.json")):
        doc = json.loads(path.read_text())
        found.append((Results.from_json(doc["results"]), doc.get("engine")))
    found.sort(key=lambda d: d[0].pods)
    if len(found) < 2:
        raise SystemExit(f"hack/bench --scaling: needs two tiers' results-*.json in {directory}")
    return found


def load(directory: Path) -> list[Results]:
    """The stored tiers, smallest first (at least two)."""
    return [r for r, _ in load_documents(directory)]


def pod_count(r: Results) -> int:
    """Every pod the operator holds a verdict for: the tier's pods and the fan-out pods."""
    return r.pods + r.fanout_pods


def numbers(tiers: Sequence[Results], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in tiers:
        v = r.value(key)
        if isinstance(v, int | float):
            xs.append(float(pod_count(r)))
            ys.append(float(v))
    return xs, ys


def rss_check(tiers: Sequence[Results]) -> tuple[float, float, float] | None:
    """(predicted, measured, measured/predicted): the largest tier's RSS from the two smallest' slope."""
    if len(tiers) < 3:
        return None
    s, m, big = tiers[0], tiers[1], tiers[-1]
    xs, ys = numbers((s, m), "rss_steady_mib")
    mx, my = numbers((big,), "rss_steady_mib")
    if len(xs) < 2 or not my:
        return None
    predicted = fit(xs, ys).at(mx[0])
    return predicted, my[0], my[0] / predicted


def table(tiers: Sequence[Results]) -> list[str]:
    """Markdown: one row per figure, a column per tier, then the projections of the growing ones."""
    head = "| figure | " + " | ".join(f"{r.tier} ({pod_count(r):,} pods)" for r in tiers)
    head += " | " + " | ".join(f"{p:,} pods (projected)" for p in PROJECT_TO) + " | fit |"
    lines = [head, "|---" * (len(tiers) + len(PROJECT_TO) + 2) + "|"]
    for key, label, unit in (*LINEAR, *FLAT):
        cells = [_cell(r.value(key), unit) for r in tiers]
        projected = ["" for _ in PROJECT_TO]
        note = ""
        if (key, label, unit) in LINEAR:
            xs, ys = numbers(tiers, key)
            if len(xs) >= 2:
                line = fit(xs, ys)
                projected = [_cell(round(line.at(p), 1), unit) for p in PROJECT_TO]
                per = f"{line.slope * 1000:.3g} {unit}".strip()
                note = f"{per} per 1,000 pods; worst residual {line.worst_residual:.0%}"
        lines.append(f"| {label} | " + " | ".join(cells + projected) + f" | {note} |")
    check = rss_check(tiers)
    if check:
        predicted, measured, ratio = check
        met = "met" if abs(ratio - 1) <= RSS_SLOPE_TOLERANCE else "**missed**"
        lines.append("")
        lines.append(
            f"Tier {tiers[-1].tier}'s RSS from the S-M slope: predicted {predicted:.1f} MiB, measured "
            f"{measured:.1f} MiB ({ratio:.2f} times; within {RSS_SLOPE_TOLERANCE:.0%}: {met})."
        )
    return lines


def tier_table(r: Results, engine: dict[str, object] | None = None) -> list[str]:
    """Markdown: one tier's run (date, commit, duration), each figure and its targets, met or missed."""
    reached = targets(r)
    when = f"{r.date or '?'}, commit {r.commit or '?'}, {r.duration_s or '?'} s"
    size = f"{r.pods:,} pods in {r.namespaces:,} namespaces (+{r.fanout_pods:,} fan-out)"
    rows: list[list[str]] = []
    for label, value, key in summary_rows(r):
        if label:
            rows.append([label, value, ""])
        if key and key in reached:
            t = reached[key]
            goal = f"{key} {t.op} {t.target:g}: " + ("met" if t.met else "**missed**")
            rows[-1][2] = f"{rows[-1][2]}; {goal}" if rows[-1][2] else goal
    results = (engine or {}).get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        e = results[0]
        rate = int(str(e.get("indexedEvaluatePodsPerSecond", 0)))
        rows.append([
            f"engine, {e.get('pods', 0):,} pods x {e.get('exceptions', 0):,} exceptions",
            f"{rate:,} pods/s ({e.get('indexedEvaluateSeconds')} s)",
            "30,000 pods/s: " + ("met" if rate >= 30_000 else "**missed**"),
        ])  # fmt: skip
    head = [f"Tier {r.tier}: {size}; {when}", "", "| figure | value | target |", "|---|---|---|"]
    return head + [f"| {a} | {b} | {c} |" for a, b, c in rows]


def _cell(v: object, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}{(' ' + unit) if unit else ''}"
    return f"{v}{(' ' + unit) if unit else ''}"


def plot(tiers: Sequence[Results], path: Path) -> None:
    """Four panels against pods: memory, start-up (operator and bare client), freshness, fan-out."""
    import matplotlib  # noqa: PLC0415 - the bench extra; no backend chosen at import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    top = max(PROJECT_TO)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    panels: tuple[tuple[str, tuple[tuple[str, str], ...], bool], ...] = (
        ("Resident memory (MiB)", (("rss_steady_mib", "RSS steady"),), True),
        (
            "Start-up (s)",
            (
                ("cold_s", "cold start"),
                ("bare_write_s", "bare client"),
                ("restart_seeded_s", "restart seeded"),
            ),
            True,
        ),
        ("Freshness (ms)", (("freshness_p50_ms", "p50"), ("freshness_p99_ms", "p99")), False),
        ("Fan-out, 1,000 pods (s)", (("fanout_create_s", "create"), ("fanout_delete_s", "delete")), False),
    )
    for ax, (name, series, project) in zip(axes, panels, strict=True):
        for key, label in series:
            xs, ys = numbers(tiers, key)
            if not xs:
                continue
            (drawn,) = ax.plot(xs, ys, "o-", label=label)
            if project and len(xs) >= 2:
                line = fit(xs, ys)
                ends = [xs[-1], top]
                ax.plot(ends, [line.at(x) for x in ends], "--", color=drawn.get_color(), alpha=0.6)
        ax.set(title=name, xlabel="pods (measured: points; projected: dashed)")
        ax.legend()
    fig.suptitle("nmisim benchmark: tiers " + " → ".join(r.tier for r in tiers))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(directory: Path) -> int:
    docs = load_documents(directory)
    tiers = [r for r, _ in docs]
    plot(tiers, directory / "scaling.png")
    for r, engine in docs:
        print("\n".join(tier_table(r, engine)), end="\n\n")
    print("\n".join(table(tiers)))
    print(f"\nwrote {directory / 'scaling.png'}")
    return 0
