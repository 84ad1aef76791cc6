"""``nmisim diff BASE HEAD``: what changes for each pod between two sets of inputs (issue 19 item 8).

BASE and HEAD are each a file or a directory; ``-f`` files are common to both sides; ``--config A --config
B`` compares two SimulationConfigs (over the ``-f`` inputs alone, or over BASE and HEAD). The comparison is
the engine's (:mod:`nmisim.engine.diff`); exit 3 (``EXIT_GATE``) when something differs, or with
``--fail-on`` only when HEAD introduces a finding the gate names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nmisim.cli.common import UsageError, add_output_option
from nmisim.cli.main import EXIT_GATE
from nmisim.cli.output import API_VERSION, render_data, table
from nmisim.engine.config import SimulationConfig
from nmisim.engine.diff import (
    CHANGE_ADDED,
    CHANGE_CHANGED,
    CHANGE_REMOVED,
    Gate,
    PodDiff,
    gate_failures,
    parse_gate,
)
from nmisim.engine.diff import diff_results as compare
from nmisim.engine.http import json_number
from nmisim.engine.verdict import PodResult
from nmisim.engine.world import World
from nmisim.sources.files import LoadError, load_config, load_files


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "diff",
        help="show the pods whose verdict, token outcome or findings differ between two inputs",
        description="Evaluate BASE and HEAD (each a file or a directory of *.yaml/*.yml/*.json files; "
        "workloads become their pods, as in evaluate) and "
        "print only the pods whose verdict, identity, token outcome (status, error, wait) or findings "
        "differ. Or compare two SimulationConfigs over the same inputs: -f FILE --config A --config B. "
        "Exit 3 when something differs (with --fail-on: when HEAD introduces such a finding).",
    )
    p.add_argument("base", nargs="?", metavar="BASE", help="the inputs before: a file or a directory")
    p.add_argument("head", nargs="?", metavar="HEAD", help="the inputs after: a file or a directory")
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="file or directory common to both sides (repeatable; BASE/HEAD objects replace its objects)",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="read directories' subdirectories too")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="SimulationConfig: once for both sides, twice for BASE then HEAD; default: the last "
        "SimulationConfig among each side's files, else NMI's defaults",
    )
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="LEVEL|CODE[,CODE...]",
        help="exit 3 only when HEAD introduces a finding BASE did not have for the same pod, at this "
        "severity (error; warning includes errors; info: any) or with one of these codes (repeatable)",
    )
    add_output_option(p)
    p.set_defaults(func=run)


def _world(paths: list[str], config: SimulationConfig | None, recursive: bool) -> World:
    if "-" in paths:
        raise UsageError("diff reads files and directories, not stdin ('-')")
    loaded = load_files(paths, recursive=recursive)  # directories as evaluate reads them
    if config is None and loaded.configs:
        config = loaded.configs[-1]
    world = World(config)
    for obj in loaded.objects:
        world.upsert(obj)
    return world


def _worlds(args: argparse.Namespace) -> tuple[World, World]:
    sides: list[str] = [s for s in (args.base, args.head) if s is not None]
    configs: list[str] = args.config
    if len(sides) == 1:
        raise UsageError("diff takes BASE and HEAD (or -f FILE --config A --config B), got only BASE")
    if len(configs) > 2:
        raise UsageError("--config: at most twice (BASE's, then HEAD's)")
    if not sides:
        if not args.files:
            raise UsageError("no input: pass BASE HEAD, or -f FILE with --config A --config B")
        if len(configs) != 2:
            raise UsageError("without BASE and HEAD, pass --config twice (BASE's, then HEAD's)")
    if "-" in configs:
        raise UsageError("diff reads files and directories, not stdin ('-')")
    loaded = [load_config(c) for c in configs]
    base_cfg = loaded[0] if loaded else None
    head_cfg = loaded[-1] if loaded else None
    common: list[str] = args.files
    base = [*common, sides[0]] if sides else common
    head = [*common, sides[1]] if sides else common
    for path in (*common, *sides):
        if path != "-" and not Path(path).exists():
            raise LoadError(f"{path}: no such file or directory")
    return _world(base, base_cfg, args.recursive), _world(head, head_cfg, args.recursive)


def _cell(r: PodResult | None) -> str:
    if r is None:
        return "(absent)"
    t = r.token_request
    bits = [r.verdict]
    if t.status is not None:
        bits.append(str(t.status) + (f" after {json_number(t.wait_seconds)}s" if t.wait_seconds else ""))
    bits.append(t.identity or "-")
    codes = sorted({f.code for f in r.findings})
    if codes:
        bits.append("[" + ",".join(codes) + "]")
    return " ".join(bits)


def document(diffs: list[PodDiff], gate: Gate | None, failures: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "EvaluationDiff",
        "differences": [d.to_json() for d in diffs],
        "summary": _summary(diffs),
        "gate": None
        if gate is None
        else {"failOn": gate.to_json(), "failed": failures > 0, "failures": failures},
    }


def _summary(diffs: list[PodDiff]) -> dict[str, int]:
    out = {"pods": len(diffs)}
    for change in (CHANGE_CHANGED, CHANGE_ADDED, CHANGE_REMOVED):
        out[change] = sum(1 for d in diffs if d.change == change)
    return out


def render_table(diffs: list[PodDiff], gate: Gate | None, failures: int, fail_on: str = "") -> str:
    if not diffs:
        out = "No differences.\n"
    else:
        rows = [["NAMESPACE/NAME", "CHANGE", "BASE", "HEAD"]]
        for d in diffs:
            change = d.change if d.change != CHANGE_CHANGED else ",".join(d.aspects)
            rows.append([f"{d.namespace}/{d.name}", change, _cell(d.base), _cell(d.head)])
        out = table(rows)
        s = _summary(diffs)
        pods = f"{s['pods']} pod" + (" differs" if s["pods"] == 1 else "s differ")
        out += f"\n{pods}: {s['changed']} changed, {s['added']} added, {s['removed']} removed\n"
        new = [(d, f) for d in diffs for f in d.new_findings]
        if new:
            out += f"\nNew findings in HEAD ({len(new)}):\n"
            frows = [[f"{d.namespace}/{d.name}", f.level, f.code, f.message] for d, f in new]
            out += "".join("  " + line + "\n" for line in table(frows).splitlines())
    if gate is not None:
        names = fail_on or ",".join(gate.to_json())
        verdict = f"failed: {failures} new finding(s)" if failures else "passed: no new finding it names"
        out += f"\n--fail-on {names}: {verdict}\n"
    return out


def run(args: argparse.Namespace) -> int:
    gate = parse_gate(args.fail_on) if args.fail_on else None
    base, head = _worlds(args)
    diffs = compare(base.evaluate_all(), head.evaluate_all())
    failures = len(gate_failures(diffs, gate)) if gate is not None else 0
    if args.output == "table":
        sys.stdout.write(render_table(diffs, gate, failures, ",".join(args.fail_on)))
    else:
        sys.stdout.write(render_data(document(diffs, gate, failures), args.output))
    if gate is not None:
        return EXIT_GATE if failures else 0
    return EXIT_GATE if diffs else 0
