"""One way to the API server: one session, one TLS set-up, credentials that are read again when the API
server refuses them, for the operator's informers and writes and the node agent's watches.

Credentials come from a :class:`Credentials` provider (the operator and the agent use
:class:`nmisim.sources.credentials.ClientCredentials`: the kubernetes client's own loaders, with kubeconfig
contexts, exec plugins, token files and the in-cluster service-account token it re-reads). A 401 makes the
client ask the provider to read them again and, when they changed, send the request once more: a rotated
projected token, or a kubeconfig whose token file was rewritten, is picked up without a restart — as kopf's
``@authenticated`` re-login does for kopf's own requests (``kopf/_cogs/clients/auth.py``).

Writes get client-side flow control (a bound on requests in flight, a token bucket for the write rate,
``Retry-After`` on 429, retries with backoff on 5xx and connection errors); the informers' GETs stream and
are not rate-limited (client-go's informers do not share the writers' limiter either). Every request is
reported to an observer (``/metrics``); this module imports neither kopf, the kubernetes client nor any
edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp

from nmisim import __version__
from nmisim.kube.backoff import Backoff

log = logging.getLogger(__name__)

USER_AGENT: Final = f"nmisim/{__version__}"
RETRYABLE: Final = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS: Final = 6

#: ``observe(kind, verb, code)``: counts a request; code "error" when no answer came
Observer = Callable[[str, str, str], None]
#: ``latency(verb, seconds)``
LatencyObserver = Callable[[str, float], None]


class Credentials(Protocol):
    """Where the API server is and how to authenticate to it."""

    @property
    def server(self) -> str: ...

    @property
    def ssl(self) -> ssl.SSLContext | bool: ...

    def headers(self) -> Mapping[str, str]:
        """The auth headers for the next request (cheap; called for every request)."""
        ...

    def refresh(self) -> bool:
        """The API server refused the credentials (401): read them again; whether they changed."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """Credentials that never change (tests against a fake API server, a fixed token)."""

    server: str
    ssl: ssl.SSLContext | bool = False
    auth: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> Mapping[str, str]:
        return self.auth

    def refresh(self) -> bool:
        return False


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


class ListError(RuntimeError):
    """A LIST the API server refused."""

    def __init__(self, what: str, resp: Response) -> None:
        super().__init__(f"{what}: HTTP {resp.status}: {resp.message}")
        self.status = resp.status


class TokenBucket:
    """At most ``qps`` acquisitions per second on average, bursts up to ``burst``.

    Two priorities: a background acquisition (an Event, whose status is already written) waits while any
    foreground one (a status, an object) is waiting, so a burst of Events never delays the statuses of
    the next change; with no foreground waiter, background acquisitions take tokens as they come."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self._foreground = 0  # foreground acquisitions waiting or taking a token
        self._no_foreground = asyncio.Event()
        self._no_foreground.set()

    async def acquire(self, *, background: bool = False) -> None:
        if self.qps <= 0:
            return
        if background:
            while True:
                while self._foreground:
                    await self._no_foreground.wait()
                if await self._take(background=True):
                    return
        self._foreground += 1
        self._no_foreground.clear()
        try:
            await self._take(background=False)
        finally:
            self._foreground -= 1
            if not self._foreground:
                self._no_foreground.set()

    async def _take(self, *, background: bool) -> bool:
        """A token, waiting for it in turn; a background taker gives up its turn (False) as soon as a
        foreground one waits."""
        async with self._lock:
            while True:
                if background and self._foreground:
                    return False
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return True
                await asyncio.sleep((1 - self.tokens) / self.qps)


class APIClient:
    """Requests to one API server over one session. Create and use inside the running loop."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        concurrency: int = 16,
        qps: float = 50.0,
        burst: int = 100,
        observe: Observer | None = None,
        latency: LatencyObserver | None = None,
    ) -> None:
        self.credentials = credentials
        self.observe = observe
        self.latency = latency
        self._concurrency = concurrency
        self._inflight = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(qps, burst)
        self._session: aiohttp.ClientSession | None = None
        self._refresh_lock = asyncio.Lock()

    @property
    def server(self) -> str:
        return self.credentials.server.rstrip("/")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                # the watches' connections are long-lived: the bound on writes in flight is the semaphore
                connector=aiohttp.TCPConnector(limit=0, ssl=self.credentials.ssl),
            )
        return self._session

    def _count(self, kind: str, verb: str, code: str) -> None:
        if self.observe is not None:
            self.observe(kind, verb, code)

    async def reauthenticate(self, sent: Mapping[str, str]) -> bool:
        """After a 401 to a request sent with ``sent``: whether the credentials are now different (read
        again by the provider, or already by a concurrent request's refresh)."""
        async with self._refresh_lock:
            if dict(self.credentials.headers()) != dict(sent):
                return True
            changed = await asyncio.to_thread(self.credentials.refresh)
        if changed:
            log.info("the API server refused the credentials: read them again, and they changed")
        return changed

    # --- the informers' GETs ------------------------------------------------------------------------

    async def get(self, path: str, timeout: float, *, kind: str = "") -> aiohttp.ClientResponse:
        """Start a GET (the caller reads and releases the response); a 401 reads the credentials again
        and, when they changed, asks once more."""
        for attempt in (1, 2):
            auth = dict(self.credentials.headers())
            try:
                resp = await self.session.get(
                    self.server + path,
                    headers=auth,
                    timeout=aiohttp.ClientTimeout(total=timeout, connect=10),
                )
            except (aiohttp.ClientError, TimeoutError, OSError):
                self._count(kind, "GET", "error")
                raise
            self._count(kind, "GET", str(resp.status))
            if resp.status == 401 and attempt == 1 and await self.reauthenticate(auth):
                resp.release()
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    # --- writes and reads with flow control ---------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        kind: str = "",
        accept: str | None = None,
        background: bool = False,
    ) -> Response:
        """Send one request; retry 429 (honouring Retry-After), 5xx and connection errors, and a 401 once
        the credentials changed. ``background``: the rate limiter serves it after every waiting
        foreground request (:class:`TokenBucket`)."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        backoff = Backoff(base=0.2, cap=10.0)
        reauthenticated = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await self._bucket.acquire(background=background)
            started = time.monotonic()
            auth = dict(self.credentials.headers())
            try:
                async with (
                    self._inflight,
                    self.session.request(
                        method,
                        self.server + path,
                        data=data,
                        headers={**headers, **auth},
                        timeout=aiohttp.ClientTimeout(total=30, connect=5),
                    ) as resp,
                ):
                    text = await resp.text()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._count(kind, method, "error")
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = backoff.next()
                log.warning("%s %s failed (%s); retrying in %.1fs", method, path, exc, delay)
                await asyncio.sleep(delay)
                continue
            finally:
                if self.latency is not None:
                    self.latency(method, time.monotonic() - started)
            self._count(kind, method, str(status))
            try:
                parsed: Any = json.loads(text) if text else None
            except ValueError:
                parsed = text
            if status == 401 and not reauthenticated and await self.reauthenticate(auth):
                reauthenticated = True
                continue
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
