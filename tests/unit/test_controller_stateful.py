"""A hypothesis state machine over the operator's side: informer events (adds, changes, duplicates,
older resourceVersions, deletes of what is not there, relists that drop objects, configuration changes)
go through the controller's :class:`Intake` into its :class:`Store`; after every step, every pod's kept
result and the NMIVerdict status it calls for equal a fresh evaluation of the final objects, and so do
the totals that SimulationConfig's status publishes. Objects are generated as in test_store_stateful.
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
from nmisim.controller.records import digest
from nmisim.engine.config import CONFIG_NAME
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
)


def with_version(obj: dict[str, Any], version: int, uid: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version), "uid": uid}}


class ControllerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.ctl = Controller()
        self.ctl.intake.seed()  # an empty cluster, listed: every event from now on is evaluated
        self.objects: dict[Key, dict[str, Any]] = {}
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
        for pod in world.pods():
            result = world.evaluate(pod)
            expected[(pod.namespace, pod.name)] = (result, S.verdict_status(result, pod))
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


TestController = ControllerMachine.TestCase
TestController.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
