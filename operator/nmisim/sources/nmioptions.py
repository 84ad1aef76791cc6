"""NMI's flags that are simulation settings, as options of ``serve``, ``evaluate`` and ``request``: one
definition (:data:`nmisim.engine.nmiflags.CONFIG_FLAGS`), NMI's names, Go's boolean syntax."""

from __future__ import annotations

import argparse
from typing import Any

from nmisim.engine.nmiflags import CONFIG_FLAGS, go_parse_bool


def go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    value = go_parse_bool(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_nmi_config_flags(group: argparse._ActionsContainer) -> None:
    """``--forceNamespaced``, ``--operation-mode``, … (default None: not given). A boolean given bare is
    true; ``--flag=false`` (or ``--flag false``) sets it false."""
    for flag in CONFIG_FLAGS:
        kw: dict[str, Any]
        if flag.kind == "bool":
            kw = {"type": go_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
        elif flag.kind == "int":
            kw = {"type": non_negative, "metavar": "N"}
        else:
            kw = {"metavar": "MODE" if flag.name == "operation-mode" else "NS"}
        group.add_argument(f"--{flag.name}", help=flag.help, **kw)


def add_nmi_options(p: argparse.ArgumentParser) -> None:
    """NMI's settings for ``evaluate``/``request``: its flags by NMI's names, and the chart's values."""
    g = p.add_argument_group(
        "NMI's settings",
        "Lowest first: NMI's defaults, the SimulationConfig, an NMI DaemonSet in the input, --nmi-values, "
        "these flags (docs/cli.md: NMI's settings from manifests, values and flags).",
    )
    add_nmi_config_flags(g)
    g.add_argument(
        "--nmi-values",
        action="append",
        default=[],
        metavar="FILE",
        help="the aad-pod-identity Helm chart's values file (repeatable, merged as helm -f): NMI's flags "
        "and the exceptions and identities the chart installs",
    )
    g.add_argument(
        "--nmi-release-namespace",
        default="default",
        metavar="NS",
        help="the chart's release namespace (helm -n), where its mic exception and identities go "
        "(default: default)",
    )
