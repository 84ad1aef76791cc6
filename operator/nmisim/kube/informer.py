"""An informer, as client-go's reflector: a paginated LIST, then a WATCH from the list's resourceVersion
with bookmarks; ``410 Gone`` (as a status or an ERROR event) relists, and a relist deletes what is gone;
errors back off (:mod:`nmisim.kube.backoff`) and retry. A kind that is not served (404: its CRD is not
installed) has no objects and is listed again every :data:`MISSING_RETRY` seconds.

Bodies are handed to a :class:`Sink` one at a time and not kept: at most one page (500 objects) of raw
JSON is alive at once. What to keep of them (for pods, only the engine's parsed model) is the sink's
choice. The informer itself keeps only the keys it has seen, to tell deletions on a relist.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

import aiohttp

from nmisim.kube.backoff import Backoff
from nmisim.kube.client import APIClient

log = logging.getLogger(__name__)

PAGE: Final = 500
WATCH_TIMEOUT: Final = 300
MISSING_RETRY: Final = 30.0

Key = tuple[str, str]


class Sink(Protocol):
    """Where an informer delivers. ``upsert`` for every object listed or added/modified; ``delete`` for
    every object deleted, or gone at a relist (with the list's resourceVersion); ``synced`` after every
    complete (re)list."""

    async def upsert(self, kind: str, body: Mapping[str, Any]) -> None: ...
    async def delete(self, kind: str, namespace: str, name: str, resource_version: str) -> None: ...
    async def synced(self, kind: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Watched:
    """One collection to watch: its kind (for the sink and logs), API path and optional selectors."""

    kind: str
    path: str
    field_selector: str = ""
    label_selector: str = ""
    #: the controller can do without it: a list refused with 403 (RBAC older than the operator) counts as
    #: a kind not served (nothing listed, synced, retried later) instead of holding up the start
    optional: bool = False


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class Refused(RuntimeError):
    """The API server refused the watch (an HTTP error, or an ERROR event other than 410): relist after a
    backoff, as client-go's reflector does — a kind that stopped being served (404) is then forgotten.
    A connection that failed or ended keeps the resourceVersion and watches again."""


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        return ("", "")
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def version_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""


class Informer:
    """LIST + WATCH of one collection into a sink. :meth:`run` until cancelled."""

    def __init__(self, transport: APIClient, watched: Watched, sink: Sink) -> None:
        self.transport = transport
        self.watched = watched
        self.sink = sink
        self.synced = asyncio.Event()  #: set after the first complete list
        self.lists = 0
        self.keys: set[Key] = set()
        self.forbidden = False

    def _query(self, **params: str) -> str:
        query = dict(params)
        if self.watched.field_selector:
            query["fieldSelector"] = self.watched.field_selector
        if self.watched.label_selector:
            query["labelSelector"] = self.watched.label_selector
        qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return f"{self.watched.path}?{qs}"

    async def list(self) -> str | None:
        """Relist into the sink; the list's resourceVersion, or None when the kind is not served."""
        seen: set[Key] = set()
        token, rv = "", ""
        while True:
            params = {"limit": str(PAGE)}
            if token:
                params["continue"] = token
            resp = await self.transport.get(self._query(**params), 60, kind=self.watched.kind)
            async with resp:
                if resp.status == 404 or (resp.status == 403 and self.watched.optional):
                    if resp.status == 403 and not self.forbidden:
                        log.warning(
                            "%s: list forbidden (403): going on without it; grant list/watch to use it",
                            self.watched.kind,
                        )
                    self.forbidden = resp.status == 403
                    await self._forget_except(set(), rv)
                    return None
                if resp.status == 410 and token:  # the continue token expired: start the list again
                    raise Gone
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    raise RuntimeError(f"list {self.watched.path}: HTTP {resp.status}: {text}")
                page = await resp.json()
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            token = str(meta.get("continue") or "")
            items = page.get("items") or []
            del page
            for item in items:
                if isinstance(item, Mapping):
                    seen.add(key_of(item))
                    self.keys.add(key_of(item))
                    await self.sink.upsert(self.watched.kind, item)
            del items
            if not token:
                break
        await self._forget_except(seen, rv)
        self.lists += 1
        return rv

    async def _forget_except(self, seen: set[Key], rv: str) -> None:
        for key in self.keys - seen:
            await self.sink.delete(self.watched.kind, key[0], key[1], rv)
        self.keys = seen
        await self.sink.synced(self.watched.kind)

    async def watch(self, rv: str) -> str:
        """Stream events from ``rv``; the last resourceVersion when the server ends the watch."""
        path = self._query(
            watch="1", resourceVersion=rv, allowWatchBookmarks="true", timeoutSeconds=str(WATCH_TIMEOUT)
        )
        resp = await self.transport.get(path, WATCH_TIMEOUT + 30, kind=self.watched.kind)
        async with resp:
            if resp.status == 410:
                raise Gone
            if resp.status != 200:
                raise Refused(f"watch {self.watched.path}: HTTP {resp.status}")
            parts: list[bytes] = []
            async for chunk in resp.content.iter_any():
                rest = chunk
                while rest:
                    end = rest.find(b"\n")
                    if end < 0:
                        parts.append(rest)
                        break
                    parts.append(rest[:end])
                    rest = rest[end + 1 :]
                    line = b"".join(parts)
                    parts.clear()
                    if line.strip():
                        rv = await self._event(line, rv)
        return rv

    async def _event(self, line: bytes, rv: str) -> str:
        ev = json.loads(line)
        kind = ev.get("type")
        obj = ev.get("object")
        if not isinstance(obj, Mapping):
            raise ValueError(f"watch {self.watched.path}: an event without an object")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise Refused(f"watch {self.watched.path}: {obj.get('message')}")
        new_rv = version_of(obj) or rv
        if kind in ("ADDED", "MODIFIED"):
            self.keys.add(key_of(obj))
            await self.sink.upsert(self.watched.kind, obj)
        elif kind == "DELETED":
            key = key_of(obj)
            self.keys.discard(key)
            await self.sink.delete(self.watched.kind, key[0], key[1], new_rv)
        return new_rv

    async def run(self) -> None:
        backoff = Backoff(cap=30.0)
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self.list()
                    self.synced.set()
                    if rv is None:
                        await asyncio.sleep(MISSING_RETRY)
                        continue
                rv = await self.watch(rv)
                backoff.reset()
            except Gone:
                log.info("%s: relisting after 410 Gone (the resourceVersion is too old)", self.watched.kind)
                rv = None
            except asyncio.CancelledError:
                raise
            except Refused as exc:
                wait = backoff.next()
                log.warning("%s: %s; relisting in %.1f s", self.watched.kind, exc, wait)
                rv = None
                await asyncio.sleep(wait)
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, OSError) as exc:
                wait = backoff.next()
                log.warning("%s: %s; retrying in %.1f s", self.watched.kind, exc, wait)
                await asyncio.sleep(wait)
