"""The operator's store: the engine's :class:`World` (parsed models only, never bodies), each pod's
result and the digest of the NMIVerdict status it calls for, and the records of the operator's own
objects. Every lookup is O(1) by key; pods by node and IP come from the World's index (what a node
agent asks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.controller import status as S
from nmisim.controller.records import ObjectRecord, VerdictRecord, digest
from nmisim.engine.config import SimulationConfig
from nmisim.engine.models import KIND_POD, Pod
from nmisim.engine.verdict import PodResult
from nmisim.engine.world import World

log = logging.getLogger(__name__)

CONFIG_NAME: Final = "default"

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A pod's result before and after an evaluation."""

    old: PodResult | None
    new: PodResult

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def exceptions_touched(self) -> bool:
        """Whether the exceptions of the pod's namespace may count it differently."""
        old = self.old
        return old is None or old.verdict != self.new.verdict or old.exceptions != self.new.exceptions


class Store:
    def __init__(self) -> None:
        self.world = World()
        self._results: dict[str, dict[str, PodResult]] = {}  # namespace -> name -> result
        # what each pod's verdict should say: the digest of its status and the Event reason it stands for,
        # for the pod uid it was built for (the status names it)
        self._desired: dict[Key, tuple[int, str | None, str]] = {}
        self.verdicts: dict[Key, VerdictRecord] = {}
        self.exceptions: dict[Key, ObjectRecord] = {}
        self.config_record: ObjectRecord | None = None
        self.config_error: str | None = None
        self.terminating: set[Key] = set()
        self.totals_dirty = True

    # --- pods -------------------------------------------------------------------------------------

    def evaluate(self, pod: Pod) -> Evaluation:
        """Evaluate a pod the World holds; its result and desired-status digest are kept."""
        key = (pod.namespace, pod.name)
        result = self.world.evaluate(pod)
        per_ns = self._results.setdefault(pod.namespace, {})
        old = per_ns.get(pod.name)
        per_ns[pod.name] = result
        known = self._desired.get(key)
        if old != result or known is None or known[2] != pod.uid:
            desired = S.verdict_status(result, pod)
            self._desired[key] = (digest(desired), S.event_reason(desired), pod.uid)
        if old != result:
            self.totals_dirty = True
        return Evaluation(old, result)

    def forget_pod(self, namespace: str, name: str) -> PodResult | None:
        """The pod is gone: forget it and its result (returned)."""
        key = (namespace, name)
        self.terminating.discard(key)
        self.world.remove(KIND_POD, namespace, name)
        self._desired.pop(key, None)
        per_ns = self._results.get(namespace, {})
        old = per_ns.pop(name, None)
        if not per_ns:
            self._results.pop(namespace, None)
        if old is not None:
            self.totals_dirty = True
        return old

    def result(self, namespace: str, name: str) -> PodResult | None:
        return self._results.get(namespace, {}).get(name)

    def results(self) -> Iterator[PodResult]:
        return (r for per_ns in self._results.values() for r in per_ns.values())

    def results_in(self, namespace: str) -> Iterator[PodResult]:
        return iter(self._results.get(namespace, {}).values())

    def __len__(self) -> int:
        """Pods evaluated."""
        return sum(len(per_ns) for per_ns in self._results.values())

    def pods_at(self, node: str, ip: str) -> list[Pod]:
        return self.world.pods_at(node, ip)

    def desired_verdict(self, pod: Pod) -> dict[str, Any] | None:
        """The NMIVerdict status the pod calls for (built from its kept result); None before evaluation."""
        result = self.result(pod.namespace, pod.name)
        return None if result is None else S.verdict_status(result, pod)

    def verdict_in_step(self, key: Key, record: VerdictRecord) -> bool:
        """The verdict says what its pod calls for (ignoring bookkeeping fields)."""
        desired = self._desired.get(key)
        return desired is not None and desired[0] == record.semantic

    def desired_reason(self, key: Key) -> str | None:
        """The Event reason the pod's desired verdict stands for."""
        desired = self._desired.get(key)
        return None if desired is None else desired[1]

    # --- SimulationConfig -------------------------------------------------------------------------

    def apply_config(self, body: Mapping[str, Any] | None) -> bool:
        """SimulationConfig/default as listed or watched (None: deleted); whether the engine's
        configuration changed. One NMI refuses keeps the previous configuration (and says why)."""
        before = self.world.config
        self.totals_dirty = True
        if body is None:
            self.config_record, self.config_error = None, None
            self.world.set_config(SimulationConfig.default())
            return self.world.config != before
        self.config_record = ObjectRecord.from_body(body)
        try:
            config = SimulationConfig.from_k8s(body)
        except ValueError as exc:
            self.config_error = str(exc)
            log.warning("SimulationConfig %s refused, keeping the previous one: %s", CONFIG_NAME, exc)
            return False
        self.config_error = None
        self.world.set_config(config)
        return self.world.config != before
