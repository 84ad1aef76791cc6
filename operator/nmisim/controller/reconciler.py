"""The operator's state and reconcile loop, independent of kopf's decorators.

Watch events update an engine :class:`World`; each change re-evaluates the pods it can affect and marks
the keys whose cluster state differs from what the engine now says. Workers take marked keys off a
coalescing queue and write the difference. The NMIVerdict objects and status subresources are the
operator's memory: what they say is compared with the engine's answer, and only a difference is written,
so a restart with nothing changed writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp

from nmisim.controller import metrics
from nmisim.controller import status as S
from nmisim.controller.writer import WriteError, Writer, WriterLike
from nmisim.engine.config import SimulationConfig
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
from nmisim.engine.resources import KIND_VERDICT, resource
from nmisim.engine.verdict import PodResult
from nmisim.engine.world import World

log = logging.getLogger(__name__)

CONFIG_NAME: Final = "default"
CHUNK: Final = 500  # pods re-evaluated between yields to the event loop
MAX_BACKOFF: Final = 60.0
RECREATE_DELAY: Final = 1.0  # seconds before putting back a verdict someone deleted
RELIST_QUIET: Final = 2.0  # seconds without listing events before a relisted kind is checked for deletions
#: the collections the operator lists (all namespaces), from :mod:`nmisim.engine.resources`
LIST_PATHS: Final = {
    kind: resource(kind).path()
    for kind in (
        KIND_POD,
        KIND_EXCEPTION,
        KIND_IDENTITY,
        KIND_BINDING,
        KIND_ASSIGNED,
        KIND_VERDICT,
        KIND_CONFIG,
    )
}

WorkKind = Literal["verdict", "exception", "config"]
WorkKey = tuple[WorkKind, str, str]


def _rv(value: str | None) -> int:
    """A resourceVersion as a number for ordering (etcd revisions); -1 when not numeric."""
    return int(value) if value and value.isdigit() else -1


# The fields of a verdict's status the operator needs again later (the rest is kept as a digest).
_KEPT: Final = ("verdict", "transitions", "lastTransitionTime")


@dataclass(slots=True)
class VerdictRecord:
    """What an NMIVerdict in the cluster says: a digest of its status for change detection, and the few
    fields transitions need (thousands of these are kept, so not the whole status)."""

    owner_uid: str | None
    status: dict[str, Any]
    resource_version: str
    semantic: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> VerdictRecord:
        meta = body.get("metadata") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"]
        full = body.get("status") or {}
        kept = {k: full[k] for k in _KEPT if k in full}
        if "tokenRequest" in full:
            kept["tokenRequest"] = {"status": (full.get("tokenRequest") or {}).get("status")}
        return cls(
            owner_uid=owners[0].get("uid") if owners else None,
            status=kept,
            resource_version=str(meta.get("resourceVersion") or ""),
            semantic=digest(full),
        )


def digest(status: Mapping[str, Any] | None) -> int:
    """A status's semantic form, hashed (equal statuses, equal digests, within one process)."""
    return hash(S.semantic(status))


@dataclass(slots=True)
class ObjectRecord:
    """An exception's or the SimulationConfig's identity and current status."""

    uid: str
    generation: int
    status: dict[str, Any]
    resource_version: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectRecord:
        meta = body.get("metadata") or {}
        return cls(
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            status=dict(body.get("status") or {}),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


@dataclass
class Options:
    concurrency: int = 16
    qps: float = 200.0
    burst: int = 400
    metrics_port: int = 9090
    status_interval: float = 2.0  # SimulationConfig totals and gauges, at most this often
    exception_batch: float = 2.0  # exception status follows pod changes within this many seconds


@dataclass
class Controller:
    writer: WriterLike | None = None  #: a Writer in the operator; reconciler tests pass a fake
    options: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        self.world = World()
        self.results: dict[str, dict[str, PodResult]] = {}
        self.verdicts: dict[tuple[str, str], VerdictRecord] = {}
        self.exceptions: dict[tuple[str, str], ObjectRecord] = {}
        self.config_record: ObjectRecord | None = None
        self.config_error: str | None = None
        self.queue: WorkQueueT = _new_queue()
        self.seeded = False
        # The Event reason last made true per pod uid: survives a verdict deleted by someone else, so
        # putting it back does not announce the same transition twice.
        self.last_reason: dict[str, tuple[str | None, int]] = {}  # uid -> (reason, transitions)
        # Set once the Events of earlier runs are known (see _load_announced): no verdict is written before.
        self.announced_loaded = asyncio.Event()
        self.terminating: set[tuple[str, str]] = set()
        # Every kind is listed by the operator itself at start (see load_lists): kopf indexes, which wait
        # for every object of the initial list, cost O(n^2) at thousands of objects.
        self.lists_loaded = asyncio.Event()
        self._listed: tuple[
            list[Model],
            list[tuple[PodIdentityException, ObjectRecord]],
            dict[tuple[str, str], VerdictRecord],
            dict[str, Any] | None,
        ] = ([], [], {}, None)
        self._totals_dirty = True
        self._exception_batches: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._relisted: dict[str, float] = {}  # kind -> when kopf last delivered a listing event of it

    # --- seeding from the start-up LIST ----------------------------------------------------------------

    def seed(
        self,
        objects: Iterable[Model],
        exceptions: Iterable[tuple[PodIdentityException, ObjectRecord]],
        verdicts: Mapping[tuple[str, str], VerdictRecord],
        config: Mapping[str, Any] | None,
    ) -> None:
        """Load the cluster as listed at start, before the first event is handled: so the first answers
        already see every exception, binding and verdict, and a restart writes nothing."""
        if self.seeded:
            return
        self.seeded = True
        if config is not None:
            self._apply_config_body(config)
        for obj in objects:
            self.world.upsert(obj)
        for exc, record in exceptions:
            self.world.upsert(exc)
            self.exceptions[(exc.namespace, exc.name)] = record
        self.verdicts.update(verdicts)
        for verdict in self.verdicts.values():
            if verdict.owner_uid and verdict.status:
                self.remember_reason(
                    verdict.owner_uid,
                    S.event_reason(verdict.status),
                    int(verdict.status.get("transitions") or 0),
                )
        for pod in list(self.world.pods()):
            self._evaluate(pod)
        for ns, name in list(self.verdicts):
            if self.world.get_pod(ns, name) is None:
                self.queue.add(("verdict", ns, name))
        for ns, name in self.exceptions:
            self.queue.add(("exception", ns, name))
        log.info(
            "seeded: %d pods, %d exceptions, %d verdicts; %d writes pending",
            sum(len(v) for v in self.results.values()),
            len(self.exceptions),
            len(self.verdicts),
            len(self.queue),
        )

    async def ensure_seeded(self) -> None:
        """Seed once, from the operator's own LIST of every kind at start; every handler awaits this
        before it handles its first event."""
        if self.seeded:
            return
        await self.lists_loaded.wait()
        if self.seeded:
            return
        objects, exceptions, verdicts, config = self._listed
        self._listed = ([], [], {}, None)
        self.seed(objects=objects, exceptions=exceptions, verdicts=verdicts, config=config)

    async def load_lists(self) -> None:
        """LIST every kind the operator reads (paginated, parsed page by page), with retries until it
        works. A kind whose CRD is not installed (404) has no objects. kopf's own indexes would do this,
        but their readiness bookkeeping waits object by object: O(n^2), 49 s to seed 11,000 pods and
        2,500 exceptions, identities and bindings (py-spy), against about 2 s here."""
        assert isinstance(self.writer, Writer), "the start-up LIST needs the API client"
        api = self.writer.api
        delay = 0.5
        while True:
            objects: list[Model] = []
            exceptions: list[tuple[PodIdentityException, ObjectRecord]] = []
            verdicts: dict[tuple[str, str], VerdictRecord] = {}
            config: dict[str, Any] | None = None
            try:
                for kind in (KIND_POD, KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED):
                    async for page in api.pages(LIST_PATHS[kind], kind=kind, missing_ok=True):
                        for body in page:
                            obj = parse(kind, body)
                            if obj is not None:
                                objects.append(obj)
                async for page in api.pages(LIST_PATHS[KIND_EXCEPTION], kind=KIND_EXCEPTION, missing_ok=True):
                    for body in page:
                        exc = parse(KIND_EXCEPTION, body)
                        if isinstance(exc, PodIdentityException):
                            exceptions.append((exc, ObjectRecord.from_body(body)))
                async for page in api.pages(LIST_PATHS[KIND_VERDICT], kind=KIND_VERDICT, missing_ok=True):
                    for body in page:
                        meta = body.get("metadata") or {}
                        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                        verdicts[key] = VerdictRecord.from_body(body)
                # LIST (the RBAC grants list and watch, not get), then pick `default`.
                config_path = f"{LIST_PATHS[KIND_CONFIG]}?fieldSelector=metadata.name%3D{CONFIG_NAME}"
                async for page in api.pages(config_path, kind=KIND_CONFIG, missing_ok=True):
                    for body in page:
                        config = dict(body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listing the cluster failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self._listed = (objects, exceptions, verdicts, config)
            self.lists_loaded.set()
            return

    def remember_reason(self, uid: str, reason: str | None, transitions: int) -> None:
        """Keep the latest transition known for a pod: the one with the highest number, whether a verdict's
        status or an Event of an earlier run says so."""
        known = self.last_reason.get(uid)
        if known is None or transitions > known[1]:
            self.last_reason[uid] = (reason, transitions)

    def announced(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Learn the transitions earlier runs announced. An Event is posted before the status that records
        its transition: a run killed in between leaves an Event the verdicts do not know about, and without
        this a restart would either repeat it or, if the pod went back meanwhile, never correct it."""
        n = 0
        for event in events:
            name = str((event.get("metadata") or {}).get("name") or "")
            uid = str((event.get("involvedObject") or {}).get("uid") or "")
            number = name.rsplit(".", 1)[-1]
            if uid and number.isdigit() and name.split(".")[-2:-1] == [uid[:8]]:
                self.remember_reason(uid, event.get("reason"), int(number))
                n += 1
        return n

    # --- events ----------------------------------------------------------------------------------------

    def pod_changed(self, pod: Pod, terminating: bool = False) -> None:
        key = (pod.namespace, pod.name)
        known = self.world.get_pod(*key)
        if (
            known is not None
            and known.uid == pod.uid
            and _rv(pod.resource_version) < _rv(known.resource_version)
        ):
            return  # an older event than what the LIST at start already told
        if terminating:
            self.terminating.add(key)
        else:
            self.terminating.discard(key)
        self.world.upsert(pod)
        self._evaluate(pod)

    def pod_deleted(self, namespace: str, name: str) -> None:
        pod = self.world.get_pod(namespace, name)
        if pod is not None:
            self.last_reason.pop(pod.uid, None)
        self.terminating.discard((namespace, name))
        self.world.remove(KIND_POD, namespace, name)
        old = self.results.get(namespace, {}).pop(name, None)
        if old is not None:
            self._totals_dirty = True
            if old.exceptions:
                self._mark_exceptions(namespace)
        if (namespace, name) in self.verdicts:
            self.queue.add(("verdict", namespace, name))

    async def exception_changed(self, exc: PodIdentityException, record: ObjectRecord) -> None:
        key = (exc.namespace, exc.name)
        known = self.exceptions.get(key)
        if known is None or _rv(record.resource_version) >= _rv(known.resource_version):
            self.exceptions[key] = record
        if self.world.get_exception(exc.namespace, exc.name) != exc:
            self.world.upsert(exc)
            await self._reevaluate(p for p in self.world.pods() if p.namespace == exc.namespace)
        self.queue.add(("exception", exc.namespace, exc.name))

    async def exception_deleted(self, namespace: str, name: str) -> None:
        self.exceptions.pop((namespace, name), None)
        if self.world.remove(KIND_EXCEPTION, namespace, name):
            await self._reevaluate(p for p in self.world.pods() if p.namespace == namespace)

    async def identity_object_changed(
        self, obj: AzureIdentity | AzureIdentityBinding | AzureAssignedIdentity
    ) -> None:
        """Identities, bindings and assigned identities can change any pod's answer (bindings match
        across namespaces by default): re-evaluate all pods; only differences are written."""
        current = _lookup(self.world, obj)
        if current == obj:
            return
        self.world.upsert(obj)
        await self._reevaluate(list(self.world.pods()))

    async def identity_object_deleted(self, kind: str, namespace: str, name: str) -> None:
        if self.world.remove(kind, namespace, name):
            await self._reevaluate(list(self.world.pods()))

    async def config_changed(self, body: Mapping[str, Any] | None) -> None:
        before = self.world.config
        if body is None:
            self.config_record = None
            self.config_error = None
            self.world.set_config(SimulationConfig.default())
        else:
            self._apply_config_body(body)
        self._totals_dirty = True
        if self.world.config != before:
            await self._reevaluate(list(self.world.pods()))

    def verdict_observed(self, body: Mapping[str, Any], deleted: bool) -> None:
        """An NMIVerdict changed in the cluster: remember it; if it no longer says what the engine says
        (edited or deleted by someone else), put it back."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if deleted:
            known = self.verdicts.get(key)
            if known is not None and _rv(str(meta.get("resourceVersion") or "")) >= _rv(
                known.resource_version
            ):
                del self.verdicts[key]
            if self.world.get_pod(*key) is not None and key not in self.terminating:
                # Deleted by someone else, or by the garbage collector a moment before the pod's own
                # DELETED event reaches us: look again shortly rather than race the pod's deletion.
                self.queue.add_after(("verdict", *key), RECREATE_DELAY)
            return
        record = VerdictRecord.from_body(body)
        known = self.verdicts.get(key)
        if known is not None and _rv(record.resource_version) < _rv(known.resource_version):
            return  # an older event than what a write already told us
        self.verdicts[key] = record
        if self._verdict_needs_write(key):
            self.queue.add(("verdict", *key))

    def listed(self, kind: str) -> None:
        """kopf (re)listed a kind: at start, and after a 410 Gone or a reconnection. A relist tells of every
        object that exists, never of those deleted while the watch was away: once the listing is quiet,
        :meth:`prune` looks for them."""
        self._relisted[kind] = time.monotonic()

    async def prune(self, kind: str) -> int:
        """Forget the objects of a kind that no longer exist (one metadata-only LIST), as if their DELETED
        events had come: objects the list does not have and that are not newer than the list."""
        assert self.writer is not None
        version, found = await self.writer.list_metadata(LIST_PATHS[kind])
        at = _rv(version)

        def gone(namespace: str, name: str, resource_version: str) -> bool:
            return (namespace, name) not in found and _rv(resource_version) <= at

        n = 0
        if kind == KIND_POD:
            for pod in [p for p in self.world.pods() if gone(p.namespace, p.name, p.resource_version)]:
                self.pod_deleted(pod.namespace, pod.name)
                n += 1
        elif kind == KIND_EXCEPTION:
            for exc in [e for e in self.world.exceptions() if gone(e.namespace, e.name, e.resource_version)]:
                await self.exception_deleted(exc.namespace, exc.name)
                n += 1
        elif kind in (KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED):
            objs: list[AzureIdentity] | list[AzureIdentityBinding] | list[AzureAssignedIdentity]
            if kind == KIND_IDENTITY:
                objs = self.world.identities()
            elif kind == KIND_BINDING:
                objs = self.world.bindings()
            else:
                objs = self.world.assigned_identities()
            for obj in [o for o in objs if gone(o.namespace, o.name, o.resource_version)]:
                await self.identity_object_deleted(kind, obj.namespace, obj.name)
                n += 1
        elif kind == KIND_VERDICT:
            for key in [k for k, r in self.verdicts.items() if gone(*k, r.resource_version)]:
                meta = {"namespace": key[0], "name": key[1], "resourceVersion": version}
                self.verdict_observed({"metadata": meta}, deleted=True)
                n += 1
        elif kind == KIND_CONFIG:
            record = self.config_record
            if record is not None and gone("", CONFIG_NAME, record.resource_version):
                await self.config_changed(None)
                n += 1
        if n:
            log.info("%d %s object(s) deleted while the watch was away: forgotten", n, kind)
        return n

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(RELIST_QUIET / 2)
            now = time.monotonic()
            for kind in [k for k, t in self._relisted.items() if now - t >= RELIST_QUIET]:
                del self._relisted[kind]
                try:
                    await self.prune(kind)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("looking for deleted %s objects failed: %s; retrying", kind, exc)
                    self._relisted.setdefault(kind, now)

    # --- evaluation -------------------------------------------------------------------------------------

    def _apply_config_body(self, body: Mapping[str, Any]) -> None:
        self.config_record = ObjectRecord.from_body(body)
        try:
            config = SimulationConfig.from_k8s(body)
        except ValueError as exc:
            self.config_error = str(exc)
            log.warning("SimulationConfig %s refused, keeping the previous one: %s", CONFIG_NAME, exc)
            return
        self.config_error = None
        self.world.set_config(config)

    def _evaluate(self, pod: Pod) -> None:
        result = self.world.evaluate(pod)
        per_ns = self.results.setdefault(pod.namespace, {})
        old = per_ns.get(pod.name)
        per_ns[pod.name] = result
        if old != result:
            self._totals_dirty = True
            if old is None or old.verdict != result.verdict or old.exceptions != result.exceptions:
                self._mark_exceptions(pod.namespace)
        if self._verdict_needs_write((pod.namespace, pod.name)):
            self.queue.add(("verdict", pod.namespace, pod.name))

    async def _reevaluate(self, pods: Iterable[Pod]) -> None:
        for i, pod in enumerate(pods, 1):
            self._evaluate(pod)
            if i % CHUNK == 0:
                await asyncio.sleep(0)

    def _mark_exceptions(self, namespace: str) -> None:
        """Exception status follows pod changes in batches: the first change in a namespace schedules one
        recount of its exceptions EXCEPTION_BATCH seconds later, and every change until then rides along.
        Verdicts stay immediate; a burst of changes costs one status write per exception, not one each."""
        if not self.seeded:
            for exc in self.world.exceptions(namespace):
                self.queue.add(("exception", namespace, exc.name))
            return
        if namespace in self._exception_batches:
            return
        self._exception_batches.add(namespace)
        loop = asyncio.get_running_loop()
        loop.call_later(self.options.exception_batch, self._flush_exceptions, namespace)

    def _flush_exceptions(self, namespace: str) -> None:
        self._exception_batches.discard(namespace)
        for exc in self.world.exceptions(namespace):
            self.queue.add(("exception", namespace, exc.name))

    def _verdict_needs_write(self, key: tuple[str, str]) -> bool:
        pod = self.world.get_pod(*key)
        record = self.verdicts.get(key)
        if pod is None:
            return record is not None
        result = self.results.get(key[0], {}).get(key[1])
        if result is None:
            return False
        if record is None or record.owner_uid != pod.uid:
            return True
        desired = S.verdict_status(result, pod)
        return record.semantic != digest(desired) or self._announcement_stale(pod.uid, desired)

    def _announcement_stale(self, uid: str, desired: Mapping[str, Any]) -> bool:
        """The last Event announced for this pod says something else than its verdict (an earlier run posted
        an Event and was killed before recording the transition, and the pod went back meanwhile)."""
        known = self.last_reason.get(uid)
        return known is not None and known[0] != S.event_reason(desired)

    # --- workers ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.load_lists(), name="nmisim-lists"))
        self._tasks.append(asyncio.create_task(self._load_announced(), name="nmisim-events"))
        for i in range(self.options.concurrency):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"nmisim-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="nmisim-status"))
        self._tasks.append(asyncio.create_task(self._relist_loop(), name="nmisim-relist"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _load_announced(self) -> None:
        delay = 0.5
        while not self.announced_loaded.is_set():
            assert self.writer is not None
            try:
                n = self.announced(await self.writer.list_events())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, WriteError) and exc.status == 403:
                    log.warning("cannot list this operator's Events (%s): a restart may repeat one", exc)
                    self.announced_loaded.set()
                    return
                log.warning("listing this operator's Events failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                log.info("%d pod Events of earlier runs known", n)
                self.announced_loaded.set()
                for pod in list(self.world.pods()):  # seeded before: look again at what they announced
                    if self._verdict_needs_write((pod.namespace, pod.name)):
                        self.queue.add(("verdict", pod.namespace, pod.name))

    async def _worker(self) -> None:
        await self.announced_loaded.wait()
        while True:
            key, since = await self.queue.get()
            metrics.QUEUE.set(len(self.queue))
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.queue.add_rate_limited(key)
                # Refusals and an unreachable API server are expected: a warning; anything else is a bug.
                expected = isinstance(exc, WriteError | aiohttp.ClientError | TimeoutError)
                level = logging.WARNING if expected else logging.ERROR
                log.log(
                    level,
                    "%s %s/%s: %s; retrying in %.1fs",
                    *key,
                    exc,
                    delay,
                    exc_info=level == logging.ERROR,
                )
            else:
                self.queue.forget(key)
                metrics.RECONCILE.observe(time.monotonic() - since)
            finally:
                self.queue.done(key)

    async def reconcile(self, key: WorkKey) -> None:
        kind, namespace, name = key
        if kind == "verdict":
            await self._reconcile_verdict(namespace, name)
        elif kind == "exception":
            await self._reconcile_exception(namespace, name)
        else:
            await self._reconcile_config()

    async def _reconcile_verdict(self, namespace: str, name: str) -> None:
        assert self.writer is not None
        key = (namespace, name)
        pod = self.world.get_pod(namespace, name)
        record = self.verdicts.get(key)
        if pod is None:
            if record is not None:
                await self.writer.delete_verdict(namespace, name)
                self.verdicts.pop(key, None)
            return
        result = self.results[namespace][name]
        desired = S.verdict_status(result, pod)
        if record is not None and record.owner_uid != pod.uid:
            # A new pod with an old pod's name: the old verdict belongs to the old pod.
            await self.writer.delete_verdict(namespace, name)
            self.verdicts.pop(key, None)
            record = None
        if record is None:
            if key in self.terminating:
                return  # no new verdict for a pod on its way out
            resp = await self.writer.create_verdict(pod)
            if resp.status == 409:
                resp = await self.writer.get_verdict(namespace, name)
                if not resp.ok:
                    raise WriteError(f"read nmiverdict {namespace}/{name}", resp)
                record = VerdictRecord.from_body(resp.body)
                if record.owner_uid != pod.uid:
                    raise WriteError(f"nmiverdict {namespace}/{name} belongs to another pod", resp)
            else:
                record = VerdictRecord.from_body(resp.body)
            self.verdicts[key] = record
        if record.semantic == digest(desired) and not self._announcement_stale(pod.uid, desired):
            return
        # What the operator last announced wins over what the object says: an edited verdict is drift,
        # not a transition of the pod.
        if pod.uid in self.last_reason:
            old_reason, count = self.last_reason[pod.uid]
        else:
            old_reason, count = S.event_reason(record.status), int(record.status.get("transitions") or 0)
        new_reason = S.event_reason(desired)
        changed = old_reason != new_reason
        stamp = S.now()
        if changed:
            count += 1
            if new_reason is not None:
                await self.writer.post_event(
                    # One name per transition: a retry after a crash answers 409, not a second Event.
                    name=f"{name}.{pod.uid[:8]}.{count}",
                    namespace=namespace,
                    involved={
                        "apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace,
                        "uid": pod.uid, "resourceVersion": pod.resource_version,
                    },
                    reason=new_reason,
                    message=S.event_message(desired),
                    warning=new_reason == S.REASON_DENIED,
                    timestamp=stamp,
                )  # fmt: skip
        body = dict(desired)
        body["observedPodResourceVersion"] = pod.resource_version
        body["lastTransitionTime"] = stamp if changed else record.status.get("lastTransitionTime", stamp)
        body["transitions"] = count
        resp = await self.writer.patch_verdict_status(namespace, name, body)
        if resp.status == 404:  # deleted under us: the DELETED event will bring it back
            self.verdicts.pop(key, None)
            self.queue.add(("verdict", namespace, name))
            return
        self.last_reason[pod.uid] = (new_reason, count)
        fresh = VerdictRecord.from_body(resp.body)
        known = self.verdicts.get(key)
        if known is None or _rv(fresh.resource_version) >= _rv(known.resource_version):
            self.verdicts[key] = fresh

    async def _reconcile_exception(self, namespace: str, name: str) -> None:
        assert self.writer is not None
        exc = self.world.get_exception(namespace, name)
        record = self.exceptions.get((namespace, name))
        if exc is None or record is None:
            return
        matched = S.matched_pods(name, self.results.get(namespace, {}).values())
        desired = S.exception_status(exc, matched, record.status)
        if S.exception_semantic(desired) == S.exception_semantic(record.status):
            return
        was_empty = not record.status or not record.status.get("matchedPods")
        is_empty = not matched
        if was_empty != is_empty or not record.status:
            previous = S.ready_condition(record.status) or {}
            reason = S.REASON_EXC_NO_MATCH if is_empty else S.REASON_EXC_MATCHES
            condition = desired["conditions"][0]
            await self.writer.post_event(
                name=f"{name}.{record.uid[:8]}.{reason.lower()}.{S.epoch(previous.get('lastTransitionTime'))}",
                namespace=namespace,
                involved={
                    "apiVersion": resource(KIND_EXCEPTION).api_version, "kind": KIND_EXCEPTION,
                    "name": name, "namespace": namespace, "uid": record.uid,
                    "resourceVersion": record.resource_version,
                },
                reason=reason,
                message=condition["message"],
                warning=is_empty,
                timestamp=S.now(),
            )  # fmt: skip
        resp = await self.writer.patch_exception_status(namespace, name, desired)
        if resp.ok:
            fresh = ObjectRecord.from_body(resp.body)
            known = self.exceptions.get((namespace, name))
            if known is None or _rv(fresh.resource_version) >= _rv(known.resource_version):
                self.exceptions[(namespace, name)] = fresh

    async def _reconcile_config(self) -> None:
        assert self.writer is not None
        record = self.config_record
        if record is None:
            return
        t = S.totals(r for per_ns in self.results.values() for r in per_ns.values())
        desired = S.config_status(t, record.generation, self.config_error, record.status)
        if S.config_semantic(desired) == S.config_semantic(record.status):
            return
        # A merge patch merges maps: codes that are gone must be sent as null to be removed.
        stale = dict.fromkeys(record.status.get("findings") or {})
        resp = await self.writer.patch_config_status(
            CONFIG_NAME, {**desired, "findings": {**stale, **desired["findings"]}}
        )
        if resp.ok:
            fresh = ObjectRecord.from_body(resp.body)
            if self.config_record is None or _rv(fresh.resource_version) >= _rv(
                self.config_record.resource_version
            ):
                self.config_record = fresh

    async def _status_loop(self) -> None:
        """Cluster totals (SimulationConfig status, gauges) at most once per interval, when changed."""
        published: set[tuple[str, str]] = set()
        while True:
            await asyncio.sleep(self.options.status_interval)
            if not self._totals_dirty or not self.seeded:
                continue
            self._totals_dirty = False
            t = S.totals(r for per_ns in self.results.values() for r in per_ns.values())
            for key in published - set(t.by_namespace):
                metrics.PODS.remove(*key)
            for (ns, verdict), n in t.by_namespace.items():
                metrics.PODS.labels(namespace=ns, verdict=verdict).set(n)
            published = set(t.by_namespace)
            metrics.FINDINGS.clear()
            for code, n in t.findings.items():
                metrics.FINDINGS.labels(code=code).set(n)
            self.queue.add(("config", "", CONFIG_NAME))


def parse(kind: str, body: Mapping[str, Any]) -> Model | None:
    """An engine model of a Kubernetes object; None, with a warning, for one the engine cannot read (the
    operator never stops on an object the API server accepted)."""
    try:
        cls = resource(kind).model
        parsed = cls.from_k8s(body) if cls is not None else None
        if isinstance(parsed, SimulationConfig) or parsed is None:  # pragma: no cover - engine kinds only
            raise ValueError(f"{kind} is not a kind the engine evaluates")
        model: Model = parsed
    except ValueError as exc:
        meta = body.get("metadata") or {}
        log.warning("ignored: %s %s/%s: %s", kind, meta.get("namespace"), meta.get("name"), exc)
        return None
    return model


def _lookup(world: World, obj: Model) -> Model | None:
    """The object the world holds under ``obj``'s kind and key (O(1))."""
    if isinstance(obj, AzureIdentity):
        return world.get_identity(obj.namespace, obj.name)
    if isinstance(obj, AzureIdentityBinding):
        return world.get_binding(obj.namespace, obj.name)
    if isinstance(obj, AzureAssignedIdentity):
        return world.get_assigned(obj.namespace, obj.name)
    return None


# The queue type, named once (WorkQueue is generic).
from nmisim.controller.workqueue import WorkQueue  # noqa: E402

WorkQueueT = WorkQueue[WorkKey]


def _new_queue() -> WorkQueueT:
    return WorkQueue()
