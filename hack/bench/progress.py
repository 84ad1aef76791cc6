"""What the benchmark prints while it runs: phase headings and rich progress bars (on a terminal: live
bars; in a log: each bar once, when it is done)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
R = TypeVar("R")

console = Console(highlight=False)


def say(msg: str) -> None:
    console.print(f"[bold]\\[bench][/bold] {msg}")


@contextmanager
def bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar for ``total`` items; yields ``update(done)``."""
    columns = (
        TextColumn(f"  {label:<34}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)
        progress.update(task, completed=total)


async def gather_limited(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], label: str, total: int, limit: int = 48
) -> list[R]:
    """``fn`` on every item, at most ``limit`` at a time, with a progress bar."""
    sem = asyncio.Semaphore(limit)
    results: list[R] = []
    with bar(label, total) as update:
        done = 0

        async def one(item: T) -> None:
            nonlocal done
            async with sem:
                results.append(await fn(item))
            done += 1
            update(done)

        await asyncio.gather(*(one(i) for i in items))
    return results
