"""What NMI watches, kept in the engine's :class:`World` as parsed models only.

* Pods on this node only (field selector ``spec.nodeName=<node>``, as NMI's pod informer);
* the four aad-pod-identity kinds in all namespaces. NMI itself sees only the AzureAssignedIdentities
  labelled ``nodename=<node>`` (``--enableScaleFeatures``); the agent watches them all and lets the
  engine hide the others, exactly as ``nmisim request --cluster`` does, so both give one answer;
* ``SimulationConfig/default`` (field selector ``metadata.name=default``); the flags given on the command
  line override its fields (:func:`effective_config`).

Each kind is an informer (:mod:`nmisim.kube.informer`, the operator's too): a paginated LIST, then a
WATCH with bookmarks, a relist on ``410 Gone`` that drops what disappeared, backoff on errors. Raw objects
are parsed with the same ``from_k8s`` parsers as files (:func:`nmisim.engine.resources.parse`) and
dropped; an object the parsers reject is skipped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from nmisim.engine.config import CONFIG_NAME, ConfigError, NMIConfig, SimulationConfig
from nmisim.engine.models import (
    KIND_CONFIG,
    KIND_POD,
    ModelError,
)
from nmisim.engine.resources import AAD_KINDS, parse, resource
from nmisim.engine.world import World
from nmisim.kube.client import APIClient, Credentials, StaticCredentials
from nmisim.kube.informer import Informer, Watched
from nmisim.sources.files import ClusterError

log = logging.getLogger("nmisim.agent.watch")

__all__ = [
    "ClusterWatch",
    "StaticCredentials",
    "WorldSink",
    "credentials_from_kubeconfig",
    "effective_config",
    "sources",
]


def sources(node: str) -> list[Watched]:
    """What the agent watches (paths from :mod:`nmisim.engine.resources`): the pods on its node, the
    aad-pod-identity kinds everywhere, SimulationConfig/default."""
    return [
        Watched(KIND_POD, resource(KIND_POD).path(), f"spec.nodeName={node}"),
        *(Watched(kind, resource(kind).path()) for kind in AAD_KINDS),
        Watched(KIND_CONFIG, resource(KIND_CONFIG).path(), f"metadata.name={CONFIG_NAME}"),
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


class WorldSink:
    """Watch events into the World: the informers' sink (:class:`nmisim.kube.informer.Sink`). A relist
    needs nothing here: the informer deletes what a relist no longer has (``kube/informer.py``)."""

    def __init__(self, world: World, overrides: Mapping[str, Any]) -> None:
        self.world = world
        self.overrides = dict(overrides)
        self.base_config: SimulationConfig | None = None

    async def upsert(self, kind: str, body: Mapping[str, Any]) -> None:
        if kind == KIND_CONFIG:
            self._config(body)
            return
        try:
            parsed = parse(body, kind)
        except ModelError as exc:
            md = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
            assert isinstance(md, Mapping)
            ns, name = str(md.get("namespace") or ""), str(md.get("name") or "")
            log.warning("skipping %s %s/%s: %s", kind, ns, name, " ".join(str(exc).split()))
            self.world.remove(kind, ns, name)  # what it said before no longer holds
            return
        if parsed is not None and not isinstance(parsed, SimulationConfig):
            self.world.upsert(parsed)

    async def delete(self, kind: str, namespace: str, name: str, resource_version: str) -> None:
        if kind == KIND_CONFIG:
            self._config(None)
        else:
            self.world.remove(kind, namespace, name)

    async def synced(self, kind: str) -> None:
        return None

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


def credentials_from_kubeconfig(kubeconfig: str | None, context: str | None) -> Credentials:
    """The API server of the kubeconfig (or the in-cluster service account), via the kubernetes client's
    loaders (which read them again on a 401, and re-read an in-cluster token)."""
    from nmisim.sources.cluster import Target  # noqa: PLC0415
    from nmisim.sources.credentials import ClientCredentials  # noqa: PLC0415 - the kubernetes client loads only here

    return ClientCredentials(Target(kubeconfig=kubeconfig, context=context))


class ClusterWatch:
    """All informers of one agent; :meth:`start` returns once each has listed once."""

    def __init__(self, credentials: Credentials, node: str, store: WorldSink) -> None:
        self.node = node
        self.store = store
        self.transport = APIClient(credentials)
        self.informers: list[Informer] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 120.0) -> None:
        for src in sources(self.node):
            inf = Informer(self.transport, src, self.store)
            self.informers.append(inf)
            self.tasks.append(asyncio.get_running_loop().create_task(inf.run()))
        try:
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.informers)), timeout)
        except TimeoutError:
            await self.close()
            raise ClusterError(
                f"the API server at {self.transport.server} did not answer every list in {timeout} s"
            ) from None

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.transport.close()
