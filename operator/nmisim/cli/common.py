"""Options and helpers shared by the offline subcommands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nmisim.cli.output import FORMATS
from nmisim.engine.config import SimulationConfig, vm_identity
from nmisim.engine.models import Model
from nmisim.engine.world import World
from nmisim.sources.files import (
    ClusterError,
    Loaded,
    LoadError,
    kustomize,
    load_config,
    load_files,
    load_text,
)
from nmisim.sources.nmiconfig import nmi_settings

if TYPE_CHECKING:
    from nmisim.sources.cluster import Target


class UsageError(Exception):
    """Bad input: printed as ``nmisim: error: <message>``, exit 2."""


def add_input_options(
    p: argparse.ArgumentParser, *, cluster: bool = False, formats: tuple[str, ...] = FORMATS
) -> None:
    """``-f``/``--config``/``-o``; with ``cluster``, also ``--cluster`` and its options (``-f`` optional)."""
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=not cluster,
        default=[] if cluster else None,
        metavar="FILE",
        help="YAML/JSON file or directory with Kubernetes objects (repeatable; '-' reads stdin; a directory "
        "gives its .yaml, .yml and .json files)"
        + ("; with --cluster, its objects add to (and replace) the live ones" if cluster else ""),
    )
    p.add_argument(
        "-R", "--recursive", action="store_true", help="with -f DIR: read its subdirectories too (as kubectl)"
    )
    p.add_argument(
        "-k",
        "--kustomize",
        dest="kustomize",
        action="append",
        default=[],
        metavar="DIR",
        help="objects of 'kubectl kustomize DIR' (repeatable; needs kubectl, which make install provides)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fields the aad-pod-identity CRDs' schemas do not know are errors (e.g. spec.selectr)",
    )
    if cluster:
        p.add_argument(
            "--cluster",
            action="store_true",
            help="read Pods, the aad-pod-identity objects and SimulationConfig/default from the cluster of "
            "the current kubeconfig",
        )
        p.add_argument(
            "-n",
            "--namespace",
            metavar="NS",
            help="with --cluster: read Pods and exceptions of this namespace only (default: all namespaces)",
        )
        add_kubeconfig_options(p)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="SimulationConfig YAML (apiVersion nmisim.dev/v1alpha1); default: NMI's defaults, or a "
        "SimulationConfig found among the -f files",
    )
    p.add_argument(
        "--vm-identity",
        dest="vm_identities",
        action="append",
        default=[],
        metavar="ID",
        help="add a user-assigned identity (client ID, resource ID, or 'aks' for the AKS kubelet identity) "
        "to every VM in the SimulationConfig's spec.imds (repeatable)",
    )
    add_output_option(p, formats)


def add_output_option(p: argparse.ArgumentParser, formats: tuple[str, ...] = FORMATS) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=formats,
        default="table",
        help=f"output format: {', '.join(formats)} (default: table)",
    )


def add_kubeconfig_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current context)")


def target_of(args: argparse.Namespace) -> Target:
    from nmisim.sources.cluster import Target  # noqa: PLC0415 - the kubernetes client loads only for live commands

    return Target(kubeconfig=args.kubeconfig, context=args.context)


def cluster_failure(exc: ClusterError) -> int:
    """Report a cluster that cannot be read as one line on stderr; the exit code (1)."""
    print(f"nmisim: error: {exc}", file=sys.stderr)
    return 1


def warn(message: str) -> None:
    print(f"nmisim: warning: {message}", file=sys.stderr)


def layer_nmi_settings(
    config: SimulationConfig | None, loaded: Loaded, args: argparse.Namespace, *, config_source: str | None
) -> tuple[SimulationConfig | None, list[Model]]:
    """NMI's settings from an NMI DaemonSet among what ``loaded`` read, ``--nmi-values`` and NMI's flags,
    layered on ``config`` (sources/nmiconfig.py); its warnings printed. Returns the config and the objects
    the chart installs, which go before the input's (input or cluster objects replace them)."""
    nmi = nmi_settings(
        config, [obj for _, obj in loaded.raw], args, config_source=config_source, stdin=sys.stdin
    )
    for line in nmi.warnings:
        warn(line)
    return nmi.config, nmi.objects


@dataclass(slots=True)
class Input:
    world: World
    loaded: Loaded


def build_world(args: argparse.Namespace) -> World:
    """:func:`build_input`'s World (the first bad object is an error)."""
    return build_input(args).world


def build_input(args: argparse.Namespace, *, keep_going: bool = False) -> Input:
    """Load the live cluster (``--cluster``), then ``-f`` files, ``-k`` directories and ``--config``, into a
    World; the loaded objects' origins, workloads and (``keep_going``) errors come with it.

    Files add to (and replace) live objects. The config is ``--config``, else the last SimulationConfig among
    the files, else the cluster's ``SimulationConfig/default``, else NMI's defaults. Raises LoadError (exit 2)
    on bad input and ``nmisim.sources.cluster.ClusterError`` (exit 1) when the cluster cannot be read.
    """
    files: list[str] = args.files or []
    kustomized: list[str] = getattr(args, "kustomize", None) or []
    live = bool(getattr(args, "cluster", False))
    if not files and not kustomized and not live:
        raise UsageError("no input: pass -f FILE, -k DIR and/or --cluster")
    if not live and (getattr(args, "namespace", None) or getattr(args, "kubeconfig", None)):
        raise UsageError("-n/--namespace and --kubeconfig go with --cluster")
    if not live and getattr(args, "context", None):
        raise UsageError("--context goes with --cluster")
    if files.count("-") > 1:
        raise LoadError("-f -: stdin can be read only once")
    if args.config == "-" and "-" in files:
        raise LoadError("--config -: stdin is already used by -f -")
    if "-" in (getattr(args, "nmi_values", None) or []) and (args.config == "-" or "-" in files):
        raise LoadError("--nmi-values -: stdin is already used")  # NMI's settings (sources/nmiconfig.py)
    objects: list[Model] = []
    config: SimulationConfig | None = None
    if live:
        from nmisim.sources.cluster import load_live  # noqa: PLC0415

        cluster = load_live(target_of(args), args.namespace, warn)
        objects.extend(cluster.objects)
        config = cluster.config
    strict = bool(getattr(args, "strict", False))
    loaded = load_files(
        files,
        sys.stdin,
        recursive=bool(getattr(args, "recursive", False)),
        keep_going=keep_going,
        strict=strict,
    )
    for directory in kustomized:
        load_text(
            kustomize(directory), f"kustomize {directory}", loaded, keep_going=keep_going, strict=strict
        )
    objects.extend(loaded.objects)
    if args.config:
        config = load_config(args.config, sys.stdin)
    elif loaded.configs:
        config = loaded.configs[-1]
    # NMI's settings from an NMI DaemonSet in the input, --nmi-values and NMI's flags (sources/nmiconfig.py)
    where = f"--config {args.config}" if args.config else "-f" if loaded.configs else "the cluster"
    named = f"SimulationConfig/{config.name} ({where})" if config is not None else None
    config, objects[:0] = layer_nmi_settings(config, loaded, args, config_source=named)
    if getattr(args, "vm_identities", None):
        try:
            extra = [vm_identity(v) for v in args.vm_identities]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        config = config or SimulationConfig.default()
        if config.managed and not config.imds.describes_vms:
            warn(
                "--vm-identity describes the VMs: in managed mode spec.imds is then the truth, so list the "
                "identities your bindings use too"
            )
        config = config.with_vm_identities(extra)
    world = World(config)
    for obj in objects:
        world.upsert(obj)
    return Input(world, loaded)
