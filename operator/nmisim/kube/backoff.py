"""The one exponential backoff every retry loop of nmisim uses (informers, the start-up reads, the API
client's retries and, per key, the work queue)."""

from __future__ import annotations

import asyncio
from typing import Final

BASE: Final = 0.5
CAP: Final = 60.0


def delay(failures: int, base: float = BASE, cap: float = CAP) -> float:
    """``base * 2**failures``, at most ``cap`` (client-go's ``ItemExponentialFailureRateLimiter``)."""
    return float(min(base * 2 ** min(failures, 64), cap))


class Backoff:
    """One retry loop's backoff: :meth:`next` the delay before the next try; :meth:`reset` on success."""

    def __init__(self, base: float = BASE, cap: float = CAP) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        d = delay(self.failures, self.base, self.cap)
        self.failures += 1
        return d

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> float:
        """Wait the next delay; the delay waited."""
        d = self.next()
        await asyncio.sleep(d)
        return d
