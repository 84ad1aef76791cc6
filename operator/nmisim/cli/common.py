"""Options and helpers shared by the offline subcommands."""

from __future__ import annotations

import argparse
import sys

from nmisim.cli.output import FORMATS
from nmisim.engine.world import World
from nmisim.kube import LoadError, load_config, load_files


class UsageError(Exception):
    """Bad input: printed as ``nmisim: error: <message>``, exit 2."""


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML/JSON file with Kubernetes objects (repeatable; '-' reads stdin)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="SimulationConfig YAML (apiVersion nmisim.dev/v1alpha1); default: NMI's defaults, or a "
        "SimulationConfig found among the -f files",
    )
    add_output_option(p)


def add_output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default: table)")


def build_world(args: argparse.Namespace) -> World:
    """Load ``-f`` files and ``--config`` into a World; raises LoadError (exit 2) on bad input."""
    files: list[str] = args.files
    if files.count("-") > 1:
        raise LoadError("-f -: stdin can be read only once")
    if args.config == "-" and "-" in files:
        raise LoadError("--config -: stdin is already used by -f -")
    loaded = load_files(files, sys.stdin)
    if args.config:
        config = load_config(args.config, sys.stdin)
    elif loaded.configs:
        config = loaded.configs[-1]
    else:
        config = None
    world = World(config)
    for obj in loaded.objects:
        world.upsert(obj)
    return world
