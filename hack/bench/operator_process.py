"""The operator under test (`nmisim run` as a process, its memory sampled) and its audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.config import OPERATOR_USER, Paths

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


class Operator:
    def __init__(self, paths: Paths, kubeconfig: Path) -> None:
        self.paths = paths
        self.kubeconfig = kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: list[tuple[float, float]] = []  # (time, MiB)
        self._sampler: asyncio.Task[None] | None = None
        self.log = paths.operator_log

    def start(self) -> float:
        """Start the process (inside the running loop); the monotonic time it was started."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.paths.nmisim, "run", "--standalone", "--all-namespaces", "--metrics-port=0"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        return t0

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def seeded_count(self) -> int:
        """How many "seeded:" lines the log has (one per start that loaded its start-up LIST)."""
        return self.log.read_text(errors="replace").count("seeded:") if self.log.exists() else 0

    async def _sample(self) -> None:
        assert self.proc is not None
        while self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append((time.monotonic(), int(line.split()[1]) / 1024))
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(150):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
        if self._sampler:
            self._sampler.cancel()


class Audit:
    """Counts the operator's writes from kube-apiserver's audit log, from a mark on."""

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = path
        if offset is None:
            offset = path.stat().st_size if path.exists() else 0
        self.offset = offset

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self, user: str = OPERATOR_USER) -> list[dict[str, Any]]:
        out = []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("user", {}).get("username") == user and ev.get("stage") == "ResponseComplete":
                    out.append(ev)
        return out

    def writes_since_mark(self) -> list[dict[str, Any]]:
        return writes(self.since_mark())


def writes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["verb"] in WRITE_VERBS]


async def quiesce(audit: Audit, quiet: float = 3.0, timeout: float = 300.0) -> float:
    """Wait until the operator has written nothing for ``quiet`` seconds; the seconds its writing lasted."""
    t0 = time.monotonic()
    audit.mark()
    last_change = time.monotonic()
    while time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.5)
        if audit.writes_since_mark():
            audit.mark()
            last_change = time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return round(last_change - t0, 2)
    raise RuntimeError("the operator kept writing")


def by_resource(events: list[dict[str, Any]], per: int) -> dict[str, float]:
    """Writes per ``per`` (pods, changes), by verb and resource."""
    counts: dict[str, int] = {}
    for e in events:
        ref = e.get("objectRef", {})
        name = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{e['verb']} {name}"] = counts.get(f"{e['verb']} {name}", 0) + 1
    return {k: round(v / per, 3) for k, v in sorted(counts.items())}


def peak_rate(events: list[dict[str, Any]]) -> int:
    """The most writes in one wall-clock second."""
    secs: dict[int, int] = {}
    for e in events:
        ts = datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        secs[int(ts)] = secs.get(int(ts), 0) + 1
    return max(secs.values(), default=0)
