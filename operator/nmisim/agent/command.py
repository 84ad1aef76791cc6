"""``nmisim serve``: the node agent (NMI v1.8.17 on a real node, answered by the engine).

Flags are NMI's (``cmd/nmi/main.go``; nmi-semantics §4), with its names and defaults; Go's flag syntax
works (``--flag=value``, ``--flag value``, a bare boolean ``--flag``). A flag that corresponds to a
``SimulationConfig`` field overrides it; what is not given on the command line comes from
``SimulationConfig/default`` (re-read when it changes), else NMI's defaults. nmisim's own flags are
listed separately in ``--help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from nmisim import __version__
from nmisim.engine.config import NMI_VERSION
from nmisim.sources.nmiconfig import flag_settings
from nmisim.sources.nmioptions import add_nmi_config_flags, go_bool


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="the node agent: intercept pods' IMDS requests as NMI does and answer them as NMI would",
        description="Run NMI v1.8.17 on this node: its iptables interception, pod lookup by source IP, "
        "routes, status codes, bodies, headers and waits, with simulated tokens and a simulated IMDS. "
        "Answers equal `nmisim request --cluster --pod NS/NAME` for the same objects.",
    )
    nmi = p.add_argument_group("NMI's flags (names and defaults as NMI v1.8.17)")
    b: dict[str, Any] = {"type": go_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    nmi.add_argument("--version", action="store_true", help="print the version and exit")
    nmi.add_argument("--nmi-listen-address", default="127.0.0.1", help="NMI's listen address (127.0.0.1)")
    nmi.add_argument("--nmi-port", type=int, default=2579, help="NMI's port, the DNAT target (2579)")
    nmi.add_argument("--metadata-ip", default="169.254.169.254", help="IMDS address intercepted")
    nmi.add_argument("--metadata-port", type=int, default=80, help="IMDS port intercepted (80)")
    nmi.add_argument(
        "--node", default=os.environ.get("NODE_NAME", ""), help="this node's name (default: $NODE_NAME)"
    )
    nmi.add_argument("--ipt-update-interval-sec", type=float, default=60, help="rule check interval (60)")
    nmi.add_argument("--http-probe-port", type=int, default=8080, help="/healthz port (8080)")
    nmi.add_argument("--enableProfile", **b, default=False, help="pprof: not simulated (accepted)")
    nmi.add_argument("--enableScaleFeatures", **b, default=True, help="(true; false is not simulated)")
    nmi.add_argument("--prometheus-port", type=int, default=9090, help="/metrics port (9090)")
    nmi.add_argument("--allow-network-plugin-kubenet", **b, default=False, help="skip the kubenet check")
    nmi.add_argument("--kubelet-config", default="/etc/default/kubelet", help="read for the kubenet check")
    nmi.add_argument("--enable-conntrack-deletion", **b, default=False, help="(false)")
    nmi.add_argument("--custom-user-agent", default="", help="accepted (the agent calls no IMDS)")
    nmi.add_argument("--log-format", choices=("text", "json"), default="text", help="(text)")
    # the simulation settings: one definition with evaluate/request (and env FORCENAMESPACED=true)
    add_nmi_config_flags(nmi)
    nmi.add_argument("-v", "--v", dest="verbosity", type=int, default=0, help="klog verbosity")
    own = p.add_argument_group("nmisim's own flags")
    own.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="serve these objects (no cluster watch); with --config or a SimulationConfig among them",
    )
    own.add_argument("--config", metavar="FILE", help="SimulationConfig file (with -f)")
    own.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: $KUBECONFIG, in-cluster)")
    own.add_argument("--context", metavar="NAME", help="kubeconfig context")
    own.add_argument(
        "--ipt-disabled", action="store_true", help="install no iptables rules (direct connections only)"
    )
    own.add_argument(
        "--iptables-command",
        default="iptables",
        metavar="CMD",
        help="iptables binary, e.g. iptables-legacy (default iptables)",
    )
    own.add_argument(
        "--route-localnet",
        action="append",
        default=[],
        metavar="IFACE",
        help="set net.ipv4.conf.IFACE.route_localnet=1 (restored on exit); repeatable; none by default, "
        "as NMI (the node must route DNATed packets to 127.0.0.1)",
    )
    own.add_argument(
        "--host-imds-address",
        default="",
        metavar="HOST:PORT",
        help="also serve the IMDS model here for hostNetwork callers (whose traffic NMI never sees): "
        "point SDKs at it with AZURE_POD_IDENTITY_AUTHORITY_HOST=http://HOST:PORT",
    )
    own.add_argument(
        "--nmi-removed",
        action="store_true",
        help="NMI is gone (the migration's 'removed' phase, nmisim request --after): the intercepted "
        "address answers every pod with the node's IMDS model (its VM's identities), as the real IMDS "
        "would, so no pod ever reaches the real one; NMI's routes, waits and bindings are off",
    )
    own.add_argument("--probe-listen-address", default="", help="address of /healthz (all, as NMI)")
    own.add_argument("--prometheus-listen-address", default="", help="address of /metrics (all, as NMI)")
    own.add_argument(
        "--shutdown-delay-sec", type=float, default=10, help="serve this long after removing rules (10)"
    )
    p.set_defaults(func=run)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    out = flag_settings(args)
    if "operation_mode" in out:
        out["operation_mode"] = out["operation_mode"].lower()
    if os.environ.get("FORCENAMESPACED") == "true":
        out["force_namespaced"] = True
    return out


class KlogFormatter(logging.Formatter):
    """klog's header: ``Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg``. The agent writes one line per
    request, as NMI does: the date part is formatted once per second."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%m%d %H:%M:%S", time.localtime(second))
        micros = int((record.created % 1) * 1e6)
        level = record.levelname[:1] if record.levelname != "CRITICAL" else "F"
        head = f"{level}{self._stamp}.{micros:06d} {record.process:>7} "
        return f"{head}{record.filename}:{record.lineno}] {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "caller": f"{record.filename}:{record.lineno}",
                "msg": record.getMessage(),
                "v": 0,
                **({"level": "error"} if record.levelno >= logging.ERROR else {}),
            }
        )


def setup_logging(fmt: str, verbosity: int) -> None:
    # Neither format prints the thread or process name: skip finding them for every record.
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KlogFormatter())
    root = logging.getLogger("nmisim")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    from nmisim.agent.app import Options, serve  # noqa: PLC0415 - asyncio server loads only for serve

    if args.version:
        print(f"nmisim {__version__} (serve: NMI v{NMI_VERSION} simulated)")
        return 0
    setup_logging(args.log_format, args.verbosity)
    log = logging.getLogger("nmisim.agent")
    if args.enableProfile:
        log.warning("--enableProfile: pprof is not simulated")
    if not args.enableScaleFeatures:
        log.warning("--enableScaleFeatures=false is not simulated: NMI on a node sees its own node's objects")
    if args.config and not args.files:
        args.files = []
    opts = Options(
        node=args.node,
        nmi_listen_address=args.nmi_listen_address,
        nmi_port=args.nmi_port,
        metadata_ip=args.metadata_ip,
        metadata_port=args.metadata_port,
        ipt_update_interval_sec=args.ipt_update_interval_sec,
        http_probe_port=args.http_probe_port,
        probe_listen_address=args.probe_listen_address,
        prometheus_port=args.prometheus_port,
        prometheus_listen_address=args.prometheus_listen_address,
        overrides=overrides_of(args),
        enable_conntrack_deletion=bool(args.enable_conntrack_deletion),
        allow_network_plugin_kubenet=bool(args.allow_network_plugin_kubenet),
        kubelet_config=args.kubelet_config,
        iptables=not args.ipt_disabled,
        iptables_argv=tuple(args.iptables_command.split()),
        route_localnet=tuple(args.route_localnet),
        host_imds_address=args.host_imds_address,
        nmi_removed=bool(args.nmi_removed),
        files=tuple(args.files),
        config_file=args.config,
        kubeconfig=args.kubeconfig,
        context=args.context,
        shutdown_delay_sec=args.shutdown_delay_sec,
    )
    return serve(opts)
