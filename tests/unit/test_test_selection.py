"""Which tests a pytest command line runs: fault tests are never silently deselected, and run only where
they are asked for (`-m faults`, or their own cluster), skipped elsewhere. Collection only: nothing here
reaches a cluster (no fixture runs at collection)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULT = "tests/faults/test_security.py::test_service_account_has_exactly_the_operators_permissions"

REPORTER = """
def pytest_collection_finish(session):
    for item in session.items:
        state = "SKIP" if any(True for _ in item.iter_markers("skip")) else "RUN"
        print("ITEM", item.nodeid, state)
"""


def collected(tmp_path: Path, *args: str, cluster_dir: Path | None = None) -> tuple[int, dict[str, str]]:
    """pytest --collect-only with ``args``: its exit code and {node id: RUN or SKIP}."""
    (tmp_path / "selection_reporter.py").write_text(REPORTER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env["NMISIM_CLUSTER_DIR"] = str(cluster_dir or ROOT / ".cluster")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "selection_reporter",
         "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    items = {}
    for line in proc.stdout.splitlines():
        if line.startswith("ITEM "):
            nodeid, state = line.removeprefix("ITEM ").rsplit(" ", 1)  # parametrized ids may have spaces
            items[nodeid] = state
    return proc.returncode, items


@pytest.mark.parametrize(
    ("args", "faults_cluster", "state"),
    [
        ((FAULT,), False, "SKIP"),  # asked for by name, on the shared cluster: skipped, not deselected
        ((FAULT, "-m", "faults"), False, "RUN"),
        ((FAULT,), True, "RUN"),  # make test-faults' cluster
        (("tests/faults", "-m", "faults"), True, "RUN"),  # make test-faults
    ],
)
def test_a_fault_test_is_collected(
    args: tuple[str, ...], faults_cluster: bool, state: str, tmp_path: Path
) -> None:
    cluster_dir = ROOT / ".cluster-faults" if faults_cluster else None
    code, items = collected(tmp_path, *args, cluster_dir=cluster_dir)
    assert code == 0, items
    assert items.get(FAULT) == state, items


def test_the_first_phase_of_make_test_leaves_fault_tests_out(tmp_path: Path) -> None:
    """hack/test.sh's first phase: everything but the fault and in-cluster tests."""
    code, items = collected(tmp_path, "-m", "not faults and not incluster")
    assert code == 0
    assert not [n for n in items if n.startswith(("tests/faults/", "tests/incluster/"))]
    assert any(n.startswith("tests/unit/") for n in items)
    assert any(n.startswith("tests/integration/") for n in items)


def test_bare_pytest_skips_fault_tests(tmp_path: Path) -> None:
    code, items = collected(tmp_path, "tests/faults", "tests/unit/test_scripts.py")
    assert code == 0
    faults = {n: s for n, s in items.items() if n.startswith("tests/faults/")}
    assert faults and set(faults.values()) == {"SKIP"}
    assert items["tests/unit/test_scripts.py::test_there_are_scripts"] == "RUN"
