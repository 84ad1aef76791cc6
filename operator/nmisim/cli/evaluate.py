"""``nmisim evaluate``: one result per pod in the input (product.md §4)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nmisim.cli.common import add_input_options, build_world
from nmisim.cli.output import evaluation_document, evaluation_table, render_data


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="print what NMI would do with every pod in the input",
        description="Read Kubernetes objects and print one verdict per pod: intercepted, exempt, bypass "
        "or inactive, with the default token request's outcome and findings. Objects come from files (-f), "
        "the live cluster (--cluster), or both.",
    )
    add_input_options(p, cluster=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    world = build_world(args)
    results = world.evaluate_all()
    objects = world.object_findings()
    if args.output == "table":
        sys.stdout.write(evaluation_table(results, objects))
    else:
        sys.stdout.write(render_data(evaluation_document(results, objects), args.output))
    return 0
