"""The operator's store: the engine's :class:`World` (parsed models only, never bodies), each pod's
result, the migration's inputs and each pod's migration status (:class:`Migrations`), the digest of the
NMIVerdict status each pod calls for, and the records of the operator's own objects. Every lookup is
O(1) by key; pods by node and IP come from the World's index (what a node agent asks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nmisim.controller import status as S
from nmisim.controller.migration import Migrations, class_counts
from nmisim.controller.records import ObjectRecord, VerdictRecord, digest
from nmisim.engine.config import CONFIG_NAME, SimulationConfig
from nmisim.engine.models import KIND_POD, Pod
from nmisim.engine.verdict import PodResult
from nmisim.engine.world import World

log = logging.getLogger(__name__)

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


@dataclass(slots=True)
class Desired:
    """What a pod's NMIVerdict status must say: built once per change of the pod's result (or of the pod
    it is built for), with its digest and the Event reason it stands for. ``status`` is dropped once a
    verdict in step with it is known (a drift rebuilds it: :meth:`Store.desired`)."""

    digest: int
    reason: str | None
    uid: str
    status: dict[str, Any] | None


class Store:
    """Pods are evaluated one by one (:meth:`evaluate`); what their NMIVerdicts must say is built once
    per batch of evaluations (:meth:`settle`), after their workloads' migration is assessed."""

    def __init__(self) -> None:
        self.world = World()
        self.migration = Migrations()
        self._pending: set[Key] = set()  # pods whose desired status is to be built at settle
        self._results: dict[str, dict[str, PodResult]] = {}  # namespace -> name -> result
        # what each pod's verdict should say, for the pod uid it was built for (the status names it)
        self._desired: dict[Key, Desired] = {}
        self.verdicts: dict[Key, VerdictRecord] = {}
        self.exceptions: dict[Key, ObjectRecord] = {}
        self.config_record: ObjectRecord | None = None
        self.config_error: str | None = None
        self.terminating: set[Key] = set()
        self.totals_dirty = True

    # --- pods -------------------------------------------------------------------------------------

    def evaluate(self, pod: Pod) -> Evaluation:
        """Evaluate a pod the World holds and keep its result; its desired status waits for
        :meth:`settle`. A changed result marks the pod's workload for a migration assessment."""
        key = (pod.namespace, pod.name)
        result = self.world.evaluate(pod)
        per_ns = self._results.setdefault(pod.namespace, {})
        old = per_ns.get(pod.name)
        per_ns[pod.name] = result
        known = self._desired.get(key)
        if old != result or known is None or known.uid != pod.uid:
            self._pending.add(key)
        if old != result:
            self.totals_dirty = True
            self.migration.mark(key)
        return Evaluation(old, result)

    def settle(self, budget: int | None = None) -> set[Key]:
        """Assess the workloads marked since the last settle (about ``budget`` pods of them, when given),
        then build the desired status of every pod whose result or migration status changed and whose
        migration is not waiting for an assessment (digest and Event reason kept); those pods' keys."""
        migration = self.migration
        changed = migration.assess(self.world, self._result_of, budget)
        if changed:
            self.totals_dirty = True
        keys = self._pending | changed
        self._pending = {k for k in keys if migration.dirty(k)}
        keys -= self._pending
        for key in keys:
            pod = self.world.get_pod(*key)
            result = self.result(*key)
            if pod is None or result is None:
                continue
            status = S.verdict_status(result, pod, migration.status(key))
            desired = Desired(digest(status), S.event_reason(status), pod.uid, status)
            record = self.verdicts.get(key)
            if record is not None and record.owner_uid == pod.uid and record.semantic == desired.digest:
                desired.status = None  # the verdict says it already: nothing to write
            self._desired[key] = desired
        return keys

    def _result_of(self, key: Key) -> PodResult | None:
        return self.result(*key)

    @property
    def unsettled(self) -> bool:
        """Pods wait for a desired status or a migration assessment."""
        return bool(self._pending) or self.migration.pending > 0

    def forget_pod(self, namespace: str, name: str) -> PodResult | None:
        """The pod is gone: forget it and its result (returned)."""
        key = (namespace, name)
        self.terminating.discard(key)
        self.world.remove(KIND_POD, namespace, name)
        self.migration.forget(key)
        self.migration.located(key, None)
        self._desired.pop(key, None)
        self._pending.discard(key)
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

    def desired(self, key: Key) -> Desired | None:
        """What the pod's verdict must say; None before the pod is evaluated."""
        return self._desired.get(key)

    def desired_status(self, pod: Pod) -> dict[str, Any] | None:
        """The status of :meth:`desired`, rebuilt from the kept result only when it was dropped (a verdict
        said it already and then drifted)."""
        desired = self._desired.get((pod.namespace, pod.name))
        if desired is None:
            return None
        if desired.status is None:
            result = self.result(pod.namespace, pod.name)
            if result is None:
                return None
            desired.status = S.verdict_status(result, pod, self.migration.status((pod.namespace, pod.name)))
        return desired.status

    def migration_counts(self) -> dict[str, dict[str, int]]:
        """Pods per migration class in each phase, over every pod with a migration status."""
        return class_counts(self.migration.statuses())

    def written(self, key: Key, record: VerdictRecord) -> None:
        """A verdict write answered with ``record``: kept, and the desired status let go once in step."""
        if record.newer_or_equal(self.verdicts.get(key)):
            self.verdicts[key] = record
        desired = self._desired.get(key)
        if desired is not None and desired.digest == record.semantic:
            desired.status = None

    # --- SimulationConfig -------------------------------------------------------------------------

    def apply_config(self, body: Mapping[str, Any] | None) -> bool:
        """SimulationConfig/default as listed or watched (None: deleted); whether the engine's
        configuration changed. One NMI refuses keeps the previous configuration (and says why)."""
        before = self.world.config
        self.totals_dirty = True
        if body is None:
            self.config_record, self.config_error = None, None
            self.world.set_config(SimulationConfig.default())
            return self._config_changed(before)
        self.config_record = ObjectRecord.from_body(body)
        try:
            config = SimulationConfig.from_k8s(body)
        except ValueError as exc:
            self.config_error = str(exc)
            log.warning("SimulationConfig %s refused, keeping the previous one: %s", CONFIG_NAME, exc)
            return False
        self.config_error = None
        self.world.set_config(config)
        return self._config_changed(before)

    def _config_changed(self, before: SimulationConfig) -> bool:
        if self.world.config == before:
            return False
        self.migration.mark_all()  # NMI's flags, the VMs' identities and the Workload Identity side
        return True
