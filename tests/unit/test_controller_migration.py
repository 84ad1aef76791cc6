"""The operator's migration status (NMIVerdict ``status.migration``, SimulationConfig ``status.migration``)
through its public entry points: informer events into the intake (``upsert``/``delete``, then ``seed``
as after the first LIST), ``reconcile(key)`` and the writes a fake Writer records.

What is proven: the status says what the migration engine says for the same objects, as ``nmisim migrate``
reads them from a live cluster (``nmisim.sources.migration.from_live``); a ServiceAccount annotation moves
a workload's class and requeues that workload's pods only; a no-op event, or a restart, writes nothing;
SimulationConfig counts the classes; a rolling update assesses the new pod, not the whole Deployment; a
pod whose spec cannot be read keeps its verdict without a migration status.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from typing import Any

import pytest
from factories import CID1, pod_body, rid
from fake_writer import FakeWriter, verdict_body

from nmisim.controller.controller import Controller
from nmisim.controller.projector import CONFIG_KEY, WorkKey
from nmisim.controller.records import VerdictRecord
from nmisim.engine.config import SimulationConfig
from nmisim.engine.migration.assess import assess
from nmisim.engine.migration.classify import BLOCKED_AT_ADMISSION, CLASSES, PHASES
from nmisim.engine.migration.hazards import TOKEN_EXPIRATION_OUT_OF_BOUNDS
from nmisim.engine.migration.objects import EXPIRATION_ANNOTATION
from nmisim.engine.models import KIND_BINDING, KIND_CONFIG, KIND_IDENTITY, KIND_POD, Pod
from nmisim.engine.resources import KIND_NAMESPACE, KIND_SERVICE_ACCOUNT, parse
from nmisim.engine.world import World
from nmisim.kube.client import Response
from nmisim.sources.migration import from_live

Body = dict[str, Any]
NS = "shop"


NAMES: dict[str, str] = {}  # pod uid -> name, of every pod built here


def replica(i: int, *, sa: str = "web", ns: str = NS, deployment: str = "web", selector: str = "web") -> Body:
    """Pod ``i`` of a Deployment (ReplicaSet ``<deployment>-abc``), as the API server sends it."""
    b = pod_body(
        f"{deployment}-abc-{i}",
        ns,
        {"aadpodidbinding": selector, "pod-template-hash": "abc"},
        rs=f"{deployment}-abc",
        uid=f"uid-{deployment}-{i}",
        rv="5",
        ip=f"10.0.{len(deployment)}.{i + 1}",
    )
    b["metadata"]["ownerReferences"][0]["controller"] = True
    b["spec"]["serviceAccountName"] = sa
    NAMES[b["metadata"]["uid"]] = b["metadata"]["name"]
    return b


def service_account(name: str, ns: str = NS, annotations: dict[str, str] | None = None) -> Body:
    meta = {"name": name, "namespace": ns, "annotations": dict(annotations or {}), "resourceVersion": "3"}
    return {"apiVersion": "v1", "kind": KIND_SERVICE_ACCOUNT, "metadata": meta}


def identity_objects(ns: str = NS, selector: str = "web") -> list[Body]:
    return [
        {
            "kind": KIND_IDENTITY,
            "metadata": {"name": f"{selector}-id", "namespace": ns},
            "spec": {"type": 0, "clientID": CID1, "resourceID": rid(f"{selector}-id")},
        },
        {
            "kind": KIND_BINDING,
            "metadata": {"name": f"{selector}-b", "namespace": ns},
            "spec": {"azureIdentity": f"{selector}-id", "selector": selector},
        },
    ]


CONFIG: Body = {
    "apiVersion": "nmisim.dev/v1alpha1",
    "kind": KIND_CONFIG,
    "metadata": {"name": "default", "generation": 1, "resourceVersion": "1"},
    "spec": {},
}


class Writer(FakeWriter):
    """The fake Writer, answering for many pods: each verdict is owned by the pod it was created for."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[tuple[str, str], str] = {}

    async def create_verdict(self, pod: Pod) -> Response:
        self.calls.append(("create", pod.name))
        self.owners[(pod.namespace, pod.name)] = pod.uid
        return Response(201, self._body(pod.namespace, pod.name, {}, "8"))

    async def patch_verdict_status(self, namespace: str, name: str, status: Any) -> Response:
        self.calls.append(("patch", dict(status)))
        return Response(200, self._body(namespace, name, status, "9"))

    async def patch_config_status(self, name: str, status: Any) -> Response:
        self.calls.append(("config", dict(status)))
        meta = {"name": name, "resourceVersion": "30", "generation": CONFIG["metadata"]["generation"]}
        return Response(200, {"metadata": meta, "status": status})

    def _body(self, namespace: str, name: str, status: Any, rv: str) -> Body:
        body = verdict_body(self.owners[(namespace, name)], status, rv)
        body["metadata"].update(name=name, namespace=namespace)
        return body


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def started(
    objects: list[Body], verdicts: dict[tuple[str, str], VerdictRecord] | None = None
) -> tuple[Controller, Writer]:
    """A controller whose informers listed ``objects``, seeded; and its fake writer."""
    fake = Writer()
    ctl = Controller(writer=fake)
    for body in objects:
        await ctl.intake.upsert(str(body["kind"]), body)
    ctl.store.verdicts.update(verdicts or {})
    ctl.intake.seed()
    return ctl, fake


async def drain(ctl: Controller) -> list[WorkKey]:
    """What the workers would do: reconcile every queued key; the keys, in order."""
    done = []
    while len(ctl.queue):
        key, _ = await ctl.queue.get()
        await ctl.reconcile(key)
        ctl.queue.done(key)
        done.append(key)
    return done


def patches(fake: FakeWriter, since: int = 0) -> dict[tuple[str, str], dict[str, Any]]:
    """The verdict statuses patched (after the first ``since`` writes), by pod."""
    return {(NS, NAMES[b["podUID"]]): b for op, b in fake.calls[since:] if op == "patch"}


def engine_statuses(objects: list[Body]) -> dict[tuple[str, str], dict[str, Any]]:
    """``nmisim migrate``'s answer for the same objects read live (its own reader), per pod."""
    config = next((b for b in objects if b["kind"] == KIND_CONFIG), None)
    world = World(SimulationConfig.from_k8s(config) if config is not None else None)
    for body in objects:
        if body["kind"] in (KIND_POD, KIND_IDENTITY, KIND_BINDING):
            parsed = parse(body)
            assert parsed is not None and not isinstance(parsed, SimulationConfig)
            world.upsert(parsed)
    inp = from_live(
        world,
        pods=[b for b in objects if b["kind"] == KIND_POD],
        owners=[],
        service_accounts=[b for b in objects if b["kind"] == KIND_SERVICE_ACCOUNT],
        namespaces=[b for b in objects if b["kind"] == KIND_NAMESPACE],
        others=[],
        webhook_installed=True,
        warn=lambda _: None,
    )
    out = {}
    for a in assess(inp, "plan").pods:
        out[(a.namespace, a.name)] = {
            "class": dict(a.classes),
            "classIfSDKTooOld": dict(a.classes_if_sdk_too_old) if a.classes_if_sdk_too_old else None,
            "hazards": sorted({h.code for h in a.hazards}),
            "serviceAccount": a.service_account,
            "proxy": a.proxy,
        }
    return out


def cluster() -> list[Body]:
    """Deployment web (3 pods, an identity, ServiceAccount web) and Deployment other (2 pods, no
    identity, ServiceAccount other) in one namespace."""
    return [
        *identity_objects(),
        service_account("web"),
        service_account("other"),
        *(replica(i) for i in range(3)),
        *(replica(i, sa="other", deployment="other", selector="none") for i in range(2)),
    ]


def test_the_status_carries_the_class_the_engine_computes_for_the_same_objects() -> None:
    objects = cluster()

    async def go() -> FakeWriter:
        ctl, fake = await started(objects)
        await drain(ctl)
        return fake

    written = patches(run(go()))
    expected = engine_statuses(objects)
    assert len(expected) == 5
    assert {k: v["migration"] for k, v in written.items()} == expected
    # the engine's answer is not trivially the same for every pod: the two workloads differ
    web, other = expected[(NS, "web-abc-0")], expected[(NS, "other-abc-0")]
    assert web["class"] != other["class"] or web["hazards"] != other["hazards"]


def test_a_service_account_annotation_moves_the_class_of_its_workload_only() -> None:
    objects = cluster()
    expiring = service_account("web", annotations={EXPIRATION_ANNOTATION: "100"})  # below the 3600 s minimum

    async def go() -> tuple[list[WorkKey], dict[tuple[str, str], dict[str, Any]], Controller]:
        ctl, fake = await started(objects)
        await drain(ctl)
        before = len(fake.calls)
        await ctl.intake.upsert(KIND_SERVICE_ACCOUNT, expiring)
        keys = await drain(ctl)
        return keys, patches(fake, before), ctl

    keys, written, ctl = run(go())
    assert sorted(keys) == [("verdict", NS, f"web-abc-{i}") for i in range(3)]  # not Deployment other's
    assert sorted(written) == [(NS, f"web-abc-{i}") for i in range(3)]
    for status in written.values():
        assert status["migration"]["class"] == dict.fromkeys(PHASES, BLOCKED_AT_ADMISSION)
        assert TOKEN_EXPIRATION_OUT_OF_BOUNDS in status["migration"]["hazards"]
        assert status["transitions"] == 1  # the verdict did not change: no new transition, no Event
    assert {k: ctl.store.migration.status(k) for k in [(NS, f"web-abc-{i}") for i in range(3)]} == {
        k: v for k, v in engine_statuses([*objects, expiring]).items() if k[1].startswith("web")
    }


def test_a_no_op_event_and_a_restart_write_nothing() -> None:
    objects = cluster()

    async def go() -> tuple[int, int, int, list[str]]:
        ctl, fake = await started(objects)
        await drain(ctl)
        written = len(fake.calls)
        assessed = ctl.store.migration.assessed
        # the same pod at a newer resourceVersion; the ServiceAccount with an annotation nmisim does not
        # read (kubectl's last-applied-configuration); the Namespace listed again
        again = copy.deepcopy(objects[4])
        again["metadata"]["resourceVersion"] = "6"
        await ctl.intake.upsert(KIND_POD, again)
        noise = service_account("web", annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"})
        await ctl.intake.upsert(KIND_SERVICE_ACCOUNT, noise)
        await drain(ctl)
        no_op = len(fake.calls) - written
        reassessed = ctl.store.migration.assessed - assessed
        # a restart: the verdicts as the API server kept them (what was patched), listed with the rest
        kept = {}
        for key, status in patches(fake).items():
            meta = {"name": key[1], "namespace": NS, "resourceVersion": "9",
                    "ownerReferences": [{"kind": "Pod", "uid": status["podUID"]}]}  # fmt: skip
            kept[key] = VerdictRecord.from_body({"metadata": meta, "status": status})
        ctl2, fake2 = await started(objects, kept)
        await drain(ctl2)
        return no_op, reassessed, len(kept), fake2.ops()

    no_op, reassessed, kept, restart_ops = run(go())
    assert kept == 5
    assert no_op == 0 and reassessed == 0
    assert restart_ops == []


def test_simulation_config_counts_the_classes_and_writes_them_once() -> None:
    objects = [CONFIG, *cluster()]

    async def go() -> tuple[list[dict[str, Any]], Controller]:
        ctl, fake = await started(objects)
        await drain(ctl)
        await ctl.reconcile(CONFIG_KEY)
        await ctl.reconcile(CONFIG_KEY)  # nothing changed: no second write
        return [b for op, b in fake.calls if op == "config"], ctl

    written, ctl = run(go())
    assert len(written) == 1
    expected = engine_statuses(objects)
    for phase in PHASES:
        tally = Counter(s["class"][phase] for s in expected.values())
        assert written[0]["migration"][phase] == {c: tally[c] for c in CLASSES}
    assert sum(written[0]["migration"]["removed"].values()) == 5
    assert ctl.store.migration_counts() == written[0]["migration"]


def test_a_rolling_update_assesses_the_new_pod_not_the_whole_deployment() -> None:
    """The new pod runs a newer image (an SDK with workload identity); the workload's plan, and so the new
    pod's class, still follows its first pod's (an SDK that calls IMDS: the proxy sidecar)."""
    replicas = 20
    config = copy.deepcopy(CONFIG)
    config["spec"]["workloadIdentity"] = {
        "sdks": [
            {"image": "app:1", "sdk": "python-azure-identity==1.5.0"},
            {"image": "app:2", "sdk": "python-azure-identity==1.16.0"},
        ]
    }
    old = [replica(i) for i in range(replicas)]
    for b in old:
        b["spec"]["containers"][0]["image"] = "app:1"
    objects = [config, *identity_objects(), service_account("web"), *old]

    async def go() -> tuple[int, Controller, list[Body]]:
        ctl, _ = await started(objects)
        await drain(ctl)
        assessed = ctl.store.migration.assessed
        # one pod replaced by a new one of the same ReplicaSet (another IP, the new image), one pod gone
        new = replica(replicas)
        new["spec"]["containers"][0]["image"] = "app:2"
        await ctl.intake.delete(KIND_POD, NS, "web-abc-7", "6")
        await ctl.intake.upsert(KIND_POD, new)
        await drain(ctl)
        final = [o for o in objects if o.get("metadata", {}).get("name") != "web-abc-7"] + [new]
        return ctl.store.migration.assessed - assessed, ctl, final

    spent, ctl, final = run(go())
    assert 1 <= spent <= 3  # the new pod and the few that give the engine the workload-wide view
    expected = engine_statuses(final)
    assert {k: ctl.store.migration.status(k) for k in expected} == expected
    assert ctl.store.migration.status((NS, "web-abc-7")) is None
    assert expected[(NS, "web-abc-20")]["proxy"] is True  # the first pod's SDK decided


def test_a_pod_whose_spec_cannot_be_read_keeps_its_verdict_without_a_migration_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = replica(0)
    bad["spec"]["containers"][0]["env"] = "not a list"

    async def go() -> dict[tuple[str, str], dict[str, Any]]:
        ctl, fake = await started([*identity_objects(), service_account("web"), bad, replica(1)])
        await drain(ctl)
        return patches(fake)

    with caplog.at_level(logging.WARNING):
        written = run(go())
    bad_status, good = written[(NS, "web-abc-0")], written[(NS, "web-abc-1")]
    assert bad_status["verdict"] == "intercepted" and bad_status["migration"] is None
    assert good["migration"] is not None  # its workload is assessed without it
    assert any("web-abc-0: no migration status" in r.getMessage() for r in caplog.records)
