"""Credentials rotated under a running operator: its token is replaced and the old one stops working; the
operator keeps writing, without a restart (the one API client reads its credentials again on a 401:
nmisim.kube.client, nmisim.sources.credentials)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from tests.faults.conftest import OperatorFactory
from tests.faults.helpers import apply, report
from tests.support import Cluster, eventually, kubectl_path, pod

SYSTEM_NS = "nmisim-system"
ACCOUNT = "nmisim"


def _bound_token(cluster: Cluster, secret: str) -> str:
    """A TokenRequest token of the operator's ServiceAccount bound to a Secret: deleting the Secret
    invalidates the token (how a token is made to stop working, as when a projected token's pod goes)."""
    cluster.kubectl("create", "secret", "generic", secret, "-n", SYSTEM_NS)
    return cluster.kubectl(
        "create", "token", ACCOUNT, "-n", SYSTEM_NS, "--duration=1h",
        "--bound-object-kind", "Secret", "--bound-object-name", secret,
    ).stdout.strip()  # fmt: skip


def _kubeconfig(path: Path, server: dict[str, object], user: dict[str, str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": ACCOUNT, "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": ACCOUNT}}],
                "current-context": "c",
            }
        )
    )
    return path


def _accepted(kubeconfig: Path) -> bool:
    """Whether the API server takes the kubeconfig's token (nothing else in it authenticates: the cluster's
    own kubeconfig carries an admin client certificate, which would win over any --token)."""
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), "get", "nmiverdicts", "-A", "--request-timeout=5s"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return proc.returncode == 0


def _has_verdict(cluster: Cluster, namespace: str, name: str) -> bool:
    proc = cluster.kubectl("get", "nmiverdict", name, "-n", namespace, "-o", "json", check=False)
    return proc.returncode == 0 and bool(json.loads(proc.stdout).get("status", {}).get("verdict"))


def test_a_rotated_token_is_read_again_without_a_restart(
    local: Cluster, operators: OperatorFactory, namespace: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    old = _bound_token(local, "nmisim-rotation-a")
    token_file.write_text(old)
    server = yaml.safe_load(local.kubeconfig.read_text())["clusters"][0]["cluster"]
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server, {"tokenFile": str(token_file)})
    with_old = _kubeconfig(tmp_path / "old.kubeconfig", server, {"token": old})
    try:
        op = operators(kubeconfig=kubeconfig)
        op.start()
        assert op.proc is not None
        pid = op.proc.pid
        apply(local, namespace, pod("before"))
        eventually(lambda: _has_verdict(local, namespace, "before"), timeout=60, what="verdict of 'before'")

        # the token is replaced, and the old one stops working
        assert _accepted(with_old)
        new = _bound_token(local, "nmisim-rotation-b")
        token_file.write_text(new)
        local.kubectl("delete", "secret", "nmisim-rotation-a", "-n", SYSTEM_NS)
        eventually(lambda: not _accepted(with_old), timeout=30, what="the old token refused")
        assert _accepted(_kubeconfig(tmp_path / "new.kubeconfig", server, {"token": new}))

        started = time.monotonic()
        apply(local, namespace, pod("after"))
        eventually(lambda: _has_verdict(local, namespace, "after"), timeout=60, what="verdict of 'after'")
        took = time.monotonic() - started
        assert op.alive and op.proc.pid == pid and op.starts == 1  # the same process, never restarted
        log = op.log.read_text(errors="replace")
        assert "read them again, and they changed" in log
        assert "Traceback" not in log
        report(
            "credentials",
            "the operator's token replaced in its kubeconfig's tokenFile, the old one invalidated",
            f"the next pod's verdict written {took:.1f} s later by the same process (401, file read again)",
        )
    finally:
        for secret in ("nmisim-rotation-a", "nmisim-rotation-b"):
            local.kubectl("delete", "secret", secret, "-n", SYSTEM_NS, "--ignore-not-found", check=False)
