"""A coalescing, rate-limiting work queue, as client-go's: a key waits at most once, never runs twice at
a time, and a key that failed comes back after a per-key exponential backoff (client-go's
``ItemExponentialFailureRateLimiter``) until it is forgotten."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from nmisim.kube import backoff

K = TypeVar("K", bound=Hashable)

#: client-go's controller defaults are 5 ms doubling to 1000 s; the operator's writes are retried from
#: half a second up to a minute
BASE_DELAY = backoff.BASE
MAX_DELAY = backoff.CAP


class ExponentialBackoff(Generic[K]):
    """Per-key exponential backoff: ``base * 2**failures``, at most ``cap``; ``forget`` starts afresh."""

    def __init__(self, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        """The delay before the key's next try; counts one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return backoff.delay(n, self.base, self.cap)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)


class WorkQueue(Generic[K]):
    """``add`` marks a key dirty; ``get`` hands it to one worker; ``done`` requeues it if it was re-added
    while being processed. Many ``add`` calls before a worker picks the key up cost one run."""

    def __init__(self, limiter: ExponentialBackoff[K] | None = None) -> None:
        self.limiter: ExponentialBackoff[K] = limiter if limiter is not None else ExponentialBackoff()
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: dict[K, float] = {}  # key -> when it was first marked dirty
        self._processing: set[K] = set()

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty[key] = time.monotonic()
        if key not in self._processing:
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def add_rate_limited(self, key: K) -> float:
        """The key failed: add it again after its backoff; the delay."""
        delay = self.limiter.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure backs off from the start."""
        self.limiter.forget(key)

    async def get(self) -> tuple[K, float]:
        """The next key and when it became dirty."""
        key = await self._ready.get()
        since = self._dirty.pop(key, time.monotonic())
        self._processing.add(key)
        return key, since

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._ready.put_nowait(key)

    def waiting(self) -> list[K]:
        """The keys waiting for a worker, oldest first."""
        return list(self._dirty)

    def __len__(self) -> int:
        return len(self._dirty)

    @property
    def idle(self) -> bool:
        return not self._dirty and not self._processing
