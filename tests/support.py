"""Helpers for tests against a real cluster (the embedded local one, or any KUBECONFIG)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_KUBECONFIG = ROOT / ".cluster" / "kubeconfig"


def kubectl_path() -> str:
    venv = Path(sys.executable).parent / "kubectl"
    if venv.exists():
        return str(venv)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make install`")
    return found


@dataclass
class Cluster:
    """A reachable cluster and how to talk to it."""

    kubeconfig: Path
    local: bool  # the embedded cluster from hack/cluster.sh (fault tests need it)
    kubectl_bin: str

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, check=False, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def cluster_sh(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not self.local:
            pytest.skip("needs the embedded local cluster (hack/cluster.sh)")
        return subprocess.run(
            [str(ROOT / "hack" / "cluster.sh"), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )


def wait_for(
    predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until predicate() is truthy; return its value or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, subprocess.SubprocessError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


def is_local_kubeconfig(kubeconfig: Path) -> bool:
    return kubeconfig.resolve() == LOCAL_KUBECONFIG.resolve()
