"""Drift: what the operator owns, edited by someone else, is put back; conflicts are retried fresh."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from tests.faults.conftest import OperatorFactory
from tests.faults.helpers import Operator, apply, audit_events, converge, pods_running, report
from tests.support import Cluster, eventually, exception, pod, settle


def _timed(what: str, check: Any, timeout: float = 60) -> float:
    started = time.monotonic()
    eventually(check, timeout=timeout, interval=0.2, what=what)
    return time.monotonic() - started


def _status(cluster: Cluster, *args: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(proc.stdout).get("status") or {}
    return status


def _patch_status(
    cluster: Cluster, kind: str, name: str, namespace: str | None, body: dict[str, Any]
) -> None:
    ns = ["-n", namespace] if namespace else []
    cluster.kubectl(
        "patch", kind, name, *ns, "--subresource=status", "--type=merge", "-p", json.dumps({"status": body})
    )


def _conflicts(op: Operator) -> int:
    return int(sum(v for k, v in op.metrics().items() if "nmisim_api_requests_total" in k and '"409"' in k))


def test_drift_is_put_back(local: Cluster, operator: Operator, namespace: str) -> None:
    apply(local, namespace, exception("exc", {"app": "a"}), pod("a", {"app": "a"}), pod("b"))
    pods_running(local, namespace, 2)
    converge(local, [namespace])
    settle(operator)
    before = audit_events(local, [namespace]).total
    figures: dict[str, float] = {}

    _patch_status(local, "nmiverdict", "b", namespace, {"verdict": "bypass", "findings": []})
    figures["verdict status"] = _timed(
        "verdict status put back",
        lambda: _status(local, "nmiverdict", "b", "-n", namespace)["verdict"] == "intercepted",
    )
    local.kubectl("label", "nmiverdict", "b", "-n", namespace, "app.kubernetes.io/managed-by-", "extra=x")
    local.kubectl("delete", "nmiverdict", "a", "-n", namespace)
    figures["deleted verdict"] = _timed(
        "deleted verdict put back", lambda: _status(local, "nmiverdict", "a", "-n", namespace).get("verdict")
    )
    _patch_status(local, "apie", "exc", namespace, {"matchedPods": 7, "matchedPodsSample": ["nobody"]})
    figures["exception status"] = _timed(
        "exception status put back",
        lambda: _status(local, "apie", "exc", "-n", namespace)["matchedPods"] == 1,
    )
    totals = _status(local, "simulationconfig", "default")["totals"]
    _patch_status(local, "simulationconfig", "default", None, {"totals": {**totals, "pods": 99999}})
    figures["config status"] = _timed(
        "config status put back",
        lambda: _status(local, "simulationconfig", "default")["totals"]["pods"] != 99999,
    )
    converge(local, [namespace])
    settle(operator)
    audit = audit_events(local, [namespace])
    assert audit.problems == []
    assert audit.total == before, audit.by_uid  # none of the repairs announced anything
    report(
        "drift",
        "verdict status patched by hand, a verdict's labels edited, a verdict deleted, exception and "
        "SimulationConfig status patched by hand",
        "put back in " + ", ".join(f"{k} {v:.1f}s" for k, v in figures.items()) + "; 0 extra Events",
    )


def test_conflicting_verdicts_are_replaced(
    local: Cluster, operators: OperatorFactory, namespace: str
) -> None:
    """Someone else created the NMIVerdicts first, one for the right pod with a wrong status, one claiming
    another owner: the operator's create answers 409, and it goes on from what the server has."""
    op = operators()
    op.start()
    op.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        apply(local, namespace, pod("mine"), pod("theirs"))
        uids = {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in local.get_json("pods", "-n", namespace)["items"]
        }
        for name, owner in (("mine", "mine"), ("theirs", "mine")):
            body = {
                "apiVersion": "nmisim.dev/v1alpha1",
                "kind": "NMIVerdict",
                "metadata": {
                    "name": name,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": uids[owner]}
                    ],
                },
                "spec": {},
            }
            apply(local, namespace, body)
            _patch_status(local, "nmiverdict", name, namespace, {"verdict": "exempt", "findings": []})
    finally:
        op.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    resumed = time.monotonic()
    pods_running(local, namespace, 2)
    converge(local, [namespace])
    seconds = time.monotonic() - resumed
    settle(op)
    audit = audit_events(local, [namespace])
    assert audit.problems == [] and audit.counts() == {1: 2}, audit.by_uid
    report(
        "conflict-409",
        "NMIVerdicts created by someone else before the operator (one with a wrong status, one owned by "
        "another uid)",
        f"{_conflicts(op)} HTTP 409 answers seen; both verdicts right {seconds:.1f}s after the operator "
        "resumed; 1 Event per pod",
    )
