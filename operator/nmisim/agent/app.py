"""The node agent's lifecycle, in NMI's order (``cmd/nmi/main.go``, ``server.go`` ``Run``).

Start: the kubenet check, the objects (a live watch, or ``-f`` files), the listeners (NMI's, the probe,
Prometheus, and optionally the IMDS model for hostNetwork callers), then the iptables rules; ``/healthz``
says ``Active`` once the first sync is done. Every ``--ipt-update-interval-sec`` the rules are checked and
repaired; an iptables error is fatal (exit 1). SIGTERM/SIGINT: the rules are removed and
``route_localnet`` restored, the listeners keep answering for ``--shutdown-delay-sec`` (NMI sleeps 10 s),
then exit 0, or 1 when the cleanup failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nmisim.agent.health import HealthHandler, MetricsHandler
from nmisim.agent.hostimds import HostImdsHandler
from nmisim.agent.interception import (
    Conntrack,
    Iptables,
    IptablesError,
    RouteLocalnet,
    RuleManager,
    Rules,
)
from nmisim.agent.metrics import Metrics
from nmisim.agent.nmi import NmiHandler
from nmisim.agent.server import Handler, HttpServer
from nmisim.agent.watch import ClusterWatch, WorldSink, credentials_from_kubeconfig, effective_config
from nmisim.engine.config import NMI_VERSION, ConfigError
from nmisim.engine.world import World
from nmisim.sources.files import ClusterError, LoadError, load_config, load_files

log = logging.getLogger("nmisim.agent")

KUBENET_FLAG: Final = "--network-plugin=kubenet"
KUBENET_FATAL: Final = (
    "AAD Pod Identity is not supported for Kubenet. Review "
    "https://azure.github.io/aad-pod-identity/docs/configure/aad_pod_identity_on_kubenet/ for more details."
)


class Fatal(Exception):
    """NMI would exit (klog.Fatalf): one line, exit 1."""


@dataclass(slots=True)
class Options:
    node: str
    nmi_listen_address: str = "127.0.0.1"
    nmi_port: int = 2579
    metadata_ip: str = "169.254.169.254"
    metadata_port: int = 80
    ipt_update_interval_sec: float = 60.0
    http_probe_port: int = 8080
    probe_listen_address: str = ""
    prometheus_port: int = 9090
    prometheus_listen_address: str = ""
    #: NMIConfig fields set by flags (they override SimulationConfig/default)
    overrides: dict[str, Any] = field(default_factory=dict)
    enable_conntrack_deletion: bool = False
    allow_network_plugin_kubenet: bool = False
    kubelet_config: str = "/etc/default/kubelet"
    iptables: bool = True
    iptables_argv: Sequence[str] = ("iptables",)
    route_localnet: Sequence[str] = ()
    host_imds_address: str = ""
    #: ``--nmi-removed``: the intercepted port is the node's IMDS model, not NMI
    nmi_removed: bool = False
    files: Sequence[str] = ()
    config_file: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    shutdown_delay_sec: float = 10.0


def check_kubenet(opts: Options) -> None:
    """``utils.IsKubenetCNI`` at start, unless ``--allow-network-plugin-kubenet``."""
    if opts.allow_network_plugin_kubenet:
        return
    try:
        text = Path(opts.kubelet_config).read_text(errors="replace")
    except OSError as exc:
        raise Fatal(f"failed to check if CNI plugin is kubenet, error: {exc}") from None
    if KUBENET_FLAG in text:
        raise Fatal(KUBENET_FATAL)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise Fatal(f"{address}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class Agent:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.world = World()
        self.store = WorldSink(self.world, opts.overrides)
        self.metrics = Metrics(self.world.counts)
        self.active = False
        self.watch: ClusterWatch | None = None
        self.servers: list[HttpServer] = []
        self.rules: RuleManager | None = None
        self.localnet = RouteLocalnet(opts.route_localnet)
        self.stop = asyncio.Event()
        self.fatal: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------- objects
    def load_static(self) -> None:
        try:
            loaded = load_files(list(self.opts.files))
            base = load_config(self.opts.config_file) if self.opts.config_file else None
        except LoadError as exc:
            raise Fatal(str(exc)) from None
        if base is None and loaded.configs:
            base = loaded.configs[-1]
        for obj in loaded.objects:
            self.world.upsert(obj)
        try:
            self.world.set_config(effective_config(base, self.opts.overrides))
        except ConfigError as exc:
            raise Fatal(exc.problem) from None

    async def load_cluster(self) -> None:
        try:
            conn = credentials_from_kubeconfig(self.opts.kubeconfig, self.opts.context)
        except ClusterError as exc:
            raise Fatal(str(exc)) from None
        self.watch = ClusterWatch(conn, self.opts.node, self.store)
        try:
            await self.watch.start()
        except ClusterError as exc:
            raise Fatal(str(exc)) from None
        try:
            effective_config(self.store.base_config, self.opts.overrides)
        except ConfigError as exc:
            raise Fatal(exc.problem) from None

    # ----------------------------------------------------------- servers
    async def start_servers(self) -> None:
        o = self.opts
        intercepted: Handler = (
            HostImdsHandler(self.world, o.node)
            if o.nmi_removed
            else NmiHandler(self.world, o.node, self.metrics)
        )
        handlers: list[tuple[Handler, str, int, str]] = [
            (intercepted, o.nmi_listen_address, o.nmi_port, "nmi"),
            (HealthHandler(lambda: self.active), o.probe_listen_address, o.http_probe_port, "probe"),
            (MetricsHandler(self.metrics), o.prometheus_listen_address, o.prometheus_port, "metrics"),
        ]
        if o.host_imds_address:
            host, port = split_address(o.host_imds_address)
            handlers.append((HostImdsHandler(self.world, o.node), host, port, "host-imds"))
        for handler, host, port, name in handlers:
            if port == 0 and name in ("probe", "metrics"):
                continue
            server = HttpServer(handler, host, port, name)
            try:
                await server.start()
            except OSError as exc:
                raise Fatal(f"{name}: cannot listen on {host or '0.0.0.0'}:{port}: {exc.strerror}") from None
            self.servers.append(server)

    def server(self, name: str) -> HttpServer:
        return next(s for s in self.servers if s.name == name)

    # ----------------------------------------------------------- rules
    async def start_rules(self) -> None:
        o = self.opts
        if not o.iptables:
            log.warning("--ipt-disabled: no iptables rules; only direct connections reach the agent")
            self.active = True
            return
        await self.localnet.enable()
        self.rules = RuleManager(Iptables(o.iptables_argv), Rules(o.metadata_ip, o.metadata_port, o.nmi_port))
        await self.rules.sync()
        self.active = True
        log.info("iptables rules in place: chain aad-metadata, jump from PREROUTING")
        if o.enable_conntrack_deletion:
            await Conntrack().delete(self.rules.rules)
        self._tasks.append(asyncio.get_running_loop().create_task(self._sync_loop()))

    async def _sync_loop(self) -> None:
        assert self.rules is not None
        while True:
            await asyncio.sleep(self.opts.ipt_update_interval_sec)
            try:
                await self.rules.sync()
            except IptablesError as exc:
                self.fatal = str(exc)
                self.stop.set()
                return

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if not self.opts.node:
            raise Fatal("--node (or the environment variable NODE_NAME) is required")
        check_kubenet(self.opts)
        if self.opts.files or self.opts.config_file:
            self.load_static()
        else:
            await self.load_cluster()
        await self.start_servers()
        try:
            await self.start_rules()
        except (IptablesError, OSError) as exc:
            self.fatal = str(exc)
            self.stop.set()

    async def shutdown(self) -> bool:
        ok = True
        for t in self._tasks:
            t.cancel()
        if self.rules is not None:
            try:
                ok = await self.rules.cleanup() and ok
            except IptablesError as exc:
                log.error("removing the iptables rules: %s", exc)
                ok = False
            log.info("iptables rules removed" if ok else "iptables rules NOT all removed")
        ok = await self.localnet.restore() and ok
        if self.opts.shutdown_delay_sec > 0:
            await asyncio.sleep(self.opts.shutdown_delay_sec)
        for server in self.servers:
            await server.close()
        if self.watch is not None:
            await self.watch.close()
        return ok

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            try:
                await self.start()
            except Fatal as exc:
                log.error("%s", exc)
                await self.shutdown_quietly()
                return 1
            if self.opts.nmi_removed:
                log.info(
                    "nmisim serve: NMI removed; the node's IMDS model answers every pod on node %s",
                    self.opts.node,
                )
            else:
                log.info("nmisim serve: NMI v%s simulated on node %s", NMI_VERSION, self.opts.node)
            await self.stop.wait()
            if self.fatal:
                log.error("%s", self.fatal)
            else:
                log.info("received a termination signal: removing the iptables rules")
            ok = await self.shutdown()
            return 1 if (self.fatal or not ok) else 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

    async def shutdown_quietly(self) -> None:
        self.opts.shutdown_delay_sec = 0
        with contextlib.suppress(Exception):
            await self.shutdown()


def serve(opts: Options) -> int:
    return asyncio.run(Agent(opts).run())
