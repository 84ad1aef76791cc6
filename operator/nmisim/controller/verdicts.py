"""The NMIVerdict reconciler: one verdict per pod, owned by it, saying what the engine says.

The desired status is built once per reconcile, from the result the store keeps; whether a write is
needed is decided from digests (:meth:`needs_write`, no status built). A transition's Event is queued
once the status records it (:mod:`.events`)."""

from __future__ import annotations

from nmisim.controller import status as S
from nmisim.controller.events import EventRecorder
from nmisim.controller.projector import WorkKey, verdict_key
from nmisim.controller.records import VerdictRecord
from nmisim.controller.store import Key, Store
from nmisim.controller.workqueue import WorkQueue
from nmisim.controller.writer import WriteError, WriterLike
from nmisim.engine.models import Pod


class VerdictReconciler:
    def __init__(
        self, store: Store, writer: WriterLike | None, recorder: EventRecorder, queue: WorkQueue[WorkKey]
    ) -> None:
        self.store = store
        self.writer = writer
        self.recorder = recorder
        self.queue = queue

    def needs_write(self, key: Key) -> bool:
        store = self.store
        pod = store.world.get_pod(*key)
        record = store.verdicts.get(key)
        if pod is None:
            return record is not None
        if store.result(*key) is None:
            return False
        if record is None or record.owner_uid != pod.uid:
            return True
        reason = store.desired_reason(key)
        return not store.verdict_in_step(key, record) or self.recorder.stale(pod.uid, reason)

    async def reconcile(self, namespace: str, name: str) -> None:
        assert self.writer is not None
        store, key = self.store, (namespace, name)
        pod = store.world.get_pod(namespace, name)
        record = store.verdicts.get(key)
        if pod is None:
            if record is not None:
                await self.writer.delete_verdict(namespace, name)
                store.verdicts.pop(key, None)
            return
        desired = store.desired_verdict(pod)
        if desired is None:
            return
        if record is not None and record.owner_uid != pod.uid:
            # A new pod with an old pod's name: the old verdict belongs to the old pod.
            await self.writer.delete_verdict(namespace, name)
            store.verdicts.pop(key, None)
            record = None
        if record is None:
            if key in store.terminating:
                return  # no new verdict for a pod on its way out
            record = await self._create(pod)
        if store.verdict_in_step(key, record) and not self.recorder.stale(pod.uid, S.event_reason(desired)):
            return
        changed, number = self.recorder.transition(pod.uid, record.status, desired)
        if changed:  # the pod's previous transition is announced before this one is recorded
            await self.recorder.settle(pod.uid)
        stamp = S.now()
        body = dict(desired)
        body["observedPodResourceVersion"] = pod.resource_version
        body["lastTransitionTime"] = stamp if changed else record.status.get("lastTransitionTime", stamp)
        body["transitions"] = number
        resp = await self.writer.patch_verdict_status(namespace, name, body)
        if resp.status == 404:  # deleted under us: the DELETED event will bring it back
            store.verdicts.pop(key, None)
            self.queue.add(verdict_key(namespace, name))
            return
        self.recorder.recorded(pod.uid, desired, number)
        if changed:  # announced once recorded (events.py)
            self.recorder.announce(pod, desired, number, stamp)
        fresh = VerdictRecord.from_body(resp.body)
        if fresh.newer_or_equal(store.verdicts.get(key)):
            store.verdicts[key] = fresh

    async def _create(self, pod: Pod) -> VerdictRecord:
        """Create the pod's verdict; a 409 adopts the one there if it is the pod's own."""
        assert self.writer is not None
        resp = await self.writer.create_verdict(pod)
        if resp.status == 409:
            resp = await self.writer.get_verdict(pod.namespace, pod.name)
            if not resp.ok:
                raise WriteError(f"read nmiverdict {pod.namespace}/{pod.name}", resp)
            record = VerdictRecord.from_body(resp.body)
            if record.owner_uid != pod.uid:
                raise WriteError(f"nmiverdict {pod.namespace}/{pod.name} belongs to another pod", resp)
        else:
            record = VerdictRecord.from_body(resp.body)
        self.store.verdicts[(pod.namespace, pod.name)] = record
        return record
