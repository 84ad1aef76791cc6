"""The operator's peering gate follows kopf's rule (kopf/_core/engines/peering.py): paused while a live
peer other than this one has a higher or the same priority; active when they are gone or dead, and at
the moment the last blocking peer's keep-alive expires."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from nmisim.controller.peering import PeeringGate, blocking, peers

ME = "me@host/1/abc"


def body(**status: tuple[int, float]) -> dict[str, Any]:
    """A peering object; each peer (priority, seconds since its last keep-alive), lifetime 30 s."""
    now = dt.datetime.now(dt.UTC)
    return {
        "metadata": {"name": "nmisim"},
        "status": {
            ident: {
                "priority": prio,
                "lifetime": 30,
                "lastseen": (now - dt.timedelta(seconds=ago)).isoformat(),
            }
            for ident, (prio, ago) in status.items()
        },
    }


@pytest.mark.parametrize(
    ("status", "paused"),
    [
        ({}, False),
        ({ME: (100, 0)}, False),  # only itself
        ({ME: (100, 0), "other": (50, 0)}, False),  # a lower priority
        ({ME: (100, 0), "other": (200, 0)}, True),  # a higher priority
        ({ME: (100, 0), "other": (100, 0)}, True),  # the same: kopf pauses both
        ({ME: (100, 0), "other": (200, 31)}, False),  # a higher one, dead
    ],
)
def test_the_rule(status: dict[str, tuple[int, float]], paused: bool) -> None:
    now = dt.datetime.now(dt.UTC)
    assert bool(blocking(peers(body(**status)), ME, 100, now)) is paused


def test_malformed_entries_are_skipped() -> None:
    raw = {
        "status": {
            "a": "x",
            "b": {"priority": "high", "lastseen": "now"},
            "c": {"lastseen": "2026-01-01T00:00:00"},
        }
    }
    assert [p.identity for p in peers(raw)] == ["c"]


def test_the_gate_pauses_and_resumes_when_the_blocker_expires() -> None:
    async def go() -> list[bool]:
        gate = PeeringGate(name="nmisim", identity=ME, priority=100, standalone=False)
        seen = [gate.active.is_set()]  # mandatory peering: paused until the object is seen
        await gate.upsert("ClusterKopfPeering", body(**{ME: (100, 0), "other": (200, 29.7)}))
        seen.append(gate.active.is_set())
        await asyncio.wait_for(gate.active.wait(), 3)  # its keep-alive expires in 0.3 s
        seen.append(gate.active.is_set())
        await gate.delete("ClusterKopfPeering", "", "nmisim", "9")
        seen.append(gate.active.is_set())
        return seen

    assert asyncio.run(go()) == [False, False, True, True]


def test_standalone_and_optional_peering_start_active() -> None:
    async def go() -> tuple[bool, bool]:
        alone = PeeringGate(name="nmisim", identity=ME, priority=0, standalone=True)
        await alone.upsert("ClusterKopfPeering", body(other=(500, 0)))
        optional = PeeringGate(name="default", identity=ME, priority=0, standalone=False, mandatory=False)
        return alone.active.is_set(), optional.active.is_set()

    assert asyncio.run(go()) == (True, True)
