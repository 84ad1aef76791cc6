"""The operator's controller, in client-go's shape: informers → store → work queue → one reconciler
per kind.

* an informer per watched kind (:mod:`nmisim.kube.informer`) delivers to the :class:`Intake`, which keeps
  parsed models in the :class:`Store` and puts the keys a change affects (:mod:`.projector`) on the queue;
* workers take keys off the rate-limited :class:`WorkQueue` and run the kind's reconciler
  (:mod:`.verdicts`, :mod:`.exceptions`, :mod:`.simulationconfig`), writing through a ``WriterLike``;
* Events go through the :class:`EventRecorder`, which posts a transition's Event after the status that
  records it, from a queue of its own; the SimulationConfig totals and the gauges are published
  at most every ``status_interval`` seconds;
* with kopf's peering, everything but the read-back of earlier Events waits for the :class:`PeeringGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from nmisim.controller import metrics
from nmisim.controller import status as S
from nmisim.controller.events import EventRecorder
from nmisim.controller.exceptions import ExceptionReconciler
from nmisim.controller.intake import Intake
from nmisim.controller.migration import namespace, service_account
from nmisim.controller.peering import CLUSTER_PATH, NAMESPACED_PATH, PeeringGate
from nmisim.controller.projector import CONFIG_KEY, WorkKey
from nmisim.controller.records import ObjectRecord, VerdictRecord
from nmisim.controller.simulationconfig import ConfigReconciler
from nmisim.controller.store import Store
from nmisim.controller.verdicts import VerdictReconciler
from nmisim.controller.workqueue import WorkQueue
from nmisim.controller.writer import WriteError, WriterLike
from nmisim.engine.config import CONFIG_NAME
from nmisim.engine.migration.objects import PodSpec
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    Model,
    PodIdentityException,
)
from nmisim.engine.resources import KIND_NAMESPACE, KIND_SERVICE_ACCOUNT, KIND_VERDICT, resource
from nmisim.kube.client import APIClient
from nmisim.kube.informer import Informer, Watched

log = logging.getLogger(__name__)

#: Event posters beside the ``concurrency`` status writers: in a mass transition statuses get most of
#: the API budget, Events follow
EVENT_WORKERS: Final = 4
STOP_FLUSH: Final = 10.0  # seconds a clean stop spends at most posting queued Events

#: what the operator watches, all namespaces (paths from :mod:`nmisim.engine.resources`)
WATCHED: Final = (
    Watched(KIND_POD, resource(KIND_POD).path()),
    Watched(KIND_EXCEPTION, resource(KIND_EXCEPTION).path()),
    Watched(KIND_IDENTITY, resource(KIND_IDENTITY).path()),
    Watched(KIND_BINDING, resource(KIND_BINDING).path()),
    Watched(KIND_ASSIGNED, resource(KIND_ASSIGNED).path()),
    Watched(KIND_VERDICT, resource(KIND_VERDICT).path()),
    # read for the migration's status only (controller/migration.py)
    # (optional: with RBAC from before them, the verdicts go on without the migration's inputs)
    Watched(KIND_SERVICE_ACCOUNT, resource(KIND_SERVICE_ACCOUNT).path(), optional=True),
    Watched(KIND_NAMESPACE, resource(KIND_NAMESPACE).path(), optional=True),
    # LIST and WATCH (the RBAC grants those, not get), of `default` only
    Watched(KIND_CONFIG, resource(KIND_CONFIG).path(), field_selector=f"metadata.name={CONFIG_NAME}"),
)


@dataclass
class Options:
    concurrency: int = 16
    qps: float = 200.0
    burst: int = 400
    metrics_port: int = 9090
    status_interval: float = 2.0  # SimulationConfig totals and gauges, at most this often
    exception_batch: float = 2.0  # exception status follows pod changes within this many seconds
    namespaces: tuple[str, ...] = ()  # glob patterns of the namespaces served; none: all


class Controller:
    def __init__(self, writer: WriterLike | None = None, options: Options | None = None) -> None:
        self.options = options if options is not None else Options()
        self.store = Store()
        self.queue: WorkQueue[WorkKey] = WorkQueue()
        self.recorder = EventRecorder(writer)
        self.verdict_reconciler = VerdictReconciler(self.store, writer, self.recorder)
        self.exception_reconciler = ExceptionReconciler(self.store, writer, self.recorder)
        self.config_reconciler = ConfigReconciler(self.store, writer)
        self.intake = Intake(
            self.store,
            self.queue,
            self.recorder,
            exception_batch=self.options.exception_batch,
            namespaces=self.options.namespaces,
        )
        self._writer = writer
        self.informers: list[Informer] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def writer(self) -> WriterLike | None:
        return self._writer

    @writer.setter
    def writer(self, writer: WriterLike) -> None:
        """A new login: every reconciler writes through the new writer."""
        self._writer = writer
        self.recorder.writer = writer
        self.verdict_reconciler.writer = self.exception_reconciler.writer = writer
        self.config_reconciler.writer = writer

    @property
    def seeded(self) -> bool:
        return self.intake.seeded

    # --- running -----------------------------------------------------------------------------------

    def start(self, transport: APIClient, gate: PeeringGate) -> None:
        """Start reading back earlier Events (even while paused), the peering gate's informer and, while
        the gate is active, the informers, workers and the status loop."""
        self.informers = [Informer(transport, w, self.intake) for w in WATCHED]
        self._tasks.append(asyncio.create_task(self._load_events(), name="nmisim-events"))
        if not gate.standalone:
            path = CLUSTER_PATH if not self.options.namespaces else NAMESPACED_PATH
            watched = Watched("ClusterKopfPeering", path, field_selector=f"metadata.name={gate.name}")
            peering = Informer(transport, watched, gate)
            self._tasks.append(asyncio.create_task(peering.run(), name="nmisim-peering"))
        self._tasks.append(asyncio.create_task(self._serve(gate), name="nmisim-serve"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self.recorder.pending and self.writer is not None:  # a clean stop posts what it recorded
            try:
                await asyncio.wait_for(self.recorder.flush(self.options.concurrency), STOP_FLUSH)
            except Exception as exc:
                log.warning("%d Event(s) left unposted at stop: %s", self.recorder.pending, exc)

    async def _load_events(self) -> None:
        await self.recorder.load()
        if self.seeded:  # seeded before: look again at what earlier runs announced
            self.intake.recheck()
            self.intake.announce_missing()

    async def _serve(self, gate: PeeringGate) -> None:
        """Informers, workers and the status loop while the gate is active; cancelled when it pauses."""
        while True:
            await gate.active.wait()
            tasks = [
                asyncio.create_task(i.run(), name=f"nmisim-informer-{i.watched.kind}") for i in self.informers
            ]
            tasks.append(asyncio.create_task(self._seed_when_synced(), name="nmisim-seed"))
            tasks += [
                asyncio.create_task(self._worker(), name=f"nmisim-worker-{n}")
                for n in range(self.options.concurrency)
            ]
            tasks.append(asyncio.create_task(self._status_loop(), name="nmisim-status"))
            tasks += [
                asyncio.create_task(self._announcer(), name=f"nmisim-events-{n}")
                for n in range(EVENT_WORKERS)
            ]
            try:
                await gate.paused.wait()
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
            log.info("paused: informers and writes stopped until the peering gate opens again")

    async def _seed_when_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        await self.intake.seed_chunked()
        self.intake.announce_missing()

    async def _announcer(self) -> None:
        await self.recorder.loaded.wait()
        await self.recorder.run()

    async def _worker(self) -> None:
        await self.recorder.loaded.wait()
        while True:
            key, since = await self.queue.get()
            metrics.QUEUE.set(len(self.queue))
            try:
                requeue = await self.reconcile(key)
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
                if requeue is not None:  # the reconciler asks to look again; it never holds the queue
                    if requeue > 0:
                        self.queue.add_after(key, requeue)
                    else:
                        self.queue.add(key)
            finally:
                self.queue.done(key)

    async def reconcile(self, key: WorkKey) -> float | None:
        """What a worker runs for a key: the reconciler of its kind; a requeue delay, or None."""
        kind, namespace, name = key
        if kind == "verdict":
            return await self.verdict_reconciler.reconcile(namespace, name)
        if kind == "exception":
            await self.exception_reconciler.reconcile(namespace, name)
        else:
            await self.config_reconciler.reconcile()
        return None

    async def _status_loop(self) -> None:
        """Cluster totals (SimulationConfig status, gauges) at most once per interval, when changed."""
        published: set[tuple[str, str]] = set()
        while True:
            await asyncio.sleep(self.options.status_interval)
            if not self.store.totals_dirty or not self.seeded:
                continue
            self.store.totals_dirty = False
            t = S.totals(self.store.results())
            for key in published - set(t.by_namespace):
                metrics.PODS.remove(*key)
            for (ns, verdict), n in t.by_namespace.items():
                metrics.PODS.labels(namespace=ns, verdict=verdict).set(n)
            published = set(t.by_namespace)
            metrics.FINDINGS.clear()
            for code, n in t.findings.items():
                metrics.FINDINGS.labels(code=code).set(n)
            self.queue.add(CONFIG_KEY)

    # --- seeding without informers (the reconciler unit tests) -------------------------------------

    def seed(
        self,
        objects: Iterable[Model],
        exceptions: Iterable[tuple[PodIdentityException, ObjectRecord]],
        verdicts: Mapping[tuple[str, str], VerdictRecord],
        config: Mapping[str, Any] | None,
        *,
        specs: Mapping[tuple[str, str], PodSpec] | None = None,
        migration_objects: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Store these objects as if the informers had listed them, then seed. ``specs``: the pods' specs
        as the webhook reads them (a pod without one has no migration status); ``migration_objects``:
        ServiceAccount and Namespace bodies."""
        if config is not None:
            self.store.apply_config(config)
        for obj in objects:
            self.store.world.upsert(obj)
        for key, spec in (specs or {}).items():
            self.store.migration.set_spec(key, spec)
        migration = self.store.migration
        for body in migration_objects:
            meta = body.get("metadata") or {}
            if body.get("kind") == KIND_SERVICE_ACCOUNT:
                sa = service_account(body)
                migration.set_service_account((sa.namespace, sa.name), sa)
            elif body.get("kind") == KIND_NAMESPACE:
                migration.set_namespace(str(meta.get("name") or ""), namespace(body))
        for exc, record in exceptions:
            self.store.world.upsert(exc)
            self.store.exceptions[(exc.namespace, exc.name)] = record
        self.store.verdicts.update(verdicts)
        self.intake.seed()
