"""The informers' sink: watch events into the store, and what they affect (:mod:`.projector`) onto the
work queue. Until :meth:`Intake.seed` (every informer has listed once) objects are only stored; the
seed evaluates every pod once, so the first answers already see every exception, binding and verdict,
and a restart with nothing changed writes nothing."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from nmisim.controller import status as S
from nmisim.controller.events import EventRecorder, pod_event
from nmisim.controller.migration import namespace as parse_namespace
from nmisim.controller.migration import service_account as parse_service_account
from nmisim.controller.projector import (
    CONFIG_KEY,
    WorkKey,
    address_neighbours,
    exception_keys,
    pods_affected,
    verdict_key,
)
from nmisim.controller.records import ObjectRecord, VerdictRecord, rv
from nmisim.controller.store import Store
from nmisim.controller.verdicts import plan
from nmisim.controller.workqueue import WorkQueue
from nmisim.engine.config import CONFIG_NAME, SimulationConfig
from nmisim.engine.findings import HOST_NETWORK_IDENTITY_EXPOSED
from nmisim.engine.migration.objects import PodSpec
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Model,
    Pod,
    PodIdentityException,
)
from nmisim.engine.resources import KIND_NAMESPACE, KIND_SERVICE_ACCOUNT, KIND_VERDICT, resource
from nmisim.engine.resources import parse as parse_body
from nmisim.engine.verdict import VERDICT_INACTIVE
from nmisim.engine.world import World

log = logging.getLogger(__name__)

CHUNK: Final = 500  # pods re-evaluated between yields to the event loop
RECREATE_DELAY: Final = 1.0  # seconds before putting back a verdict someone deleted


class Intake:
    def __init__(
        self,
        store: Store,
        queue: WorkQueue[WorkKey],
        recorder: EventRecorder,
        *,
        exception_batch: float = 2.0,
        namespaces: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.queue = queue
        self.recorder = recorder
        self.ledger = recorder.ledger
        self.exception_batch = exception_batch
        self.namespaces = tuple(namespaces)  # glob patterns; none: every namespace
        self.seeded = False
        # while the seed yields to the event loop: what changed under it, to evaluate (again) before it ends
        self._seeding = False
        self._seed_pods: set[tuple[str, str]] = set()
        self._seed_objects: list[tuple[str, str, str]] = []
        self._batches: set[str] = set()
        self._announced_missing = False
        self._touched: set[tuple[str, str]] = set()  # pods evaluated since the last settle

    # --- the Sink protocol (nmisim.kube.informer) --------------------------------------------------

    async def upsert(self, kind: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        if not self._served(kind, str(meta.get("namespace") or "")):
            return
        if kind == KIND_VERDICT:
            self.verdict_observed(body, deleted=False)
        elif kind == KIND_CONFIG:
            if meta.get("name") == CONFIG_NAME:
                await self.config_changed(body)
        elif kind in (KIND_SERVICE_ACCOUNT, KIND_NAMESPACE):
            await self.migration_object_changed(kind, body)
        else:
            obj = parse(kind, body)
            if obj is None:  # one the engine cannot read is as good as gone
                await self.delete(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""), "")
            elif isinstance(obj, Pod):
                terminating = meta.get("deletionTimestamp") is not None
                self.pod_changed(obj, terminating=terminating, spec=pod_spec(body))
            elif isinstance(obj, PodIdentityException):
                await self.exception_changed(obj, ObjectRecord.from_body(body))
            else:
                await self.identity_object_changed(obj)

    async def delete(self, kind: str, namespace: str, name: str, resource_version: str) -> None:
        if not self._served(kind, namespace):
            return
        if kind == KIND_POD:
            self.pod_deleted(namespace, name)
        elif kind == KIND_EXCEPTION:
            await self.exception_deleted(namespace, name)
        elif kind == KIND_VERDICT:
            meta = {"namespace": namespace, "name": name, "resourceVersion": resource_version}
            self.verdict_observed({"metadata": meta}, deleted=True)
        elif kind == KIND_CONFIG:
            if name == CONFIG_NAME:
                await self.config_changed(None)
        elif kind in (KIND_SERVICE_ACCOUNT, KIND_NAMESPACE):
            await self.migration_object_deleted(kind, namespace, name)
        else:
            await self.identity_object_deleted(kind, namespace, name)

    async def synced(self, kind: str) -> None:
        return None

    def _served(self, kind: str, namespace: str) -> bool:
        if not self.namespaces or not resource(kind).namespaced:
            return True
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    # --- seeding -----------------------------------------------------------------------------------

    def seed(self) -> None:
        """Every informer has listed once: evaluate every pod, queue what differs (in one go: the unit
        tests; the controller runs :meth:`seed_chunked`)."""
        for _ in self._seed_steps():
            pass

    async def seed_chunked(self) -> None:
        """:meth:`seed`, yielding to the event loop every CHUNK pods, so that the health endpoint and the
        watches are served during a large seed (50,000 pods: tens of seconds of assessments). What changes
        meanwhile is stored, and evaluated again before the seed ends."""
        for _ in self._seed_steps():
            await asyncio.sleep(0)

    def _seed_steps(self) -> Iterator[None]:
        if self.seeded or self._seeding:
            return
        store = self.store
        for verdict in store.verdicts.values():
            if verdict.owner_uid and verdict.status:
                self.ledger.remember(
                    verdict.owner_uid,
                    S.event_reason(verdict.status),
                    int(verdict.status.get("transitions") or 0),
                )
        self._seeding = True
        settled: set[tuple[str, str]] = set()
        try:
            todo: list[tuple[str, str]] = [(p.namespace, p.name) for p in store.world.pods()]
            while True:
                for i, key in enumerate(todo, 1):
                    pod = store.world.get_pod(*key)
                    if pod is not None:
                        self._evaluate(pod)
                    if i % CHUNK == 0:
                        yield
                settled |= self._settled(CHUNK)
                while store.unsettled:
                    yield
                    settled |= self._settled(CHUNK)
                todo = self._changed_while_seeding()
                if not todo:
                    break
        finally:
            self._seeding = False
        self.seeded = True
        # nothing is queued while the seed yields (a worker must not record a transition before the
        # Events of earlier runs are announced): what is owed now, from the plans as they are now
        for key in settled:
            self._queue_if_owed(key)
        for ns, name in list(store.verdicts):
            if store.world.get_pod(ns, name) is None:
                self.queue.add(verdict_key(ns, name))
        for ns, name in store.exceptions:
            self.queue.add(("exception", ns, name))
        log.info(
            "seeded: %d pods, %d exceptions, %d verdicts; %d writes pending",
            len(store),
            len(store.exceptions),
            len(store.verdicts),
            len(self.queue),
        )

    def announce_missing(self) -> int:
        """Announce the transitions verdicts record but no Event does (a run killed between the status
        and its Event: only a pod's latest transition can be so), from what the verdict says; how many.
        Once, when both the store is seeded and the Events of earlier runs are known, before any worker
        records a newer transition."""
        if self._announced_missing or not self.seeded or not self.recorder.loaded.is_set():
            return 0
        self._announced_missing = True
        store, n = self.store, 0
        for key, record in store.verdicts.items():
            pod = store.world.get_pod(*key)
            number = int(record.status.get("transitions") or 0)
            if pod is None or record.owner_uid != pod.uid or not number:
                continue
            stamp = record.status.get("lastTransitionTime")
            if not self.recorder.missing(pod.uid, number, stamp):
                continue
            event = pod_event(pod, record.status, number, str(stamp))
            if event is not None:
                self.recorder.announce(event)
                n += 1
        if n:
            log.info("%d transition(s) recorded by an earlier run without their Event: announced", n)
        return n

    def recheck(self) -> None:
        """Look at every pod's verdict again (the Events of earlier runs became known)."""
        for pod in list(self.store.world.pods()):
            self._queue_if_owed((pod.namespace, pod.name))

    def _changed_while_seeding(self) -> list[tuple[str, str]]:
        """The pods to evaluate again: those changed while the seed yielded, and those an object changed
        meanwhile affects (the pods evaluated before it changed)."""
        keys, self._seed_pods = self._seed_pods, set()
        objects, self._seed_objects = self._seed_objects, []
        for kind, namespace, name in objects:
            keys.update((p.namespace, p.name) for p in pods_affected(self.store.world, kind, namespace, name))
        return sorted(keys)

    # --- per kind ----------------------------------------------------------------------------------

    def pod_changed(self, pod: Pod, terminating: bool = False, spec: PodSpec | None = None) -> None:
        """A pod as listed or watched, with its spec as the Workload Identity webhook reads it (None: none
        could be read, and the pod has no migration status)."""
        store, key = self.store, (pod.namespace, pod.name)
        known = store.world.get_pod(*key)
        if (
            known is not None
            and known.uid == pod.uid
            and rv(pod.resource_version) < rv(known.resource_version)
        ):
            return  # an older event than what is known
        if terminating:
            store.terminating.add(key)
        else:
            store.terminating.discard(key)
        store.world.upsert(pod)
        if known is None or _moved(known, pod):
            store.migration.located(key, (pod.node_name, pod.pod_ip))
            store.migration.mark(key)
        store.migration.set_spec(key, spec)
        if self.seeded:
            self._evaluate(pod)
            self._evaluate_neighbours(known, pod)
            self._settle()
        elif self._seeding:
            self._seed_pods.add(key)
            neighbours = address_neighbours(store.world, (known, pod), self._exposed)
            self._seed_pods.update((p.namespace, p.name) for p in neighbours)

    def pod_deleted(self, namespace: str, name: str) -> None:
        pod = self.store.world.get_pod(namespace, name)
        if pod is not None:
            self.ledger.forget(pod.uid)
        old = self.store.forget_pod(namespace, name)
        if not self.seeded:
            if self._seeding and pod is not None:
                neighbours = address_neighbours(self.store.world, (pod,), self._exposed)
                self._seed_pods.update((p.namespace, p.name) for p in neighbours)
            return
        if old is not None and old.exceptions:
            self._mark_exceptions(namespace)
        if (namespace, name) in self.store.verdicts:
            self.queue.add(verdict_key(namespace, name))
        self._evaluate_neighbours(pod)
        self._settle()

    def _evaluate_neighbours(self, *changed: Pod | None) -> None:
        """The pods whose answer names who shares their IP, at the addresses a pod change touched."""
        for other in address_neighbours(self.store.world, changed, self._exposed):
            self._evaluate(other)

    def _exposed(self, pod: Pod) -> bool:
        result = self.store.result(pod.namespace, pod.name)
        return result is not None and HOST_NETWORK_IDENTITY_EXPOSED in result.finding_codes

    async def exception_changed(self, exc: PodIdentityException, record: ObjectRecord) -> None:
        store, key = self.store, (exc.namespace, exc.name)
        if record.newer_or_equal(store.exceptions.get(key)):
            store.exceptions[key] = record
        if store.world.get_exception(*key) != exc:
            store.world.upsert(exc)
            await self._reevaluate(KIND_EXCEPTION, exc.namespace, exc.name)
        if self.seeded:
            self.queue.add(("exception", exc.namespace, exc.name))

    async def exception_deleted(self, namespace: str, name: str) -> None:
        self.store.exceptions.pop((namespace, name), None)
        if self.store.world.remove(KIND_EXCEPTION, namespace, name):
            await self._reevaluate(KIND_EXCEPTION, namespace, name)

    async def identity_object_changed(
        self, obj: AzureIdentity | AzureIdentityBinding | AzureAssignedIdentity
    ) -> None:
        old = _lookup(self.store.world, obj)
        if old == obj:
            return
        self._mark_users(old, obj)
        self.store.world.upsert(obj)
        await self._reevaluate(obj.kind, obj.namespace, obj.name)

    async def identity_object_deleted(self, kind: str, namespace: str, name: str) -> None:
        world = self.store.world
        old: Model | None = None
        if kind == KIND_IDENTITY:
            old = world.get_identity(namespace, name)
        elif kind == KIND_BINDING:
            old = world.get_binding(namespace, name)
        elif kind == KIND_ASSIGNED:
            old = world.get_assigned(namespace, name)
        if world.remove(kind, namespace, name):
            self._mark_users(old)
            await self._reevaluate(kind, namespace, name)

    def _mark_users(self, *objs: Model | None) -> None:
        """Before an identity object changes: the workloads whose migration it can change though their pods'
        results do not (the pods whose results name the identity concerned; an AzureAssignedIdentity's pod).
        A changed result marks its pod by itself (:meth:`Store.evaluate`)."""
        if not (self.seeded or self._seeding):
            return
        keys: set[str] = set()
        migration = self.store.migration
        for obj in objs:
            if isinstance(obj, AzureIdentity):
                keys.add(obj.key)
            elif isinstance(obj, AzureIdentityBinding):
                keys.add(f"{obj.namespace}/{obj.azure_identity}")
            elif isinstance(obj, AzureAssignedIdentity):
                migration.mark((obj.pod_namespace, obj.pod))
                if obj.identity is not None:
                    keys.add(obj.identity.key)
        if not keys:
            return
        for r in self.store.results():
            # a finished pod's result names no identity, but the migration engine assesses it as its
            # workload's next pod, running: any identity change may be its
            if (
                r.verdict == VERDICT_INACTIVE
                or r.token_request.identity in keys
                or not keys.isdisjoint(r.identities)
            ):
                migration.mark_workload_of((r.namespace, r.name))

    async def migration_object_changed(self, kind: str, body: Mapping[str, Any]) -> None:
        """A ServiceAccount or Namespace (read for the migration only): the pods it concerns are assessed
        again. One that cannot be read is as good as gone."""
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        try:
            if kind == KIND_SERVICE_ACCOUNT:
                changed = self.store.migration.set_service_account((ns, name), parse_service_account(body))
            else:
                changed = self.store.migration.set_namespace(name, parse_namespace(body))
        except ValueError as exc:
            log.warning("ignored: %s %s/%s: %s", kind, ns, name, exc)
            await self.migration_object_deleted(kind, ns, name)
            return
        if changed:
            await self._settle_all()

    async def migration_object_deleted(self, kind: str, namespace: str, name: str) -> None:
        migration = self.store.migration
        if kind == KIND_SERVICE_ACCOUNT:
            changed = migration.set_service_account((namespace, name), None)
        else:
            changed = migration.set_namespace(name, None)
        if changed:
            await self._settle_all()

    async def config_changed(self, body: Mapping[str, Any] | None) -> None:
        if self.store.apply_config(body):
            await self._reevaluate(KIND_CONFIG, "", CONFIG_NAME)

    def verdict_observed(self, body: Mapping[str, Any], deleted: bool) -> None:
        """An NMIVerdict changed in the cluster: remember it; if it no longer says what the engine says
        (edited or deleted by someone else), put it back."""
        store = self.store
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if deleted:
            known = store.verdicts.get(key)
            if known is not None and rv(str(meta.get("resourceVersion") or "")) >= rv(known.resource_version):
                del store.verdicts[key]
            if self.seeded and store.world.get_pod(*key) is not None and key not in store.terminating:
                # Deleted by someone else, or by the garbage collector a moment before the pod's own
                # DELETED event reaches us: look again shortly rather than race the pod's deletion.
                self.queue.add_after(verdict_key(*key), RECREATE_DELAY)
            return
        record = VerdictRecord.from_body(body)
        if not record.newer_or_equal(store.verdicts.get(key)):
            return  # an older event than what a write already told us
        store.verdicts[key] = record
        if self.seeded:
            self._queue_if_owed(key)

    # --- evaluation --------------------------------------------------------------------------------

    def _evaluate(self, pod: Pod) -> None:
        """Evaluate a pod; its verdict is looked at when the store settles (:meth:`_settle`)."""
        evaluation = self.store.evaluate(pod)
        if evaluation.changed and evaluation.exceptions_touched:
            self._mark_exceptions(pod.namespace)
        self._touched.add((pod.namespace, pod.name))

    def _settle(self, budget: int | None = None) -> None:
        """The store builds what changed (migration assessments, desired statuses); queue what is owed."""
        for key in self._settled(budget):
            self._queue_if_owed(key)

    def _settled(self, budget: int | None = None) -> set[tuple[str, str]]:
        """The store builds what changed; the pods whose verdict may now be owed a write."""
        keys = self.store.settle(budget) | self._touched
        self._touched = set()
        return keys

    async def _settle_all(self) -> None:
        """:meth:`_settle`, a chunk of assessments at a time, yielding to the event loop in between."""
        if not self.seeded:
            return
        self._settle(CHUNK)
        while self.store.unsettled:
            await asyncio.sleep(0)
            self._settle(CHUNK)

    def _queue_if_owed(self, key: tuple[str, str]) -> None:
        """The verdict reconciler's plan as a predicate (handlers only enqueue keys; reconcile decides)."""
        if plan(self.store, self.ledger, key) is not None:
            self.queue.add(verdict_key(*key))

    async def _reevaluate(self, kind: str, namespace: str, name: str) -> None:
        if not self.seeded:
            if self._seeding:
                self._seed_objects.append((kind, namespace, name))
            return
        for i, pod in enumerate(pods_affected(self.store.world, kind, namespace, name), 1):
            self._evaluate(pod)
            if i % CHUNK == 0:
                await asyncio.sleep(0)
        await self._settle_all()
        if kind == KIND_CONFIG:
            self.queue.add(CONFIG_KEY)

    def _mark_exceptions(self, namespace: str) -> None:
        """Exception status follows pod changes in batches: the first change in a namespace schedules one
        recount of its exceptions ``exception_batch`` seconds later, and every change until then rides
        along. Verdicts stay immediate; a burst of changes costs one status write per exception."""
        if not self.seeded or namespace in self._batches:
            return
        self._batches.add(namespace)
        asyncio.get_running_loop().call_later(self.exception_batch, self._flush_exceptions, namespace)

    def _flush_exceptions(self, namespace: str) -> None:
        self._batches.discard(namespace)
        for key in exception_keys(self.store.world, namespace):
            self.queue.add(key)


def parse(kind: str, body: Mapping[str, Any]) -> Model | None:
    """An engine model of a Kubernetes object; None, with a warning, for one the engine cannot read (the
    operator never stops on an object the API server accepted)."""
    try:
        parsed = parse_body(body, kind)  # the one parse path (engine/resources.py)
        if isinstance(parsed, SimulationConfig) or parsed is None:  # pragma: no cover - engine kinds only
            raise ValueError(f"{kind} is not a kind the engine evaluates")
        model: Model = parsed
    except ValueError as exc:
        meta = body.get("metadata") or {}
        log.warning("ignored: %s %s/%s: %s", kind, meta.get("namespace"), meta.get("name"), exc)
        return None
    return model


def pod_spec(body: Mapping[str, Any]) -> PodSpec | None:
    """The pod as the Workload Identity webhook reads it; None, with a warning, when it cannot be read
    (the pod keeps its verdict, without a migration status)."""
    try:
        return PodSpec.from_k8s(body)
    except ValueError as exc:
        meta = body.get("metadata") or {}
        log.warning("pod %s/%s: no migration status: %s", meta.get("namespace"), meta.get("name"), exc)
        return None


def _moved(old: Pod, new: Pod) -> bool:
    """Whether a pod changed in more than its resourceVersion (what the migration reads of it)."""
    return old.model_copy(update={"resource_version": new.resource_version}) != new


def _lookup(world: World, obj: Model) -> Model | None:
    """The object the world holds under ``obj``'s kind and key (O(1))."""
    if isinstance(obj, AzureIdentity):
        return world.get_identity(obj.namespace, obj.name)
    if isinstance(obj, AzureIdentityBinding):
        return world.get_binding(obj.namespace, obj.name)
    if isinstance(obj, AzureAssignedIdentity):
        return world.get_assigned(obj.namespace, obj.name)
    return None
