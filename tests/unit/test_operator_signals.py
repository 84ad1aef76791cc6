"""The operator's own signals the cluster tests wait for (tests/support.py): its "seeded:" log line and
the metrics that tell it is done with what seeding queued. Read from the real Controller, so a change of
the log format breaks here and not as a timeout on a cluster."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tests.support import caught_up, parse_seeded

from nmisim.controller import status as S
from nmisim.controller.controller import Controller
from nmisim.controller.records import ObjectRecord, VerdictRecord
from nmisim.engine.models import Pod, PodIdentityException


def _pod(name: str, labels: dict[str, str]) -> Pod:
    return Pod.from_k8s(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"},
        }
    )


async def _seed() -> None:
    ctl = Controller()
    a, b = _pod("a", {"app": "a"}), _pod("b", {})
    exc = PodIdentityException.from_k8s(
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzurePodIdentityException",
            "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "3"},
            "spec": {"podLabels": {"app": "a"}},
        }
    )
    record = ObjectRecord.from_body({"metadata": {"resourceVersion": "3"}, "status": {}})
    ctl.store.world.upsert(a)
    ctl.store.world.upsert(exc)
    verdict = VerdictRecord.from_body(
        {
            "metadata": {"resourceVersion": "7", "ownerReferences": [{"kind": "Pod", "uid": "uid-a"}]},
            "status": S.verdict_status(ctl.store.world.evaluate(a), a),
        }
    )
    # a: exempt by e, its verdict in step; b: no verdict yet (1 write); e: its status looked at again (1)
    ctl.seed(objects=[a, b], exceptions=[(exc, record)], verdicts={("ns", "a"): verdict}, config=None)


def test_the_seeded_line_says_what_was_listed_and_queued(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nmisim.controller.intake"):
        asyncio.run(_seed())
    log = f"[2026-01-01 00:00:00,000] nmisim.controller.in [INFO    ] {caplog.messages[-1]}\n"
    assert parse_seeded(log) == {"pods": 2, "exceptions": 1, "verdicts": 1, "pending": 2}
    assert parse_seeded(log, start=2) == {}  # a second start has not seeded yet
    assert parse_seeded(log + log.replace("2 pods", "5 pods"), start=2)["pods"] == 5


@pytest.mark.parametrize(
    ("metrics", "pending", "done"),
    [
        ({"nmisim_reconcile_seconds_count": 0.0, "nmisim_queue_depth": 0.0}, 0, False),  # not started
        ({"nmisim_reconcile_seconds_count": 2.0, "nmisim_queue_depth": 0.0}, 2, False),  # no totals check yet
        ({"nmisim_reconcile_seconds_count": 3.0, "nmisim_queue_depth": 0.0}, 2, True),
        ({"nmisim_reconcile_seconds_count": 9.0, "nmisim_queue_depth": 4.0}, 2, False),  # still queued
        ({}, 0, False),
    ],
)
def test_caught_up(metrics: dict[str, float], pending: int, done: bool) -> None:
    assert caught_up(metrics, pending) is done
