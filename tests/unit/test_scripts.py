"""The shell scripts in hack/: `bash -n` always; shellcheck when it is installed, and it must be where
the real node runs or in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

HACK = Path(__file__).resolve().parents[2] / "hack"
SCRIPTS = sorted(HACK.glob("*.sh"))


def test_there_are_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"cluster.sh", "k8s-bins.sh", "kind-e2e.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_executable(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def shellcheck_required(environ: Mapping[str, str]) -> bool:
    """Where the real node must run (NMISIM_REAL_NODE=1) and in CI, hack/host-deps.sh has installed
    shellcheck: its absence there is a failure, not a reason to skip."""
    ci = environ.get("CI", "").lower()
    return environ.get("NMISIM_REAL_NODE") == "1" or ci not in ("", "0", "false", "no")


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"NMISIM_REAL_NODE": "auto"}, False),
        ({"NMISIM_REAL_NODE": "0"}, False),
        ({"CI": "false"}, False),
        ({"NMISIM_REAL_NODE": "1"}, True),
        ({"CI": "true"}, True),
        ({"CI": "1", "NMISIM_REAL_NODE": "0"}, True),
    ],
)
def test_shellcheck_required(env: dict[str, str], required: bool) -> None:
    assert shellcheck_required(env) is required


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        why = "shellcheck not installed (hack/host-deps.sh installs it: apt-get install shellcheck)"
        if shellcheck_required(os.environ):
            pytest.fail(f"{why}; required where NMISIM_REAL_NODE=1 or CI is set")
        pytest.skip(why)
    proc = subprocess.run(
        [shellcheck, *(str(p) for p in SCRIPTS)], capture_output=True, text=True, check=False, cwd=HACK.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kind_e2e_help_needs_nothing_installed() -> None:
    """--help works before any prerequisite check (no docker, kind or cluster here)."""
    proc = subprocess.run(
        ["bash", str(HACK / "kind-e2e.sh"), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: hack/kind-e2e.sh")
    for var in ("KIND_CLUSTER_NAME", "KIND_NODE_IMAGE", "KEEP_CLUSTER", "SKIP_BUILD"):
        assert var in proc.stdout
