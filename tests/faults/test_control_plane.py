"""API server and etcd restarts, and watch expiry (410 Gone): the operator survives, relists, converges."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import OperatorFactory
from tests.faults.helpers import (
    Operator,
    apply,
    audit_events,
    converge,
    deployment,
    etcd_compact,
    pods_running,
    report,
)
from tests.support import Cluster, eventually, exception, settle

PODS = 40


def _workload(cluster: Cluster, op: Operator, namespace: str) -> None:
    """40 pods, half of them exempt by an exception; converged and quiet."""
    deployment(cluster, namespace, "a", PODS // 2, {"app": "a"})
    deployment(cluster, namespace, "b", PODS // 2, {"app": "b"})
    apply(cluster, namespace, exception("exc", {"app": "a"}))
    pods_running(cluster, namespace, PODS)
    converge(cluster, [namespace])
    settle(op)


def _changes(cluster: Cluster, namespace: str) -> str:
    """Changes the operator does not see as they happen: a scale-down, an exception now matching the other
    half, a verdict deleted by someone else."""
    cluster.kubectl("scale", "deployment", "a", "--replicas=15", "-n", namespace)
    cluster.kubectl(
        "patch", "apie", "exc", "-n", namespace, "--type=merge", "-p", '{"spec":{"podLabels":{"app":"b"}}}'
    )
    victim = cluster.get_json("pods", "-n", namespace, "-l", "app=b")["items"][0]["metadata"]["name"]
    cluster.kubectl("delete", "nmiverdict", victim, "-n", namespace)
    return "5 pods deleted, the exception moved to the other 20 pods, 1 verdict deleted"


def _outage(cluster: Cluster, op: Operator, component: str, seconds: float) -> tuple[float, int]:
    """Stop a component for a while; return the operator's CPU seconds and log lines meanwhile."""
    cpu, lines = op.cpu_seconds(), len(op.log.read_text(errors="replace").splitlines())
    cluster.cluster_sh("stop", component)
    try:
        time.sleep(seconds)
        assert op.alive, f"operator exited while {component} was down"
        used = op.cpu_seconds() - cpu
        logged = len(op.log.read_text(errors="replace").splitlines()) - lines
    finally:
        cluster.cluster_sh("start", component)
        if component == "kube-apiserver":
            _controllers_again(cluster)
    eventually(lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, timeout=60)
    return used, logged


def _controllers_again(cluster: Cluster) -> None:
    """The embedded kube-controller-manager does not recover from an API server restart by itself (its
    ServiceAccount controller stalls): restart it, as a kubelet would restart a static pod."""
    cluster.cluster_sh("restart", "kube-controller-manager")


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_outage(
    local: Cluster, operators: OperatorFactory, namespace: str, component: str
) -> None:
    op = operators()
    op.start()
    _workload(local, op, namespace)
    before = audit_events(local, [namespace]).total
    outage = 20.0
    cpu, logged = _outage(local, op, component, outage)
    back = time.monotonic()
    # Changes as soon as the server is back, while the operator may still be backing off.
    what = _changes(local, namespace)
    converge(local, [namespace], timeout=60)
    seconds = time.monotonic() - back
    settle(op)
    audit = audit_events(local, [namespace])
    assert audit.problems == [], audit.problems[:10]
    assert op.alive and op.tracebacks() == []
    assert cpu < 0.25 * outage, f"operator used {cpu:.1f} CPU-s during a {outage:.0f}s outage: spinning"
    report(
        f"{component}-outage",
        f"{component} stopped {outage:.0f}s; as soon as it was back: {what}",
        f"operator alive, {cpu:.2f} CPU-s and {logged} log lines during the outage; converged "
        f"{seconds:.1f}s after the server was back; "
        f"pod Events {before} -> {audit.total}, 0 repeated",
    )


def test_watch_expiry_410_relists(local: Cluster, operators: OperatorFactory, namespace: str) -> None:
    """The operator's watches resume from a resourceVersion etcd has compacted away and the restarted API
    server's watch cache never had: 410 Gone, relist, and the changes it missed are seen."""
    op = operators("--debug")
    op.start()
    _workload(local, op, namespace)
    before = audit_events(local, [namespace])
    # Frozen first, so that the restart closes its watches before it could read a single change.
    op.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        local.cluster_sh("restart", "kube-apiserver")
        _controllers_again(local)
        what = _changes(local, namespace)
        revision = etcd_compact()
    finally:
        op.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    resumed = time.monotonic()
    converge(local, [namespace], timeout=60)
    seconds = time.monotonic() - resumed
    settle(op)
    gone = op.log.read_text(errors="replace").count("relisting after 410 Gone")
    assert gone >= 1, "no 410 Gone seen in the operator's log"
    audit = audit_events(local, [namespace])
    assert audit.problems == [], audit.problems[:10]
    # Every remaining pod changed once (the exception moved): exactly one Event more than before, none
    # repeated by the relist, none for the verdict put back.
    remaining = [p["metadata"]["uid"] for p in local.get_json("pods", "-n", namespace)["items"]]
    added = {u: len(audit.by_uid.get(u, [])) - len(before.by_uid.get(u, [])) for u in remaining}
    assert set(added.values()) == {1}, {u: audit.by_uid.get(u) for u, n in added.items() if n != 1}
    report(
        "watch-expiry-410",
        f"operator frozen; API server restarted; {what}; etcd compacted at revision {revision}; resumed",
        f"{gone} watch streams answered 410 Gone and relisted; converged {seconds:.1f}s after resuming; "
        f"pod Events {before.total} -> {audit.total}: exactly 1 more for each of the {len(remaining)} pods "
        "(one per transition), 0 repeated",
    )
