"""The operator's memory across faults: Events of a run killed before it recorded them (objects deleted
while its watches were away: tests/unit/test_informer.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from factories import UID, pod, world
from fake_writer import FakeWriter

from nmisim.controller import status as S
from nmisim.controller.controller import Controller
from nmisim.controller.events import REANNOUNCE_WITHIN
from nmisim.controller.records import VerdictRecord
from nmisim.controller.writer import WriteError
from nmisim.engine.models import Pod
from nmisim.kube.client import Response


def _pod() -> Pod:
    return pod("p", "ns", uid=UID, rv="5")


def _event(number: int, reason: str, uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"name": f"p.{uid[:8]}.{number}"}, "involvedObject": {"uid": uid}, "reason": reason}


async def _seeded(stamp: str | None = None) -> tuple[Controller, Pod]:
    """A controller whose pod has a verdict that is up to date with the engine (transition 1); inside an
    event loop, as in the operator."""
    ctl = Controller()
    pod = _pod()
    result = world(pod).evaluate(pod)  # what the engine says, as the verdict of an earlier run recorded it
    status = {**S.verdict_status(result, pod), "transitions": 1}
    if stamp is not None:
        status["lastTransitionTime"] = stamp
    record = VerdictRecord.from_body(
        {
            "metadata": {"resourceVersion": "7", "ownerReferences": [{"kind": "Pod", "uid": UID}]},
            "status": status,
        }
    )
    ctl.seed(objects=[pod], exceptions=[], verdicts={("ns", "p"): record}, config=None)
    return ctl, pod


def test_a_verdict_in_step_needs_no_write() -> None:
    asyncio.run(_test_a_verdict_in_step_needs_no_write())


async def _test_a_verdict_in_step_needs_no_write() -> None:
    ctl, _ = await _seeded()
    assert ctl.queue.idle
    assert ctl.recorder.ledger.last[UID] == (S.REASON_DENIED, 1)


def test_an_unrecorded_later_event_is_corrected() -> None:
    asyncio.run(_test_an_unrecorded_later_event_is_corrected())


async def _test_an_unrecorded_later_event_is_corrected() -> None:
    ctl, _ = await _seeded()
    # An earlier run announced transition 2 (exempted) and was killed before writing the status; the pod
    # is back to denied: the Event must be followed by a third one, not left standing.
    assert ctl.recorder.announced([_event(1, S.REASON_DENIED), _event(2, S.REASON_EXEMPTED)]) == 2
    assert ctl.recorder.ledger.last[UID] == (S.REASON_EXEMPTED, 2)
    fake = FakeWriter()
    ctl.writer = fake
    await ctl.reconcile(("verdict", "ns", "p"))
    await ctl.recorder.flush()
    assert fake.ops() == ["patch", "event"]
    assert fake.calls[0][1]["transitions"] == 3
    assert fake.calls[1][1] == (f"p.{UID[:8]}.3", S.REASON_DENIED)


def test_older_or_foreign_events_change_nothing() -> None:
    asyncio.run(_test_older_or_foreign_events_change_nothing())


async def _test_older_or_foreign_events_change_nothing() -> None:
    ctl, _ = await _seeded()
    other = "ffffffff-0000-4000-8000-000000000002"
    assert (
        ctl.recorder.announced([_event(1, S.REASON_EXEMPTED), {"metadata": {"name": "x.y"}, "reason": "X"}])
        == 1
    )
    ctl.recorder.announced([{**_event(5, S.REASON_EXEMPTED, other), "metadata": {"name": "p.00000000.5"}}])
    assert ctl.recorder.ledger.last[UID] == (S.REASON_DENIED, 1)
    assert other not in ctl.recorder.ledger.last
    fake = FakeWriter()
    ctl.writer = fake
    await ctl.reconcile(("verdict", "ns", "p"))
    assert fake.ops() == []


def test_a_transition_recorded_without_its_event_is_announced_at_start() -> None:
    asyncio.run(_test_a_transition_recorded_without_its_event_is_announced_at_start())


async def _loaded(
    stamp: str, events: list[dict[str, Any]] | None = None, error: Exception | None = None
) -> Controller:
    """:func:`_seeded`, then the Events of earlier runs read as at start (``recorder.load()``): ``events``,
    or ``error`` when listing them fails."""
    ctl, _ = await _seeded(stamp=stamp)
    fake = FakeWriter()
    fake.events = events or []
    fake.list_error = error
    ctl.writer = fake
    await ctl.recorder.load()
    return ctl


def _ago(seconds: float) -> str:
    """An RFC 3339 timestamp ``seconds`` before now (as the status writes them)."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _test_a_transition_recorded_without_its_event_is_announced_at_start() -> None:
    """A run killed between a verdict's status (transition 1, just now) and its Event: the next run
    posts the Event, under the transition's name; once, and not when the Events are unknown or the
    transition is older than REANNOUNCE_WITHIN."""
    ctl = await _loaded(S.now())  # the Events of earlier runs were read: none for this pod
    assert ctl.recorder.known and ctl.recorder.loaded.is_set()
    assert ctl.intake.announce_missing() == 1
    assert ctl.intake.announce_missing() == 0  # once
    await ctl.recorder.flush()
    assert isinstance(ctl.writer, FakeWriter)
    assert ctl.writer.calls == [("event", (f"p.{UID[:8]}.1", S.REASON_DENIED))]
    # already announced: nothing
    ctl2 = await _loaded(S.now(), events=[_event(1, S.REASON_DENIED)])
    assert ctl2.intake.announce_missing() == 0
    # Events unknown (a 403 listing them), or the transition long past: nothing
    forbidden = WriteError("list events", Response(403, {"message": "forbidden"}))
    ctl3 = await _loaded(S.now(), error=forbidden)
    assert not ctl3.recorder.known and ctl3.intake.announce_missing() == 0
    ctl4 = await _loaded(_ago(REANNOUNCE_WITHIN + 60))
    assert ctl4.recorder.known and ctl4.intake.announce_missing() == 0
    # ... while one just inside REANNOUNCE_WITHIN is announced
    ctl5 = await _loaded(_ago(REANNOUNCE_WITHIN - 60))
    assert ctl5.intake.announce_missing() == 1
