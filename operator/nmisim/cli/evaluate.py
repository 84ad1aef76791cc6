"""``nmisim evaluate``: what NMI does with every pod and workload in the input, and a gate for CI.

Workloads are reported one row each (``--pods`` expands them); every bad file or object is reported on stderr
(one line each) while the rest is evaluated, and then the exit code is 2. The gate (``--fail-on``,
``--fail-on-verdict``) exits 3; manifests with no pod and no workload exit 2 unless ``--allow-empty``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from nmisim.cli.audit import Gate, audit, baseline_document, object_subjects, read_baseline, subjects_of
from nmisim.cli.common import UsageError, add_input_options, build_input
from nmisim.cli.main import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK
from nmisim.cli.output import render_data
from nmisim.cli.reports import REPORT_FORMATS, evaluation_document, evaluation_table, github, junit, sarif
from nmisim.engine.findings import SEVERITIES
from nmisim.engine.verdict import VERDICTS
from nmisim.sources.files import LoadError
from nmisim.sources.nmioptions import add_nmi_options


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="print what NMI would do with every pod and workload in the input",
        description="Read Kubernetes objects and print one verdict per workload or pod: intercepted, exempt, "
        "bypass or inactive, with the default token request's outcome and findings. Objects come from files "
        "and directories (-f, -R), kustomize (-k), the live cluster (--cluster), or several of them. "
        "Exit codes: 0 ok, 1 failure, 2 bad input (every bad object reported, the rest evaluated), "
        "3 the gate failed (--fail-on, --fail-on-verdict).",
    )
    add_input_options(p, cluster=True, formats=REPORT_FORMATS)
    add_nmi_options(p)  # NMI's flags and --nmi-values (sources/nmioptions.py)
    # FILE... as -f FILE each: how pre-commit (.pre-commit-hooks.yaml) and xargs pass files
    p.add_argument("paths", nargs="*", metavar="FILE", help="more input files, as -f FILE each")
    p.add_argument("--pods", action="store_true", help="table: one row per pod instead of per workload")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="LEVEL|CODE[,CODE...]",
        help=f"exit 3 when a finding of this severity or worse ({', '.join(SEVERITIES)}) or with one of "
        "these codes is found and not suppressed (repeatable)",
    )
    p.add_argument(
        "--fail-on-verdict",
        action="append",
        default=[],
        metavar="VERDICT[,VERDICT...]",
        help=f"exit 3 when a pod gets one of these verdicts ({', '.join(VERDICTS)}) (repeatable)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="files with no pod and no workload are not an error (--cluster never needs it)",
    )
    p.add_argument(
        "--baseline",
        metavar="FILE",
        help="findings listed in FILE (subject and code) are reported as baselined and not gated",
    )
    p.add_argument(
        "--write-baseline",
        metavar="FILE",
        help="write every finding (subject and code) to FILE as a baseline, then report as usual",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.files = [*args.files, *args.paths]  # positional FILEs after the -f ones
    gate = Gate.parse(args.fail_on, args.fail_on_verdict)
    baseline = read_baseline(args.baseline) if args.baseline else frozenset()
    data = build_input(args, keep_going=True)
    loaded = data.loaded
    results = data.world.evaluate_all()
    subjects = subjects_of(results, loaded)
    # manifests that hold no pod and no workload would pass a gate vacuously; a live cluster (or namespace)
    # without pods is a state, and evaluate reports it as kubectl get does
    if not subjects and not args.allow_empty and not loaded.errors and not args.cluster:
        raise UsageError("no pods or workloads in the input (pass --allow-empty if that is expected)")
    # the aad-pod-identity objects' own findings (unused exception, placeholder resourceID, ...), once each
    subjects += object_subjects(data.world.object_findings(), loaded)
    result = audit(subjects, gate, loaded.ignored_codes, loaded.workload_ignored, baseline)
    if args.write_baseline:
        try:
            Path(args.write_baseline).write_text(
                yaml.safe_dump(baseline_document(result), sort_keys=False), encoding="utf-8"
            )
        except OSError as exc:
            raise LoadError(f"--write-baseline {args.write_baseline}: {exc.strerror or exc}") from None
    fmt = args.output
    if loaded.errors and not subjects:
        fmt = ""  # nothing was read: only the errors
    if fmt == "table":
        sys.stdout.write(evaluation_table(result, pods=args.pods))
    elif fmt == "junit":
        sys.stdout.write(junit(result))
    elif fmt == "sarif":
        sys.stdout.write(sarif(result))
    elif fmt == "github":
        sys.stdout.write(github(result))
    elif fmt:
        sys.stdout.write(render_data(evaluation_document(result), fmt))
    sys.stdout.flush()
    for message in loaded.errors:
        print(f"nmisim: error: {message}", file=sys.stderr)
    if loaded.errors:
        return EXIT_BAD_INPUT
    return EXIT_GATE if result.failed else EXIT_OK
