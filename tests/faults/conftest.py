"""Fixtures of the fault tests: the embedded cluster only (they restart its components), and an operator
process of each test's own, authenticated as the manifests' ServiceAccount, that the test may kill."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import REPORT, Operator
from tests.support import CLUSTER_DIR, ROOT, Cluster, token_kubeconfig

OperatorFactory = Callable[..., Operator]


#: the cluster of their own that `make test-faults` gives them (NMISIM_CLUSTER_DIR)
FAULTS_CLUSTER = ROOT / ".cluster-faults"


def asked_for(markexpr: str, cluster_dir: Path) -> bool:
    """Fault tests run where they were asked for: a -m expression that names them (pytest's own marker
    selection then decides, so `-m 'not faults'` still leaves them out), or their own cluster. Anywhere
    else, `pytest` or `pytest tests/faults/test_x.py::test_y` against the shared cluster, they are
    skipped with the way to run them (and are not deselected: no silent exit 5)."""
    return "faults" in markexpr or cluster_dir.resolve() == FAULTS_CLUSTER.resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = None
    if not asked_for(str(config.getoption("markexpr") or ""), CLUSTER_DIR):
        skip = pytest.mark.skip(
            reason="fault tests restart cluster components: run them on their own cluster with "
            "`make test-faults`, or select them with `-m faults`"
        )
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.cluster)
            if skip is not None:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("faults injected and figures observed")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def local(installed: Cluster) -> Cluster:
    if not installed.local:
        pytest.skip("fault tests restart cluster components: they need the embedded cluster")
    return installed


@pytest.fixture(scope="session")
def sa_kubeconfig(local: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return token_kubeconfig(local, tmp_path_factory.mktemp("sa") / "kubeconfig", "nmisim-system", "nmisim")


@pytest.fixture
def operators(sa_kubeconfig: Path, tmp_path: Path) -> Iterator[OperatorFactory]:
    """Make operator processes (not started); every one is stopped at the end of the test."""
    made: list[Operator] = []

    def make(*extra: str, log: str = "operator.log", kubeconfig: Path | None = None) -> Operator:
        op = Operator(kubeconfig or sa_kubeconfig, tmp_path / log, *extra)
        op.log.write_text("")
        made.append(op)
        return op

    yield make
    for op in made:
        op.stop()


@pytest.fixture
def operator(operators: OperatorFactory) -> Operator:
    """One operator, started and seeded."""
    op = operators()
    op.start()
    return op
