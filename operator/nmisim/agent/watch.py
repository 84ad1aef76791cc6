"""What NMI watches, kept in the engine's :class:`World` as parsed models only.

* Pods on this node only (field selector ``spec.nodeName=<node>``, as NMI's pod informer);
* the four aad-pod-identity kinds in all namespaces. NMI itself sees only the AzureAssignedIdentities
  labelled ``nodename=<node>`` (``--enableScaleFeatures``); the agent watches them all and lets the
  engine hide the others, exactly as ``nmisim request --cluster`` does, so both give one answer;
* ``SimulationConfig/default`` (field selector ``metadata.name=default``); the flags given on the command
  line override its fields (:func:`effective_config`).

Each kind is an informer: a paginated LIST, then a WATCH from its resourceVersion with bookmarks; a
``410 Gone`` (or an ERROR event) relists and drops what disappeared; connection errors back off and retry.
A kind whose CRD is not installed (404) has no objects and is listed again every 30 s. Raw objects are
parsed with the same ``from_k8s`` parsers as files (:func:`nmisim.sources.files.parse_object`) and dropped; an
object the parsers reject is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from nmisim.engine.config import ConfigError, NMIConfig, SimulationConfig
from nmisim.engine.models import (
    KIND_POD,
    ModelError,
)
from nmisim.engine.resources import AAD_KINDS, resource
from nmisim.engine.world import World
from nmisim.sources.files import ClusterError, parse_object

log = logging.getLogger("nmisim.agent.watch")

KIND_CONFIG: Final = "SimulationConfig"
PAGE: Final = 500
WATCH_TIMEOUT: Final = 300
MISSING_RETRY: Final = 30.0


@dataclass(frozen=True, slots=True)
class Source:
    kind: str
    path: str
    selector: str = ""


def sources(node: str) -> list[Source]:
    """What the agent watches (paths from :mod:`nmisim.engine.resources`): the pods on its node, the
    aad-pod-identity kinds everywhere, SimulationConfig/default."""
    return [
        Source(KIND_POD, resource(KIND_POD).path(), f"spec.nodeName={node}"),
        *(Source(kind, resource(kind).path()) for kind in AAD_KINDS),
        Source(KIND_CONFIG, resource(KIND_CONFIG).path(), "metadata.name=default"),
    ]


def effective_config(base: SimulationConfig | None, overrides: Mapping[str, Any]) -> SimulationConfig:
    """``SimulationConfig/default`` (NMI's defaults when absent) with the flags given on the command line
    put over its ``spec.nmi`` fields; raises :class:`ConfigError` for what NMI refuses to start with."""
    cfg = base if base is not None else SimulationConfig.default()
    if not overrides:
        return cfg
    nmi = NMIConfig(**{**cfg.nmi.model_dump(), **overrides})
    if nmi.operation_mode not in ("standard", "managed"):
        raise ConfigError("operationMode", f"operation mode {nmi.operation_mode} not supported")
    if nmi.operation_mode == "managed" and not nmi.force_namespaced:
        raise ConfigError("forceNamespaced", "managed mode not intialized in force namespaced mode")
    return cfg.model_copy(update={"nmi": nmi})


class Store:
    """Applies watch events to the World; knows which keys each kind holds (for relists)."""

    def __init__(self, world: World, overrides: Mapping[str, Any]) -> None:
        self.world = world
        self.overrides = dict(overrides)
        self.keys: dict[str, set[tuple[str, str]]] = {}
        self.base_config: SimulationConfig | None = None

    def apply(self, kind: str, event: str, obj: Mapping[str, Any]) -> None:
        md = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        assert isinstance(md, Mapping)
        key = (str(md.get("namespace") or ""), str(md.get("name") or ""))
        if kind == KIND_CONFIG:
            self._config(None if event == "DELETED" else obj)
            return
        held = self.keys.setdefault(kind, set())
        if event == "DELETED":
            self.world.remove(kind, *key)
            held.discard(key)
            return
        if "kind" not in obj:
            obj = {**obj, "kind": kind}
        try:
            parsed = parse_object(obj)
        except ModelError as exc:
            log.warning("skipping %s %s/%s: %s", kind, key[0], key[1], " ".join(str(exc).split()))
            self.world.remove(kind, *key)
            held.discard(key)
            return
        if parsed is None or isinstance(parsed, SimulationConfig):
            return
        self.world.upsert(parsed)
        held.add(key)

    def replace(self, kind: str, objs: list[Mapping[str, Any]]) -> None:
        """A relist: upsert every object, remove the ones that are gone."""
        if kind == KIND_CONFIG:
            self._config(objs[0] if objs else None)
            return
        before = set(self.keys.get(kind, set()))
        self.keys[kind] = set()
        for obj in objs:
            self.apply(kind, "ADDED", obj)
        for key in before - self.keys[kind]:
            self.world.remove(kind, *key)

    def _config(self, obj: Mapping[str, Any] | None) -> None:
        base: SimulationConfig | None = None
        if obj is not None:
            try:
                base = SimulationConfig.from_k8s(obj)
            except ConfigError as exc:
                log.error("SimulationConfig/default is invalid (%s): NMI's defaults are used", exc)
        try:
            cfg = effective_config(base, self.overrides)
        except ConfigError as exc:
            log.error("SimulationConfig/default with the command-line flags: %s; configuration kept", exc)
            return
        self.base_config = base
        if cfg != self.world.config:
            log.info("configuration: %s", cfg.nmi.model_dump())
        self.world.set_config(cfg)


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the API server: base URL, TLS, and a function giving the Authorization header."""

    server: str
    ssl: ssl.SSLContext | bool
    auth: Callable[[], dict[str, str]]


def connection_from_kubeconfig(kubeconfig: str | None, context: str | None) -> Connection:
    """The API server of the kubeconfig (or the in-cluster service account), via the kubernetes client's
    loaders (which also refresh in-cluster tokens)."""
    from nmisim.sources.cluster import Target, api_client  # noqa: PLC0415 - the kubernetes client loads only here

    api = api_client(Target(kubeconfig=kubeconfig, context=context))
    cfg = api.configuration
    ctx: ssl.SSLContext | bool
    if not cfg.verify_ssl:
        ctx = False
    else:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else True
        if cfg.cert_file and cfg.key_file:
            if ctx is True:
                ctx = ssl.create_default_context()
            assert isinstance(ctx, ssl.SSLContext)
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)

    def auth() -> dict[str, str]:
        # The client's own auth settings (they refresh an in-cluster token): the in-cluster loader keys
        # the token as "BearerToken", a kubeconfig's as "authorization"; both end up as header fields.
        return {
            str(setting["key"]).title(): str(setting["value"])
            for setting in cfg.auth_settings().values()
            if setting.get("in") == "header" and setting.get("value")
        }

    return Connection(str(cfg.host).rstrip("/"), ctx, auth)


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class Informer:
    """LIST + WATCH of one kind into the store."""

    def __init__(self, session: aiohttp.ClientSession, conn: Connection, src: Source, store: Store) -> None:
        self.session = session
        self.conn = conn
        self.src = src
        self.store = store
        self.synced = asyncio.Event()
        self.lists = 0

    def _url(self, **params: str) -> str:
        query = dict(params)
        if self.src.selector:
            query["fieldSelector"] = self.src.selector
        qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return f"{self.conn.server}{self.src.path}?{qs}"

    async def _get(self, url: str, timeout: float) -> aiohttp.ClientResponse:
        return await self.session.get(
            url, headers=self.conn.auth(), ssl=self.conn.ssl, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def list(self) -> str | None:
        """Relist into the store; the list's resourceVersion, or None when the kind is not served."""
        items: list[Mapping[str, Any]] = []
        token = ""
        rv = ""
        while True:
            params = {"limit": str(PAGE)}
            if token:
                params["continue"] = token
            resp = await self._get(self._url(**params), 60)
            async with resp:
                if resp.status == 404:
                    self.store.replace(self.src.kind, [])
                    return None
                if resp.status != 200:
                    raise RuntimeError(
                        f"list {self.src.path}: HTTP {resp.status}: {(await resp.text())[:200]}"
                    )
                page = await resp.json()
            items += [i for i in page.get("items") or [] if isinstance(i, Mapping)]
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            rv = meta.get("resourceVersion") or rv
            if not token:
                break
        self.store.replace(self.src.kind, items)
        self.lists += 1
        return rv

    async def watch(self, rv: str) -> str:
        """Stream events from ``rv``; returns the last resourceVersion when the server ends the watch."""
        url = self._url(
            watch="1", resourceVersion=rv, allowWatchBookmarks="true", timeoutSeconds=str(WATCH_TIMEOUT)
        )
        resp = await self._get(url, WATCH_TIMEOUT + 30)
        async with resp:
            if resp.status == 410:
                raise Gone
            if resp.status != 200:
                raise RuntimeError(f"watch {self.src.path}: HTTP {resp.status}")
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        rv = self._event(line, rv)
        return rv

    def _event(self, line: bytes, rv: str) -> str:
        ev = json.loads(line)
        kind = ev.get("type")
        obj = ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise RuntimeError(f"watch {self.src.path}: {obj.get('message')}")
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.store.apply(self.src.kind, kind, obj)
        return new_rv

    async def run(self) -> None:
        delay = 0.5
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
                delay = 0.5
            except Gone:
                rv = None
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, OSError) as exc:
                log.warning("%s: %s; retrying in %.1f s", self.src.kind, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


class ClusterWatch:
    """All informers of one agent; :meth:`start` returns once each has listed once."""

    def __init__(self, conn: Connection, node: str, store: Store) -> None:
        self.conn = conn
        self.node = node
        self.store = store
        self.session: aiohttp.ClientSession | None = None
        self.informers: list[Informer] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 120.0) -> None:
        self.session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        for src in sources(self.node):
            inf = Informer(self.session, self.conn, src, self.store)
            self.informers.append(inf)
            self.tasks.append(asyncio.get_running_loop().create_task(inf.run()))
        try:
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.informers)), timeout)
        except TimeoutError:
            await self.close()
            raise ClusterError(
                f"the API server at {self.conn.server} did not answer every list in {timeout} s"
            ) from None

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.session is not None:
            await self.session.close()
