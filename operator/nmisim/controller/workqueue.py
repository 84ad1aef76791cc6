"""A coalescing work queue, as client-go's: a key waits at most once, and never runs twice at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """``add`` marks a key dirty; ``get`` hands it to one worker; ``done`` requeues it if it was re-added
    while being processed. Many ``add`` calls before a worker picks the key up cost one run."""

    def __init__(self) -> None:
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

    def __len__(self) -> int:
        return len(self._dirty)

    @property
    def idle(self) -> bool:
        return not self._dirty and not self._processing
