"""A hypothesis state machine over the operator's side: informer events (adds, changes, duplicates,
older resourceVersions, deletes of what is not there, relists that drop objects, configuration changes)
go through the controller's :class:`Intake` into its :class:`Store`; after every step, every pod's kept
result and the NMIVerdict status it calls for equal a fresh evaluation of the final objects, and so do
the totals that SimulationConfig's status publishes. Objects are generated as in test_store_stateful,
plus Deployment replicas, ServiceAccounts and Namespaces: each pod's ``status.migration``, assessed
incrementally (only what changed), equals the migration engine's answer for its whole workload built
fresh, as ``nmisim migrate`` would compute it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_store_stateful import (
    CLIENT_IDS,
    IPS,
    NAMESPACES,
    NODES,
    PROVIDER,
    Key,
    configs,
    fresh,
    key_of,
    objects,
    pods,
)

from nmisim.controller import status as S
from nmisim.controller.controller import Controller
from nmisim.controller.migration import class_counts, migration_status
from nmisim.controller.records import digest
from nmisim.engine.config import CONFIG_NAME
from nmisim.engine.migration.assess import MigrationInput, PodEntry, assess
from nmisim.engine.migration.objects import (
    CLIENT_ID_ANNOTATION,
    USE_LABEL,
    Namespace,
    PodSpec,
    ServiceAccount,
)
from nmisim.engine.migration.plan import WorkloadRef
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
)
from nmisim.engine.world import World


def with_version(obj: dict[str, Any], version: int, uid: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version), "uid": uid}}


def migrations(
    world: World, objects: dict[Key, dict[str, Any]], others: dict[Key, dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each pod's migration status from the engine, one whole workload at a time, from the final
    objects."""
    sas = {(o["metadata"]["namespace"], o["metadata"]["name"]): ServiceAccount.from_k8s(o)
           for k, o in others.items() if k[0] == "ServiceAccount"}  # fmt: skip
    nss = {o["metadata"]["name"]: Namespace.from_k8s(o) for k, o in others.items() if k[0] == "Namespace"}
    groups: dict[WorkloadRef, list[PodEntry]] = {}
    for (kind, ns, name), body in objects.items():
        if kind != KIND_POD:
            continue
        pod = world.get_pod(ns, name)
        assert pod is not None
        spec = PodSpec.from_k8s(body)
        ref = WorkloadRef(*spec.workload())
        groups.setdefault(ref, []).append(PodEntry(pod, spec, ref))
    out = {}
    for entries in groups.values():
        inp = MigrationInput(world, entries, sas, nss, service_accounts_complete=True)
        for a in assess(inp, "plan").pods:
            out[(a.namespace, a.name)] = migration_status(a)
    return out


class ControllerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.ctl = Controller()
        self.ctl.intake.seed()  # an empty cluster, listed: every event from now on is evaluated
        self.objects: dict[Key, dict[str, Any]] = {}
        self.others: dict[Key, dict[str, Any]] = {}  # ServiceAccounts and Namespaces
        self.config: dict[str, Any] | None = None
        self.version = 1

    def teardown(self) -> None:
        self.loop.close()

    def _run(self, coro: Any) -> None:
        self.loop.run_until_complete(coro)

    def _next(self, obj: dict[str, Any], incarnation: int = 1) -> dict[str, Any]:
        self.version += 1
        return with_version(obj, self.version, f"u-{obj['metadata']['name']}-{incarnation}")

    @rule(obj=objects, incarnation=st.sampled_from((1, 2)))
    def upsert(self, obj: dict[str, Any], incarnation: int) -> None:
        """An add or change; another incarnation is a new object of the same name (a new uid)."""
        obj = self._next(obj, incarnation)
        self._run(self.ctl.intake.upsert(obj["kind"], obj))
        self.objects[key_of(obj)] = obj

    @rule(
        ns=st.sampled_from(NAMESPACES),
        name=st.sampled_from(("x", "y")),
        node=st.sampled_from(NODES),
        ip=st.sampled_from(IPS),
    )
    def bound_host_pod(self, ns: str, name: str, node: str, ip: str) -> None:
        """A hostNetwork pod NMI would serve its identity (an identity MIC assigns, a binding, the label):
        its answer depends on the other pods that share its node IP (HostNetworkIdentityExposed)."""
        identity = {
            "kind": KIND_IDENTITY,
            "metadata": {"name": "bound-id", "namespace": ns},
            "spec": {
                "type": 0,
                "clientID": CLIENT_IDS[0],
                "resourceID": f"/subscriptions/s/resourcegroups/r/providers/{PROVIDER}/bound-id",
            },
        }
        binding = {
            "kind": KIND_BINDING,
            "metadata": {"name": "bound-b", "namespace": ns},
            "spec": {"azureIdentity": "bound-id", "selector": "bound"},
        }
        pod = {
            "kind": KIND_POD,
            "metadata": {"name": name, "namespace": ns, "labels": {"aadpodidbinding": "bound"}},
            "spec": {"nodeName": node, "hostNetwork": True},
            "status": {"phase": "Running", "podIP": ip},
        }
        for obj in (identity, binding, pod):
            self.upsert(obj, 1)

    @rule(
        ns=st.sampled_from(NAMESPACES),
        name=st.sampled_from(("x", "y", "z")),
        sel=st.sampled_from(("s1", "s2", "")),
        sa=st.sampled_from(("default", "app")),
        labelled=st.booleans(),
        ip=st.sampled_from(IPS),
        image=st.sampled_from(("app:1", "app:2")),
    )
    def replica(  # noqa: PLR0917 - hypothesis passes the drawn values by name
        self, ns: str, name: str, sel: str, sa: str, labelled: bool, ip: str, image: str
    ) -> None:
        """A pod of Deployment ``web`` (ReplicaSet ``web-abc``): its migration is its workload's."""
        labels = {"pod-template-hash": "abc", **({"aadpodidbinding": sel} if sel else {})}
        if labelled:
            labels[USE_LABEL] = "true"
        pod = {
            "kind": KIND_POD,
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}],
            },
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": sa,
                "containers": [{"name": "c", "image": image}],
            },
            "status": {"phase": "Running", "podIP": ip},
        }
        self.upsert(pod, 1)

    @rule(
        ns=st.sampled_from(NAMESPACES),
        name=st.sampled_from(("default", "app", "web")),
        cid=st.sampled_from((None, *CLIENT_IDS)),
        gone=st.booleans(),
    )
    def service_account(self, ns: str, name: str, cid: str | None, gone: bool) -> None:
        """A ServiceAccount added, annotated, or deleted."""
        key = ("ServiceAccount", ns, name)
        if gone:
            self._run(self.ctl.intake.delete("ServiceAccount", ns, name, str(self.version)))
            self.others.pop(key, None)
            return
        annotations = {CLIENT_ID_ANNOTATION: cid} if cid else {}
        meta = {"name": name, "namespace": ns, "annotations": annotations}
        sa = self._next({"kind": "ServiceAccount", "metadata": meta})
        self._run(self.ctl.intake.upsert("ServiceAccount", sa))
        self.others[key] = sa

    @rule(ns=st.sampled_from(NAMESPACES), level=st.sampled_from((None, "baseline", "privileged")))
    def namespace(self, ns: str, level: str | None) -> None:
        """A Namespace's Pod Security level (the proxy's init container is privileged)."""
        labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
        body = self._next({"kind": "Namespace", "metadata": {"name": ns, "namespace": "", "labels": labels}})
        self._run(self.ctl.intake.upsert("Namespace", body))
        self.others[("Namespace", "", ns)] = body

    @rule(obj=objects)
    def duplicate(self, obj: dict[str, Any]) -> None:
        obj = self._next(obj)
        for _ in range(2):
            self._run(self.ctl.intake.upsert(obj["kind"], obj))
        self.objects[key_of(obj)] = obj

    @rule(obj=pods)
    def older(self, obj: dict[str, Any]) -> None:
        """An event older than what is known for the same pod (a watch replaying history): ignored."""
        known = self.objects.get(key_of(obj))
        if known is None:
            return
        self._run(self.ctl.intake.upsert(KIND_POD, with_version(obj, 0, known["metadata"]["uid"])))

    @rule(obj=objects)
    def delete(self, obj: dict[str, Any]) -> None:
        _, ns, name = key_of(obj)
        self._run(self.ctl.intake.delete(obj["kind"], ns, name, str(self.version)))
        self.objects.pop(key_of(obj), None)

    @rule(
        kind=st.sampled_from((KIND_POD, KIND_EXCEPTION, KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED)),
        data=st.data(),
    )
    def relist(self, kind: str, data: st.DataObject) -> None:
        """A relist as the informer delivers it: the kept objects again, deletes for the others."""
        held = [o for k, o in self.objects.items() if k[0] == kind]
        kept = data.draw(st.lists(st.sampled_from(held), unique_by=key_of) if held else st.just([]))
        for o in kept:
            self._run(self.ctl.intake.upsert(kind, o))
        for k in [k for k in self.objects if k[0] == kind]:
            if self.objects[k] not in kept:
                self._run(self.ctl.intake.delete(kind, k[1], k[2], str(self.version)))
                del self.objects[k]

    @rule(config=st.one_of(st.none(), configs))
    def configure(self, config: dict[str, Any] | None) -> None:
        if config is None:
            self._run(self.ctl.intake.delete(KIND_CONFIG, "", CONFIG_NAME, str(self.version)))
        else:
            config = self._next(config)
            self._run(self.ctl.intake.upsert(KIND_CONFIG, config))
        self.config = config

    @invariant()
    def equals_a_fresh_evaluation(self) -> None:
        world = fresh(self.objects, self.config)
        store = self.ctl.store
        expected = {}
        migration = migrations(world, self.objects, self.others)
        for pod in world.pods():
            result = world.evaluate(pod)
            key = (pod.namespace, pod.name)
            expected[key] = (result, S.verdict_status(result, pod, migration[key]))
        got = {
            (pod.namespace, pod.name): (store.result(pod.namespace, pod.name), store.desired_status(pod))
            for pod in store.world.pods()
        }
        assert got == expected
        for key, (_, status) in expected.items():
            # what decides whether a verdict is written: the digest and Event reason kept per pod
            desired = store.desired(key)
            assert desired is not None, key
            assert (desired.digest, desired.reason, desired.uid) == (
                digest(status),
                S.event_reason(status),
                status["podUID"],
            ), key
        assert S.totals(store.results()) == S.totals(r for r, _ in expected.values())
        assert store.migration_counts() == class_counts(migration.values())


TestController = ControllerMachine.TestCase
TestController.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
