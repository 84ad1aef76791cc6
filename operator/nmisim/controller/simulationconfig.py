"""The SimulationConfig/default status reconciler: totals per verdict, findings per code, pods per
migration class in each phase, and whether NMI would accept the configuration (a Ready condition).
Written only when one of them changed."""

from __future__ import annotations

from nmisim.controller import status as S
from nmisim.controller.records import ObjectRecord
from nmisim.controller.store import Store
from nmisim.controller.writer import WriterLike
from nmisim.engine.config import CONFIG_NAME


class ConfigReconciler:
    def __init__(self, store: Store, writer: WriterLike | None) -> None:
        self.store = store
        self.writer = writer

    async def reconcile(self) -> None:
        assert self.writer is not None
        store = self.store
        record = store.config_record
        if record is None:
            return
        desired = S.config_status(
            S.totals(store.results()),
            record.generation,
            store.config_error,
            record.status,
            store.migration_counts(),
        )
        if S.config_semantic(desired) == S.config_semantic(record.status):
            return
        # A merge patch merges maps: codes that are gone must be sent as null to be removed.
        stale = dict.fromkeys(record.status.get("findings") or {})
        resp = await self.writer.patch_config_status(
            CONFIG_NAME, {**desired, "findings": {**stale, **desired["findings"]}}
        )
        if resp.ok:
            fresh = ObjectRecord.from_body(resp.body)
            if fresh.newer_or_equal(store.config_record):
                store.config_record = fresh
