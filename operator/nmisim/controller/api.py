"""A small async client for the few writes the operator makes, with client-side flow control.

The informers read (``nmisim.kube``); this client writes. It reuses kopf's login (a ``kopf.ConnectionInfo``)
and adds what kopf does not have: a bound on requests in flight, a token bucket for the write rate,
``Retry-After`` on 429, and retries with backoff on 5xx and connection errors. Every request is counted for
``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from nmisim import __version__
from nmisim.controller import metrics
from nmisim.kube.backoff import Backoff
from nmisim.kube.connection import ssl_context

log = logging.getLogger(__name__)

USER_AGENT: Final = f"nmisim-operator/{__version__}"
RETRYABLE: Final = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS: Final = 6


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message", ""))
        return str(self.body or "")


class TokenBucket:
    """At most ``qps`` acquisitions per second on average, bursts up to ``burst``."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.qps <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.qps)


class ListError(RuntimeError):
    """A LIST the API server refused."""

    def __init__(self, what: str, resp: Response) -> None:
        super().__init__(f"{what}: HTTP {resp.status}: {resp.message}")
        self.status = resp.status


class KubeAPI:
    """Async JSON requests to the API server with flow control. Create inside the running loop."""

    def __init__(self, info: Any, *, concurrency: int = 16, qps: float = 50.0, burst: int = 100) -> None:
        self.server = str(info.server).rstrip("/")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        headers.update(info.as_http_headers())
        self._ssl = ssl_context(info)
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=30, connect=5),
            connector=aiohttp.TCPConnector(limit=concurrency, ssl=self._ssl),
        )
        self._inflight = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(qps, burst)

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        kind: str = "",
        accept: str | None = None,
    ) -> Response:
        """Send one request; retry 429 (honouring Retry-After), 5xx and connection errors."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        backoff = Backoff(base=0.2, cap=10.0)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await self._bucket.acquire()
            started = time.monotonic()
            try:
                async with (
                    self._inflight,
                    self._session.request(method, self.server + path, data=data, headers=headers) as resp,
                ):
                    text = await resp.text()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                metrics.API_REQUESTS.labels(kind=kind, verb=method, code="error").inc()
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff.next()
                log.warning("%s %s failed (%s); retrying in %.1fs", method, path, exc, delay)
                await asyncio.sleep(delay)
                continue
            finally:
                metrics.API_LATENCY.labels(verb=method).observe(time.monotonic() - started)
            metrics.API_REQUESTS.labels(kind=kind, verb=method, code=str(status)).inc()
            try:
                parsed: Any = json.loads(text) if text else None
            except ValueError:
                parsed = text
            if status in RETRYABLE and attempt < MAX_ATTEMPTS:
                wait = backoff.next()
                if retry_after:
                    with contextlib.suppress(ValueError):
                        wait = max(float(retry_after), 0.0)
                log.warning("%s %s answered %d; retrying in %.1fs", method, path, status, wait)
                await asyncio.sleep(wait)
                continue
            return Response(status, parsed)
        raise AssertionError("unreachable")  # pragma: no cover

    async def pages(
        self,
        path: str,
        *,
        kind: str = "",
        limit: int = 500,
        missing_ok: bool = False,
        accept: str | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The items of a LIST, page by page (so that no more than a page of raw bodies is held).
        ``missing_ok``: a 404 (the kind's CRD is not installed) is an empty list."""
        token = ""
        while True:
            sep = "&" if "?" in path else "?"
            query = f"{sep}limit={limit}" + (f"&continue={quote(token)}" if token else "")
            resp = await self.request("GET", path + query, kind=kind, accept=accept)
            if resp.status == 404 and missing_ok:
                return
            if not resp.ok:
                raise ListError(f"list {path}", resp)
            yield resp.body.get("items") or []
            token = (resp.body.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def list_all(self, path: str, *, kind: str = "", limit: int = 500) -> list[dict[str, Any]]:
        """Every item of a (paginated) LIST."""
        return [item async for page in self.pages(path, kind=kind, limit=limit) for item in page]
