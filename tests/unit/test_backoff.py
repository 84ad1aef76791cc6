"""The one backoff (nmisim.kube.backoff): doubling from the base, capped, reset by a success."""

from __future__ import annotations

from nmisim.kube.backoff import Backoff, delay


def test_doubling_capped_and_reset() -> None:
    b = Backoff(base=0.5, cap=4.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_delay_does_not_overflow_after_many_failures() -> None:
    assert delay(10_000, 0.5, 60.0) == 60.0
