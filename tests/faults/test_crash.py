"""SIGKILL at random points of a burst: every verdict right after the restart, no duplicate Events."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.faults.conftest import OperatorFactory
from tests.faults.helpers import apply, audit_events, converge, deployment, pods_running, report
from tests.support import Cluster, exception, settle

BURST = 300  # changing pods: an exception comes and goes while the operator is being killed
STABLE = 60  # pods whose verdict never changes: exactly one Event each


def test_sigkill_during_a_burst(local: Cluster, operators: OperatorFactory, namespace: str) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    op = operators()
    op.start()
    deployment(local, namespace, "stable", STABLE, {"role": "stable"})
    deployment(local, namespace, "burst", BURST, {"tier": "web"})
    kills, pauses = 0, []
    started = time.monotonic()
    # Changes land while the operator is up, down, or starting: the exception flips every burst pod to
    # exempt and back; a scale-down deletes pods (their verdicts must go too).
    steps: dict[int, Callable[[], object]] = {
        2: lambda: apply(local, namespace, exception("web", {"tier": "WEB"})),
        4: lambda: local.kubectl("scale", "deployment", "burst", f"--replicas={BURST - 40}", "-n", namespace),
        6: lambda: local.kubectl("delete", "apie", "web", "-n", namespace),
    }
    for i in range(8):
        time.sleep(rng.uniform(0.2, 3.0))
        op.kill()
        kills += 1
        if i in steps:
            steps[i]()
        pause = rng.uniform(0.0, 1.5)
        pauses.append(pause)
        time.sleep(pause)
        # Sometimes kill it again before it has even seeded.
        op.start(wait=rng.random() < 0.6)
    op.kill()
    chaos = time.monotonic() - started
    pods_running(local, namespace, STABLE + BURST - 40)
    restarted = time.monotonic()
    op.start()
    seconds = converge(local, [namespace], timeout=60)
    total = time.monotonic() - restarted
    settle(op)
    audit = audit_events(local, [namespace])
    assert audit.problems == [], "\n".join(audit.problems[:20])
    stable_uids = [
        p["metadata"]["uid"] for p in local.get_json("pods", "-n", namespace, "-l", "role=stable")["items"]
    ]
    stable_counts = sorted({len(audit.by_uid.get(uid, [])) for uid in stable_uids})
    assert stable_counts == [1], f"stable pods' Event counts: {stable_counts}"
    assert op.tracebacks() == []
    report(
        "sigkill-burst",
        f"{kills + 1} SIGKILLs over {chaos:.0f}s (seed {seed}) during a burst of {STABLE + BURST} pods, "
        "an exception applied/removed and 40 pods deleted while killed",
        f"converged {total:.1f}s after the last restart ({seconds:.1f}s after seeding); "
        f"{audit.total} pod Events, per-pod counts {audit.counts()}, 0 repeated; "
        f"{len(stable_uids)} unchanged pods with exactly 1 Event each",
    )
