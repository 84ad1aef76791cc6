"""The AzurePodIdentityException status reconciler: how many pods each exception actually exempts, a
Ready condition, and an Event when it starts or stops exempting any."""

from __future__ import annotations

from nmisim.controller import status as S
from nmisim.controller.events import EventRecorder, exception_event
from nmisim.controller.records import ObjectRecord
from nmisim.controller.store import Store
from nmisim.controller.writer import WriterLike


class ExceptionReconciler:
    def __init__(self, store: Store, writer: WriterLike | None, recorder: EventRecorder) -> None:
        self.store = store
        self.writer = writer
        self.recorder = recorder

    async def reconcile(self, namespace: str, name: str) -> None:
        assert self.writer is not None
        store, key = self.store, (namespace, name)
        exc = store.world.get_exception(namespace, name)
        record = store.exceptions.get(key)
        if exc is None or record is None:
            return
        matched = S.matched_pods(name, store.results_in(namespace))
        desired = S.exception_status(exc, matched, record.status)
        if S.exception_semantic(desired) == S.exception_semantic(record.status):
            return
        was_empty = not record.status or not record.status.get("matchedPods")
        if was_empty != (not matched) or not record.status:
            message = desired["conditions"][0]["message"]
            await self.recorder.post(
                exception_event(namespace, name, record, matches=bool(matched), message=message)
            )
        resp = await self.writer.patch_exception_status(namespace, name, desired)
        if resp.ok:
            fresh = ObjectRecord.from_body(resp.body)
            if fresh.newer_or_equal(store.exceptions.get(key)):
                store.exceptions[key] = fresh
