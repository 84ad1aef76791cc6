"""Two replicas with kopf peering: one writes, the other waits; killing the active one hands over."""

from __future__ import annotations

import time

from tests.faults.conftest import OperatorFactory
from tests.faults.helpers import apply, converge, pods_running, report
from tests.support import ROOT, Cluster, eventually, pod, settle


def test_two_replicas_one_writer_and_handover(
    local: Cluster, operators: OperatorFactory, namespace: str
) -> None:
    local.kubectl("apply", "-f", str(ROOT / "manifests" / "peering" / "peering-crds.yaml"))
    local.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    local.kubectl("apply", "-f", str(ROOT / "manifests" / "peering" / "peering.yaml"))
    active = operators("--peering", "nmisim", "--priority", "200", log="active.log")
    standby = operators("--peering", "nmisim", "--priority", "100", log="standby.log")
    active.start()
    standby.start(wait=False)
    # The standby starts paused (peering is mandatory with --peering) and stays so: it lists nothing.
    eventually(lambda: "pod Events of earlier runs known" in standby.log.read_text(), timeout=30)
    apply(local, namespace, *(pod(f"p{i}") for i in range(10)))
    pods_running(local, namespace, 10)
    converge(local, [namespace])
    settle(active)
    active_writes = active.writes()
    assert active_writes > 0
    assert standby.writes() == 0, standby.writes_by_kind()
    assert standby.seeded_count() == 0  # paused from the start: it has not even seen the pods

    active.kill()
    killed = time.monotonic()
    apply(local, namespace, pod("after-the-kill"))
    eventually(
        lambda: (
            local.kubectl("get", "nmiverdict", "after-the-kill", "-n", namespace, check=False).returncode == 0
        ),
        timeout=90,
        interval=0.5,
        what="a verdict written by the standby",
    )
    handover = time.monotonic() - killed
    converge(local, [namespace])
    settle(standby)
    assert standby.tracebacks() == [] and active.tracebacks() == []
    report(
        "peering-handover",
        "two replicas (priority 200 and 100) with kopf peering; the active one SIGKILLed",
        f"standby wrote 0 times while the active one wrote {active_writes}; "
        f"first verdict by the standby {handover:.1f}s after the kill",
    )
    assert handover < 60, f"handover took {handover:.0f}s"
