"""The NMIVerdict reconciler: one verdict per pod, owned by it, saying what the engine says.

One decision in one place: :func:`plan` computes, from the store and the transition ledger, what a pod's
verdict must become — delete it, create it, write its desired status (built once per change, by the store)
with the transition it makes — or None when nothing is owed. The event path uses it only as a predicate
(should the key be queued?); :meth:`VerdictReconciler.reconcile` acts on it and returns a requeue instead of
holding the queue. A transition's Event is a finished value (:func:`.events.pod_event`), queued once the
status records it."""

from __future__ import annotations

from dataclasses import dataclass

from nmisim.controller import status as S
from nmisim.controller.events import EventRecorder, Transition, TransitionLedger, pod_event
from nmisim.controller.records import VerdictRecord
from nmisim.controller.store import Desired, Key, Store
from nmisim.controller.writer import WriteError, WriterLike
from nmisim.engine.models import Pod

#: requeue now (the verdict was deleted under a write: the next reconcile creates it again)
REQUEUE_NOW: float = 0.0


@dataclass(frozen=True, slots=True)
class VerdictPlan:
    """What a pod's NMIVerdict must become."""

    key: Key
    pod: Pod | None
    #: delete the verdict there: its pod is gone, or it belongs to an older pod of the same name
    delete: bool = False
    #: create the pod's verdict (then plan again: a 409 adopts the one there)
    create: bool = False
    desired: Desired | None = None
    transition: Transition | None = None

    @property
    def write(self) -> bool:
        return self.desired is not None and self.transition is not None


def plan(store: Store, ledger: TransitionLedger, key: Key) -> VerdictPlan | None:
    """What the verdict of ``key`` owes, or None when it says what its pod calls for."""
    pod = store.world.get_pod(*key)
    record = store.verdicts.get(key)
    if pod is None:
        return VerdictPlan(key, None, delete=True) if record is not None else None
    desired = store.desired(key)
    if desired is None:
        return None  # not evaluated yet
    delete = record is not None and record.owner_uid != pod.uid
    if record is None or delete:
        if key in store.terminating:  # no new verdict for a pod on its way out
            return VerdictPlan(key, pod, delete=True) if delete else None
        return VerdictPlan(key, pod, delete=delete, create=True, desired=desired)
    if desired.digest == record.semantic and not ledger.stale(pod.uid, desired.reason):
        return None
    return VerdictPlan(
        key, pod, desired=desired, transition=ledger.next(pod.uid, record.status, desired.reason)
    )


class VerdictReconciler:
    def __init__(self, store: Store, writer: WriterLike | None, recorder: EventRecorder) -> None:
        self.store = store
        self.writer = writer
        self.recorder = recorder

    @property
    def ledger(self) -> TransitionLedger:
        return self.recorder.ledger

    def owed(self, key: Key) -> bool:
        """The event path's predicate: whether the key must be queued."""
        return plan(self.store, self.ledger, key) is not None

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Act on the key's plan; the delay after which to look again, or None."""
        assert self.writer is not None
        store, key = self.store, (namespace, name)
        p = plan(store, self.ledger, key)
        if p is None:
            return None
        if p.delete:
            await self.writer.delete_verdict(namespace, name)
            store.verdicts.pop(key, None)
        if p.create:
            assert p.pod is not None
            await self._create(p.pod)
            p = plan(store, self.ledger, key)  # the created, or adopted, verdict is known now
        if p is None or not p.write:
            return None
        pod, desired, t = p.pod, p.desired, p.transition
        assert pod is not None and desired is not None and t is not None
        status = store.desired_status(pod)
        assert status is not None
        if t.changed:  # the pod's previous transition is announced before this one is recorded
            await self.recorder.settle(pod.uid)
        record = store.verdicts[key]
        stamp = S.now()
        body = dict(status)
        body["observedPodResourceVersion"] = pod.resource_version
        body["lastTransitionTime"] = stamp if t.changed else record.status.get("lastTransitionTime", stamp)
        body["transitions"] = t.number
        resp = await self.writer.patch_verdict_status(namespace, name, body)
        if resp.status == 404:  # deleted under us: the DELETED event will bring it back
            store.verdicts.pop(key, None)
            return REQUEUE_NOW
        self.ledger.commit(pod.uid, t)
        event = pod_event(pod, status, t.number, stamp) if t.changed else None
        if event is not None:  # announced once recorded (events.py)
            self.recorder.announce(event)
        store.written(key, VerdictRecord.from_body(resp.body))
        return None

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
