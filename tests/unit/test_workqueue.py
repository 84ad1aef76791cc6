"""The controller's work queue on its own: coalescing, one run at a time per key, and the per-key
exponential backoff of a failing key (client-go's rate-limiting queue)."""

from __future__ import annotations

import asyncio

from nmisim.controller.workqueue import ExponentialBackoff, WorkQueue


def test_backoff_doubles_per_key_up_to_the_cap_and_forget_starts_afresh() -> None:
    b: ExponentialBackoff[str] = ExponentialBackoff(base=0.5, cap=4.0)
    assert [b.when("a") for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.when("b") == 0.5 and b.failures("a") == 5
    b.forget("a")
    assert b.failures("a") == 0 and b.when("a") == 0.5


def test_adds_coalesce_and_a_key_never_runs_twice_at_a_time() -> None:
    async def run() -> list[str]:
        q: WorkQueue[str] = WorkQueue()
        for _ in range(3):
            q.add("k")
        key, _ = await q.get()
        q.add("k")  # re-added while processing: not handed out again until done
        try:
            await asyncio.wait_for(q.get(), 0.05)
            raise AssertionError("a key being processed was handed out again")
        except TimeoutError:
            pass
        assert len(q) == 1
        q.done(key)
        again, _ = await q.get()
        q.done(again)
        return [key, again]

    assert asyncio.run(run()) == ["k", "k"]


def test_a_failing_key_comes_back_after_its_backoff() -> None:
    async def run() -> tuple[float, float, float]:
        q: WorkQueue[str] = WorkQueue(ExponentialBackoff(base=0.05, cap=1.0))
        q.add("k")
        key, _ = await q.get()
        first = q.add_rate_limited(key)
        q.done(key)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        key, _ = await asyncio.wait_for(q.get(), 2)
        waited = loop.time() - t0
        second = q.add_rate_limited(key)
        q.done(key)
        await asyncio.wait_for(q.get(), 2)
        return first, second, waited

    first, second, waited = asyncio.run(run())
    assert (first, second) == (0.05, 0.1)
    assert waited >= 0.04
