"""The reconcilers through their Writer, with a fake one: what each writes, in which order, for the cases
that matter (a new verdict, a 409 on create adopted or refused, a verdict deleted under a patch, drift,
a verdict in step, an exception's matched pods, findings cleared from SimulationConfig's status).

Only public entry points are used: ``seed`` (the start-up LIST), ``reconcile(key)`` (what a worker runs)
and the writes the fake records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from nmisim.controller import status as S
from nmisim.controller.api import Response
from nmisim.controller.reconciler import Controller, ObjectRecord, VerdictRecord
from nmisim.controller.writer import WriteError
from nmisim.engine.models import Pod, PodIdentityException

UID = "0a1b2c3d-0000-4000-8000-000000000001"
OTHER = "ffffffff-0000-4000-8000-000000000002"


def pod(labels: Mapping[str, str] | None = None, uid: str = UID) -> Pod:
    return Pod.from_k8s(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": uid,
                "resourceVersion": "5",
                "labels": dict(labels or {}),
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"},
        }
    )


def verdict_body(owner: str, status: Mapping[str, Any] | None = None, rv: str = "7") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "resourceVersion": rv,
            "ownerReferences": [{"kind": "Pod", "uid": owner}],
        },
        "status": dict(status or {}),
    }


class FakeWriter:
    """Records every write; answers as told (default: success, echoing a body)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Response] = {}
        self.existing: dict[str, Any] | None = None  # what GET nmiverdict returns

    def _answer(self, op: str, body: Any) -> Response:
        return self.answers.get(op) or Response(201 if op == "create" else 200, body)

    async def create_verdict(self, pod: Pod) -> Response:
        self.calls.append(("create", pod.name))
        return self._answer("create", verdict_body(pod.uid, rv="8"))

    async def get_verdict(self, namespace: str, name: str) -> Response:
        self.calls.append(("get", name))
        return Response(200, self.existing) if self.existing else Response(404, {})

    async def patch_verdict_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("patch", dict(status)))
        return self._answer("patch", verdict_body(UID, status, rv="9"))

    async def delete_verdict(self, namespace: str, name: str, uid: str | None = None) -> Response:
        self.calls.append(("delete", name))
        return Response(200, {})

    async def patch_exception_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("exception", dict(status)))
        return Response(
            200,
            {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "20"}, "status": status},
        )

    async def patch_config_status(self, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("config", dict(status)))
        return Response(200, {"metadata": {"name": name, "resourceVersion": "30"}, "status": status})

    async def list_metadata(self, path: str) -> tuple[str, dict[tuple[str, str], str]]:
        return "1", {}

    async def list_events(self) -> list[dict[str, Any]]:
        return []

    async def post_event(self, *, name: str, reason: str, **_: Any) -> Response:
        self.calls.append(("event", (name, reason)))
        return Response(201, {})

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


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
        return fake

    fake = run(go())
    assert fake.ops() == ["create", "event", "patch"]
    assert fake.calls[1][1] == (f"p.{UID[:8]}.1", S.REASON_DENIED)
    status = fake.calls[2][1]
    assert status["transitions"] == 1 and status["observedPodResourceVersion"] == "5"


def test_a_409_on_create_adopts_the_pods_own_verdict() -> None:
    async def go() -> FakeWriter:
        ctl, fake = controller(pod())
        fake.answers["create"] = Response(409, {"message": "exists"})
        fake.existing = verdict_body(UID)
        await ctl.reconcile(("verdict", "ns", "p"))
        return fake

    assert run(go()).ops() == ["create", "get", "event", "patch"]


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
        return fake

    assert run(go()).ops() == ["delete", "create", "event", "patch"]


def test_a_verdict_deleted_under_the_patch_is_forgotten_and_queued_again() -> None:
    async def go() -> tuple[FakeWriter, Controller]:
        ctl, fake = controller(pod())
        fake.answers["patch"] = Response(404, {"message": "not found"})
        await ctl.reconcile(("verdict", "ns", "p"))
        return fake, ctl

    fake, ctl = run(go())
    assert fake.ops() == ["create", "event", "patch"]
    assert ("ns", "p") not in ctl.verdicts and len(ctl.queue) == 1


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
        ctl.verdict_observed(verdict_body(UID, {**written, "verdict": "exempt"}, rv="10"), deleted=False)
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
