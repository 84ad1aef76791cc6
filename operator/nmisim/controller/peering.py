"""Whether this replica may act, with kopf's peering: kopf keeps the peering object (each replica's
priority and last keep-alive in its status) and pauses its own watches when a live peer has a higher
priority, or the same one; this gate reads the same object by the same rule, so the operator's own
informers and writers pause and resume with kopf. ``--standalone`` (or no peering object name): always
active.

kopf's rule (``kopf/_core/engines/peering.py``, ``process_peering_event``): a peer is alive until
``lastseen + lifetime``; paused while any live peer other than this one has a priority above this one's,
or equal to it; resumed when they are gone or dead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

CLUSTER_PATH: Final = "/apis/kopf.dev/v1/clusterkopfpeerings"
NAMESPACED_PATH: Final = "/apis/kopf.dev/v1/kopfpeerings"


@dataclass(frozen=True, slots=True)
class Peer:
    identity: str
    priority: int
    deadline: dt.datetime


def peers(body: Mapping[str, Any] | None) -> list[Peer]:
    """The peers a peering object's status lists (malformed entries are skipped)."""
    out: list[Peer] = []
    status = (body or {}).get("status") or {}
    if not isinstance(status, Mapping):
        return out
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue
        try:
            seen = dt.datetime.fromisoformat(str(info.get("lastseen")))
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=dt.UTC)
            out.append(
                Peer(
                    str(identity),
                    int(info.get("priority") or 0),
                    seen + dt.timedelta(seconds=int(info.get("lifetime") or 60)),
                )
            )
        except (TypeError, ValueError):
            continue
    return out


def blocking(all_peers: list[Peer], identity: str, priority: int, now: dt.datetime) -> list[Peer]:
    """The live peers that pause this one: a higher priority or the same."""
    return [p for p in all_peers if p.identity != identity and p.deadline > now and p.priority >= priority]


class PeeringGate:
    """``active`` while this replica may act; :meth:`observe` every version of the peering object."""

    def __init__(
        self, *, name: str | None, identity: str, priority: int, standalone: bool, mandatory: bool = True
    ) -> None:
        self.name = name
        self.identity = identity
        self.priority = priority
        self.standalone = standalone or not name
        self.active = asyncio.Event()
        self.paused = asyncio.Event()
        self._bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        if self.standalone or not mandatory:
            self.active.set()
        else:
            self.paused.set()  # peering is mandatory: paused until the peering object says otherwise

    def observe(self, namespace: str, body: Mapping[str, Any] | None) -> None:
        """A peering object as listed or watched (None: gone)."""
        if self.standalone:
            return
        key = (namespace, str(((body or {}).get("metadata") or {}).get("name") or self.name))
        if body is None:
            self._bodies.pop(key, None)
        else:
            self._bodies[key] = body
        self.decide()

    def decide(self) -> None:
        now = dt.datetime.now(dt.UTC)
        found = [p for body in self._bodies.values() for p in peers(body)]
        blockers = blocking(found, self.identity, self.priority, now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if blockers:
            if self.active.is_set():
                log.info("pausing: peers %s", ", ".join(f"{p.identity} ({p.priority})" for p in blockers))
            self.active.clear()
            self.paused.set()
            wait = (min(p.deadline for p in blockers) - now).total_seconds()
            self._timer = asyncio.get_running_loop().call_later(max(wait, 0.0) + 0.1, self.decide)
        else:
            if not self.active.is_set():
                log.info("active: no peer of this or a higher priority is alive")
            self.paused.clear()
            self.active.set()

    # the Sink protocol of nmisim.kube.informer, for the peering objects

    async def upsert(self, kind: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        if meta.get("name") == self.name:
            self.observe(str(meta.get("namespace") or ""), body)

    async def delete(self, kind: str, namespace: str, name: str, resource_version: str) -> None:
        if name == self.name:
            self._bodies.pop((namespace, name), None)
            self.decide()

    async def synced(self, kind: str) -> None:
        if not self.standalone:
            self.decide()
