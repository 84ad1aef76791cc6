"""hack/bench --scaling without a cluster: the straight-line fit, the projection table and the tier-L memory
check follow from the stored tiers' figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.results import Results
from bench.scaling import fit, load, rss_check, table

ROOT = Path(__file__).resolve().parents[2]


def test_two_points_give_the_line_through_them() -> None:
    line = fit([2_000, 11_000], [88.5, 151.5])
    assert line.slope == pytest.approx(63 / 9_000)
    assert line.at(2_000) == pytest.approx(88.5) and line.at(11_000) == pytest.approx(151.5)
    assert line.worst_residual == pytest.approx(0)


def test_three_points_are_fitted_and_the_worst_residual_reported() -> None:
    line = fit([1, 2, 3], [1, 2, 4])  # least squares: slope 1.5, intercept -2/3
    assert line.slope == pytest.approx(1.5) and line.intercept == pytest.approx(-2 / 3)
    assert line.worst_residual == pytest.approx(abs(line.at(1) - 1) / 1)


@pytest.mark.parametrize("xs", [[1], [3, 3]])
def test_a_line_needs_two_distinct_points(xs: list[float]) -> None:
    with pytest.raises(ValueError, match="point"):
        fit(xs, [1.0] * len(xs))


def _tier(tmp: Path, name: str, pods: int, rss: float, cold: float) -> None:
    doc = json.loads((ROOT / "hack" / "bench-results" / "results-M.json").read_text())
    r = doc["results"]
    r.update(tier=name, pods=pods, rss_steady_mib=rss, cold_s=cold)
    (tmp / f"results-{name}.json").write_text(json.dumps(doc))


def test_tier_l_memory_is_checked_against_the_s_m_slope(tmp_path: Path) -> None:
    _tier(tmp_path, "S", 1_000, 100.0, 20.0)
    _tier(tmp_path, "M", 10_000, 190.0, 110.0)  # 10 MiB per 1,000 pods
    _tier(tmp_path, "L", 50_000, 645.0, 520.0)  # predicted 590: 1.09 times, within
    tiers = load(tmp_path)
    assert [t.tier for t in tiers] == ["S", "M", "L"]
    check = rss_check(tiers)
    assert check is not None
    predicted, measured, ratio = check
    assert predicted == pytest.approx(590.0) and measured == 645.0 and ratio == pytest.approx(645 / 590)
    assert "within 10%: met" in table(tiers)[-1]
    _tier(tmp_path, "L", 50_000, 650.0, 520.0)  # 1.10 times: just outside
    assert "**missed**" in table(load(tmp_path))[-1]


def test_the_table_projects_growing_figures_only(tmp_path: Path) -> None:
    _tier(tmp_path, "S", 1_000, 100.0, 20.0)
    _tier(tmp_path, "M", 10_000, 190.0, 110.0)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table(load(tmp_path))}
    # pods held = tier pods + 1,000 fan-out pods: 2,000 and 11,000; 10 MiB per 1,000 -> 100,000 pods: 1,080
    assert "1,080 MiB" in rows["RSS steady"] and "1,580 MiB" in rows["RSS steady"]
    assert rows["fan-out delete"].count("s |") == 2  # measured only, nothing projected


def test_one_tier_is_not_a_curve(tmp_path: Path) -> None:
    _tier(tmp_path, "M", 10_000, 190.0, 110.0)
    with pytest.raises(SystemExit, match="two tiers"):
        load(tmp_path)


def test_stored_results_round_trip_the_commit() -> None:
    doc = json.loads((ROOT / "hack" / "bench-results" / "results-M.json").read_text())
    doc["results"]["commit"] = "abc123"
    assert Results.from_json(doc["results"]).to_json()["commit"] == "abc123"


def test_tier_l_is_not_held_to_tier_m_memory_target() -> None:
    doc = json.loads((ROOT / "hack" / "bench-results" / "results-M.json").read_text())
    r = Results.from_json({**doc["results"], "tier": "L", "pods": 50_000, "rss_steady_mib": 600.0})
    from bench.results import targets  # noqa: PLC0415

    assert "rss_steady_mib" not in targets(r)
    assert (
        targets(Results.from_json({**doc["results"], "rss_steady_mib": 600.0}))["rss_steady_mib"].met is False
    )
