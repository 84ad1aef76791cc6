"""Every ```` ```sh test ```` block in README.md and docs/*.md, run against the cluster, so the docs'
commands cannot rot (tests/unit/test_docs.py checks that every `sh` block carries a marker).

Each block runs with ``bash -euo pipefail`` in a temporary directory of its own, which holds a link to
each top-level entry of the repository (so `tests/fixtures/...`, `charts/nmisim`, `hack/cluster.sh` read
as they do in a checkout, while files a block writes land in the temporary directory), with the cluster's
KUBECONFIG, its NMISIM_CLUSTER_DIR (the embedded cluster), and `.venv/bin` and Helm first on PATH. It must
exit 0 within :data:`TIMEOUT`. The blocks are read-only or clean up after themselves, and never start,
stop or restart the cluster: they run on the one cluster every test shares.

CI runs these through `make test` (phase 1 with the operator as a local process, phase 2 with
NMISIM_OPERATOR=external against its pod on the real node); `.ci/run` runs `make test` and `make
test-faults`, nothing else. Blocks marked `ci` are covered by those targets and `manual` ones by nobody.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.docblocks import Block, sh_blocks
from tests.support import ROOT, Cluster

pytestmark = pytest.mark.cluster

TIMEOUT = 60  # seconds; `test` blocks are meant to take well under 30
BLOCKS = sh_blocks("test")
# Left out of the temporary directory: state and caches that belong to this checkout only.
NOT_LINKED = {".git", ".venv", ".cluster", ".cluster-faults", ".bench", ".mypy_cache", ".ruff_cache"}


@pytest.fixture(scope="module")
def helm_dir() -> Path:
    """The directory of the helm binary hack/helm.sh builds (once per machine; cached afterwards)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "helm.sh")], capture_output=True, text=True, check=True, timeout=1800
    )
    return Path(out.stdout.strip().splitlines()[-1]).parent


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED and not entry.name.startswith(".pytest"):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def test_there_are_test_blocks() -> None:
    assert len(BLOCKS) >= 5, [b.where for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_doc_block_runs(installed: Cluster, helm_dir: Path, workdir: Path, block: Block) -> None:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(installed.kubeconfig)
    env["PATH"] = os.pathsep.join([str(ROOT / ".venv" / "bin"), str(helm_dir), env.get("PATH", "")])
    if installed.local:
        env["NMISIM_CLUSTER_DIR"] = str(installed.kubeconfig.parent)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    took = time.monotonic() - t0
    print(f"{block.where}: exit {proc.returncode} in {took:.1f} s")
    assert proc.returncode == 0, (
        f"{block.where} exited {proc.returncode}\n--- block\n{block.text}--- stdout\n{proc.stdout[-4000:]}"
        f"--- stderr\n{proc.stderr[-4000:]}"
    )
