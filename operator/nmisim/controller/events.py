"""The Event recorder: one core/v1 Event per transition, named so that a transition posted twice (a
retry whose first try did arrive, a run announcing what a killed run may have posted) is refused with
409 and stays one Event.

* a pod's Events are ``<pod>.<uid[:8]>.<n>``, ``n`` the pod's transition number, reasons IMDSIntercepted,
  IMDSDenied (Warning), IMDSExempted and IMDSBypassed;
* an exception's are ``<name>.<uid[:8]>.<reason>.<epoch of the previous transition>``, reasons
  ExceptionMatchesPods and ExceptionMatchesNoPods (Warning).

A pod's verdict status is written first and its Event after it, from a queue of the recorder's own
(:meth:`EventRecorder.announce`, :meth:`EventRecorder.run`): statuses are what users and tests wait for,
and when a transition moves a thousand pods at once their statuses are not held behind a thousand
Events in the API budget. The status records the transition (its number and time) before the Event
announces it, and a pod's waiting Event is posted before its next transition is recorded
(:meth:`EventRecorder.settle`): a run killed at any point leaves at most each pod's latest transition
without its Event, and the next run posts it from what the verdict says (:meth:`EventRecorder.missing`:
the Events earlier runs posted are read back at start), when it is recent (:data:`REANNOUNCE_WITHIN`;
Events expire after an hour by default, so older transitions cannot be told from announced ones).

Events are values (:class:`Event`), finished when their transition is decided (:func:`pod_event`, in the
reconciler); :class:`TransitionLedger` keeps the last transition known per pod (the highest number a verdict
or an Event tells, kept when someone else deletes a verdict); :class:`EventRecorder` only orders, posts and
re-announces Events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.controller import status as S
from nmisim.controller.records import ObjectRecord
from nmisim.controller.writer import WriteError, WriterLike
from nmisim.engine.models import KIND_EXCEPTION, Pod
from nmisim.engine.resources import resource
from nmisim.kube.backoff import Backoff

log = logging.getLogger(__name__)

#: a transition recorded without its Event (a run killed in between) is announced by the next run when
#: it is at most this old (seconds)
REANNOUNCE_WITHIN: Final = 300.0


@dataclass(frozen=True, slots=True)
class Event:
    """A core/v1 Event, finished when its transition is decided: the recorder only orders, posts and
    re-announces it. ``uid`` and ``number`` order a pod's Events (its transition number); 0 for others."""

    name: str
    namespace: str
    involved: Mapping[str, Any]
    reason: str
    message: str
    warning: bool
    timestamp: str
    uid: str = ""
    number: int = 0


def pod_event(pod: Pod, status: Mapping[str, Any], number: int, stamp: str) -> Event | None:
    """The Event of a pod's transition ``number`` to the verdict ``status`` (None: inactive, no Event). The
    one place a pod's Event reason and message are decided."""
    reason = S.event_reason(status)
    if reason is None:
        return None
    return Event(
        name=f"{pod.name}.{pod.uid[:8]}.{number}",
        namespace=pod.namespace,
        involved={
            "apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": pod.namespace,
            "uid": pod.uid, "resourceVersion": pod.resource_version,
        },
        reason=reason,
        message=S.event_message(status),
        warning=reason == S.REASON_DENIED,
        timestamp=stamp,
        uid=pod.uid,
        number=number,
    )  # fmt: skip


def exception_event(namespace: str, name: str, record: ObjectRecord, *, matches: bool, message: str) -> Event:
    """The Event of an exception that starts or stops exempting pods."""
    reason = S.REASON_EXC_MATCHES if matches else S.REASON_EXC_NO_MATCH
    previous = S.ready_condition(record.status) or {}
    return Event(
        name=f"{name}.{record.uid[:8]}.{reason.lower()}.{S.epoch(previous.get('lastTransitionTime'))}",
        namespace=namespace,
        involved={
            "apiVersion": resource(KIND_EXCEPTION).api_version, "kind": KIND_EXCEPTION,
            "name": name, "namespace": namespace, "uid": record.uid,
            "resourceVersion": record.resource_version,
        },
        reason=reason,
        message=message,
        warning=not matches,
        timestamp=S.now(),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    """A pod's next transition: whether its Event reason changes, and its transition number after."""

    changed: bool
    number: int
    reason: str | None


class TransitionLedger:
    """The last transition known per pod (the highest number a verdict, an Event or a write tells), kept
    when someone else deletes a verdict: what the operator last announced wins over what a verdict says
    (an edited verdict is drift)."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str | None, int]] = {}  # pod uid -> (reason, transition number)

    def remember(self, uid: str, reason: str | None, transitions: int) -> None:
        """Keep the transition with the highest number."""
        known = self.last.get(uid)
        if known is None or transitions > known[1]:
            self.last[uid] = (reason, transitions)

    def forget(self, uid: str) -> None:
        self.last.pop(uid, None)

    def stale(self, uid: str, reason: str | None) -> bool:
        """The last Event announced for this pod says something else than ``reason``, its verdict's (an
        earlier run posted an Event and was killed before recording it, and the pod went back since)."""
        known = self.last.get(uid)
        return known is not None and known[0] != reason

    def next(self, uid: str, recorded: Mapping[str, Any], reason: str | None) -> Transition:
        """The transition a verdict recording ``recorded`` makes when it comes to say ``reason``."""
        if uid in self.last:
            old_reason, count = self.last[uid]
        else:
            old_reason, count = S.event_reason(recorded), int(recorded.get("transitions") or 0)
        changed = old_reason != reason
        return Transition(changed, count + 1 if changed else count, reason)

    def commit(self, uid: str, transition: Transition) -> None:
        """The verdict now records ``transition`` (after its status write: a write that failed announces
        the same transition, under the same name, again)."""
        self.last[uid] = (transition.reason, transition.number)


class EventRecorder:
    """Orders, posts and re-announces finished :class:`Event` values."""

    def __init__(self, writer: WriterLike | None = None, ledger: TransitionLedger | None = None) -> None:
        self.writer = writer
        self.ledger = ledger if ledger is not None else TransitionLedger()
        self.posted: dict[str, int] = {}  # pod uid -> the highest transition number announced
        self.loaded = asyncio.Event()  # set once the Events of earlier runs are known (or cannot be)
        self.known = False  # whether they could be read
        # at most one Event per pod waits (its latest recorded transition): a newer transition of the
        # pod posts it first (settle), so a run killed at any point leaves only the latest unannounced
        self._pending: dict[str, Event] = {}  # pod uid -> its Event to post, oldest first
        self._inflight: dict[str, asyncio.Event] = {}  # pod uid -> set when its post is done
        self._wake = asyncio.Event()

    # --- what earlier runs announced ----------------------------------------------------------------

    def announced(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Learn the transitions earlier runs announced (their Events); how many."""
        n = 0
        for event in events:
            name = str((event.get("metadata") or {}).get("name") or "")
            uid = str((event.get("involvedObject") or {}).get("uid") or "")
            number = name.rsplit(".", 1)[-1]
            if uid and number.isdigit() and name.split(".")[-2:-1] == [uid[:8]]:
                self.ledger.remember(uid, event.get("reason"), int(number))
                self.posted[uid] = max(self.posted.get(uid, 0), int(number))
                n += 1
        return n

    def missing(self, uid: str, number: int, stamp: str | None) -> bool:
        """Whether transition ``number``, recorded at ``stamp``, was never announced and is recent enough
        to be announced now (only when the Events of earlier runs could be read)."""
        if not self.known or number <= self.posted.get(uid, 0):
            return False
        return time.time() - S.epoch(stamp) <= REANNOUNCE_WITHIN

    async def load(self) -> None:
        """Read the Events of earlier runs, retrying until it works (a 403: go on without them)."""
        assert self.writer is not None
        backoff = Backoff()
        while not self.loaded.is_set():
            try:
                n = self.announced(await self.writer.list_events())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, WriteError) and exc.status == 403:
                    log.warning("cannot list this operator's Events (%s): a restart may repeat one", exc)
                    self.loaded.set()
                    return
                wait = backoff.next()
                log.warning("listing this operator's Events failed: %s; retrying in %.1fs", exc, wait)
                await asyncio.sleep(wait)
            else:
                log.info("%d pod Events of earlier runs known", n)
                self.known = True
                self.loaded.set()

    # --- posting -----------------------------------------------------------------------------------

    def announce(self, event: Event) -> None:
        """Queue a pod's Event (its latest transition's); a poster (:meth:`run`) posts it."""
        self._pending[event.uid] = event
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def settle(self, uid: str) -> None:
        """Post the pod's waiting Event now (and wait for one being posted): before a newer transition
        of the pod is recorded, so that its Events follow its transitions one by one."""
        while (done := self._inflight.get(uid)) is not None:
            await done.wait()
        item = self._pending.pop(uid, None)
        if item is not None:
            await self._post_tracked(item)

    async def run(self) -> None:
        """Post waiting Events, oldest first; a failure is retried after a backoff."""
        backoff = Backoff()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            uid = next(iter(self._pending))
            item = self._pending.pop(uid)
            try:
                await self._post_tracked(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = backoff.next()
                log.warning("Event %s: %s; retrying in %.1fs", item.name, exc, wait)
                await asyncio.sleep(wait)
            else:
                backoff.reset()

    async def flush(self, concurrency: int = 1) -> None:
        """Post every waiting Event now, ``concurrency`` at a time (a clean stop; the unit tests)."""

        async def drain() -> None:
            while self._pending:
                uid = next(iter(self._pending))
                await self._post_tracked(self._pending.pop(uid))

        await asyncio.gather(*(drain() for _ in range(max(concurrency, 1))))

    async def _post_tracked(self, item: Event) -> None:
        """Post, marked in flight; put back (unless a newer one is waiting) when it fails or is cancelled."""
        uid = item.uid
        done = self._inflight[uid] = asyncio.Event()
        try:
            await self.post(item)
        except BaseException:
            self._pending.setdefault(uid, item)
            raise
        finally:
            del self._inflight[uid]
            done.set()

    async def post(self, event: Event) -> None:
        """Post one Event now (409: it was posted already, under its deterministic name)."""
        assert self.writer is not None
        await self.writer.post_event(
            name=event.name,
            namespace=event.namespace,
            involved=event.involved,
            reason=event.reason,
            message=event.message,
            warning=event.warning,
            timestamp=event.timestamp,
        )
        if event.uid:
            self.posted[event.uid] = max(self.posted.get(event.uid, 0), event.number)
