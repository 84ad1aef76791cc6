"""The reconcilers through their Writer, with a fake one: what each writes, in which order, for the cases
that matter (a new verdict, a 409 on create adopted or refused, a verdict deleted under a patch, drift,
a verdict in step, an exception's matched pods, findings cleared from SimulationConfig's status).

Only public entry points are used: ``seed`` (the start-up LIST), ``reconcile(key)`` (what a worker runs),
``recorder.flush()`` (what the Event posters do) and the writes the fake records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from factories import UID
from factories import pod as pod_of
from fake_writer import FakeWriter, verdict_body

from nmisim.controller import status as S
from nmisim.controller.controller import Controller
from nmisim.controller.records import ObjectRecord, VerdictRecord
from nmisim.controller.writer import WriteError
from nmisim.engine.models import Pod, PodIdentityException
from nmisim.kube.client import Response

OTHER = "ffffffff-0000-4000-8000-000000000002"


def pod(labels: Mapping[str, str] | None = None, uid: str = UID) -> Pod:
    """ns/p at resourceVersion 5, the one pod of these tests."""
    return pod_of("p", "ns", dict(labels or {}), uid=uid, rv="5")


def controller(
    p: Pod, verdicts: dict[tuple[str, str], VerdictRecord] | None = None
) -> tuple[Controller, FakeWriter]:
    fake = FakeWriter()
    ctl = Controller(writer=fake)
    ctl.seed(objects=[p], exceptions=[], verdicts=verdicts or {}, config=None)
    return ctl, fake


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_new_pod_gets_a_verdict_one_event_and_its_status() -> None:
    async def go() -> FakeWriter:
        ctl, fake = controller(pod())
        await ctl.reconcile(("verdict", "ns", "p"))
        assert fake.ops() == ["create", "patch"] and ctl.recorder.pending == 1  # the Event follows
        await ctl.recorder.flush()
        return fake

    fake = run(go())
    assert fake.ops() == ["create", "patch", "event"]
    assert fake.calls[2][1] == (f"p.{UID[:8]}.1", S.REASON_DENIED)
    status = fake.calls[1][1]
    assert status["transitions"] == 1 and status["observedPodResourceVersion"] == "5"


def test_a_409_on_create_adopts_the_pods_own_verdict() -> None:
    async def go() -> FakeWriter:
        ctl, fake = controller(pod())
        fake.answers["create"] = Response(409, {"message": "exists"})
        fake.existing = verdict_body(UID)
        await ctl.reconcile(("verdict", "ns", "p"))
        await ctl.recorder.flush()
        return fake

    assert run(go()).ops() == ["create", "get", "patch", "event"]


def test_a_409_for_another_pods_verdict_is_an_error_and_nothing_more_is_written() -> None:
    async def go() -> FakeWriter:
        ctl, fake = controller(pod())
        fake.answers["create"] = Response(409, {"message": "exists"})
        fake.existing = verdict_body(OTHER)
        with pytest.raises(WriteError, match="belongs to another pod"):
            await ctl.reconcile(("verdict", "ns", "p"))
        return fake

    assert run(go()).ops() == ["create", "get"]


def test_a_verdict_of_an_earlier_pod_with_the_same_name_is_replaced() -> None:
    async def go() -> FakeWriter:
        old = VerdictRecord.from_body(verdict_body(OTHER, {"verdict": "intercepted"}))
        ctl, fake = controller(pod(), {("ns", "p"): old})
        await ctl.reconcile(("verdict", "ns", "p"))
        await ctl.recorder.flush()
        return fake

    assert run(go()).ops() == ["delete", "create", "patch", "event"]


def test_a_verdict_deleted_under_the_patch_is_forgotten_and_queued_again() -> None:
    async def go() -> tuple[FakeWriter, Controller, float | None]:
        ctl, fake = controller(pod())
        fake.answers["patch"] = Response(404, {"message": "not found"})
        key, _ = await ctl.queue.get()  # what a worker does: take the key, reconcile, requeue as asked
        requeue = await ctl.reconcile(key)
        ctl.queue.done(key)
        await ctl.recorder.flush()
        return fake, ctl, requeue

    fake, ctl, requeue = run(go())
    assert fake.ops() == ["create", "patch"]  # a transition not recorded is not announced
    # the reconciler does not hold the queue: it asks to be run again at once
    assert requeue == 0.0 and ("ns", "p") not in ctl.store.verdicts and len(ctl.queue) == 0


def test_a_verdict_in_step_is_not_written_and_drift_is_put_back_without_an_event() -> None:
    async def go() -> tuple[list[str], list[str], dict[str, Any]]:
        p = pod()
        ctl, fake = controller(p)
        await ctl.reconcile(("verdict", "ns", "p"))
        written = fake.calls[-1][1]
        # In step (a restart that lists it): nothing to write.
        ctl2, fake2 = controller(p, {("ns", "p"): VerdictRecord.from_body(verdict_body(UID, written))})
        await ctl2.reconcile(("verdict", "ns", "p"))
        # Someone edits the verdict under the running operator: its watch tells it; it puts the status
        # back, with no Event and no new transition (the pod did not change).
        ctl.intake.verdict_observed(
            verdict_body(UID, {**written, "verdict": "exempt"}, rv="10"), deleted=False
        )
        before = len(fake.calls)
        await ctl.reconcile(("verdict", "ns", "p"))
        return fake2.ops(), fake.ops()[before:], fake.calls[-1][1]

    in_step_ops, drift_ops, put_back = run(go())
    assert in_step_ops == []
    assert drift_ops == ["patch"]
    assert put_back["verdict"] == "intercepted" and put_back["transitions"] == 1


def test_a_deleted_pods_verdict_is_deleted() -> None:
    async def go() -> FakeWriter:
        record = VerdictRecord.from_body(verdict_body(UID, {"verdict": "intercepted"}))
        fake = FakeWriter()
        ctl = Controller(writer=fake)
        ctl.seed(objects=[], exceptions=[], verdicts={("ns", "p"): record}, config=None)
        await ctl.reconcile(("verdict", "ns", "p"))
        return fake

    assert run(go()).ops() == ["delete"]


def test_an_exception_that_starts_matching_announces_it_and_writes_its_status() -> None:
    async def go() -> FakeWriter:
        exc = PodIdentityException.from_k8s(
            {
                "kind": "AzurePodIdentityException",
                "metadata": {"name": "e", "namespace": "ns", "uid": OTHER, "resourceVersion": "3"},
                "spec": {"podLabels": {"app": "web"}},
            }
        )
        record = ObjectRecord.from_body({"metadata": {"uid": OTHER, "resourceVersion": "3"}, "status": {}})
        fake = FakeWriter()
        ctl = Controller(writer=fake)
        ctl.seed(objects=[pod({"app": "web"})], exceptions=[(exc, record)], verdicts={}, config=None)
        await ctl.reconcile(("exception", "ns", "e"))
        return fake

    fake = run(go())
    assert fake.ops() == ["event", "exception"]
    assert fake.calls[0][1][1] == S.REASON_EXC_MATCHES
    assert fake.calls[1][1]["matchedPods"] == 1


def test_findings_gone_from_the_config_status_are_sent_as_null() -> None:
    async def go() -> FakeWriter:
        fake = FakeWriter()
        ctl = Controller(writer=fake)
        config = {
            "apiVersion": "nmisim.dev/v1alpha1",
            "kind": "SimulationConfig",
            "metadata": {"name": "default", "resourceVersion": "2", "generation": 1},
            "spec": {},
            "status": {"findings": {"GoneFinding": 3}},
        }
        ctl.seed(objects=[pod()], exceptions=[], verdicts={}, config=config)
        await ctl.reconcile(("config", "", "default"))
        return fake

    fake = run(go())
    assert fake.ops() == ["config"]
    assert fake.calls[0][1]["findings"]["GoneFinding"] is None


def test_a_pods_waiting_event_is_posted_before_its_next_transition_is_recorded() -> None:
    """Events follow a pod's transitions one by one: its transition 1's Event, still waiting for a
    poster, is posted before transition 2's status, so a run killed at any point leaves at most the
    latest transition unannounced (and the next run announces it from the verdict)."""

    async def go() -> FakeWriter:
        first = pod()
        ctl, fake = controller(first)
        await ctl.reconcile(("verdict", "ns", "p"))  # denied: created, status; its Event waits
        moved = first.model_copy(update={"host_network": True, "resource_version": "6"})
        ctl.intake.pod_changed(moved)  # now bypass: a second transition
        await ctl.reconcile(("verdict", "ns", "p"))
        await ctl.recorder.flush()
        return fake

    fake = run(go())
    assert fake.ops() == ["create", "patch", "event", "patch", "event"]
    assert [c[1] for c in fake.calls if c[0] == "event"] == [
        (f"p.{UID[:8]}.1", S.REASON_DENIED),
        (f"p.{UID[:8]}.2", S.REASON_BYPASSED),
    ]


def test_the_plan_is_the_one_decision_the_event_path_and_reconcile_share() -> None:
    """verdicts.plan: what the intake queues on and what reconcile acts on; None once in step."""
    from nmisim.controller.verdicts import VerdictPlan, plan  # noqa: PLC0415 - the function under test

    async def go() -> tuple[FakeWriter, list[VerdictPlan | None], list[int]]:
        ctl, fake = controller(pod())
        key = ("ns", "p")
        seen = [plan(ctl.store, ctl.recorder.ledger, key)]
        queued = [len(ctl.queue)]
        work, _ = await ctl.queue.get()
        await ctl.reconcile(work)
        ctl.queue.done(work)
        seen.append(plan(ctl.store, ctl.recorder.ledger, key))
        queued.append(len(ctl.queue))
        # the pod's label changes its answer: the intake queues the key because the plan owes a write
        ctl.intake.pod_changed(pod({"aadpodidbinding": "x"}).model_copy(update={"resource_version": "6"}))
        seen.append(plan(ctl.store, ctl.recorder.ledger, key))
        queued.append(len(ctl.queue))
        return fake, seen, queued

    fake, (first, settled, after), queued = run(go())
    assert first is not None and first.create and not first.delete
    assert settled is None and fake.ops() == ["create", "patch"]
    assert after is not None and after.write and after.transition is not None
    assert not after.transition.changed  # still IMDSDenied: a new status, no new Event
    assert queued == [1, 0, 1]
