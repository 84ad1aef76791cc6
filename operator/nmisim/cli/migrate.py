"""``nmisim migrate``: for every pod, what NMI gives it today against what Azure Workload Identity will give
it, and for every workload the plan (docs/migration.md).

``plan`` mode (the default) assesses the after-world as if every plan were applied; ``--verify`` assesses it
from the labels, ServiceAccounts and federated credentials that exist now. ``--emit DIR`` writes the plan as
manifests, patches and commands (:mod:`nmisim.cli.emit`). The gate flags are evaluate's: ``--fail-on``
(severities or hazard codes) and ``--fail-on-class``; a failed gate exits 3.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from nmisim.cli.common import UsageError, add_input_options, build_input, target_of, warn
from nmisim.cli.main import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK
from nmisim.cli.output import API_VERSION, render_data, table
from nmisim.engine.diff import GateError, parse_gate
from nmisim.engine.findings import SEVERITIES, SEVERITY_ERROR, SEVERITY_INFO, SEVERITY_WARNING, Finding
from nmisim.engine.migration import hazards as H
from nmisim.engine.migration.assess import (
    MODE_PLAN,
    MODE_VERIFY,
    MigrationInput,
    PodAssessment,
    Report,
    assess,
)
from nmisim.engine.migration.classify import CLASSES, PHASE_PARALLEL, PHASE_REMOVED, PHASES, Answer, worst
from nmisim.engine.migration.plan import WorkloadPlan
from nmisim.sources.migration import from_files, from_live


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="for every pod, what NMI gives it today against what Azure Workload Identity will give it",
        description="Leaving aad-pod-identity: for every pod and each request it can send (no identity, by "
        "client_id, by msi_res_id), NMI's answer today against Azure Workload Identity's in two phases "
        "(parallel: both installed; removed: NMI gone), one class per pod (same-identity, "
        "different-identity, loses-access, gains-access, blocked-at-admission, unaffected) with its hazards, "
        "and per workload the plan: label, ServiceAccount, federated credentials (az commands), proxy, SDK "
        "action, clean-up order. Exit codes: 0 ok, 1 failure, 2 bad input, 3 the gate failed.",
    )
    add_input_options(p, cluster=True, formats=("table", "json", "yaml"))
    p.add_argument("paths", nargs="*", metavar="FILE", help="more input files, as -f FILE each")
    p.add_argument(
        "--verify",
        action="store_true",
        help="assess the migration as it stands (labels, ServiceAccounts, credentials that exist now) "
        "instead of as planned",
    )
    p.add_argument("--pods", action="store_true", help="table: one row per pod instead of per workload")
    p.add_argument("--requests", action="store_true", help="table: each pod's requests, before and after")
    p.add_argument("--emit", metavar="DIR", help="write the plan as manifests, patches and commands into DIR")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="LEVEL|CODE[,CODE...]",
        help=f"exit 3 when a hazard of this severity or worse ({', '.join(SEVERITIES)}) or with one of these "
        "codes is found (repeatable)",
    )
    p.add_argument(
        "--fail-on-class",
        action="append",
        default=[],
        metavar="CLASS[,CLASS...]",
        help=f"exit 3 when a pod's class once NMI is removed is one of these ({', '.join(CLASSES)})",
    )
    p.add_argument(
        "--allow-empty", action="store_true", help="files with no pod and no workload are not an error"
    )
    p.set_defaults(func=run)


def _classes(values: list[str]) -> frozenset[str]:
    out = set()
    for item in (v.strip() for text in values for v in text.split(",")):
        if not item:
            continue
        if item not in CLASSES:
            raise UsageError(f"--fail-on-class {item}: not a class ({', '.join(CLASSES)})")
        out.add(item)
    return frozenset(out)


def migration_input(args: argparse.Namespace, errors: list[str] | None = None) -> MigrationInput:
    """The world NMI sees plus what Workload Identity reads, from files and/or the live cluster. What the
    files hold that Workload Identity cannot read goes to ``errors`` (one line each; the rest is assessed);
    a live object that cannot be read is a warning, as the operator tolerates it."""
    if errors is None:
        errors = []
    data = build_input(args, keep_going=False)
    if args.cluster:
        from nmisim.sources.cluster import load_workload_identity  # noqa: PLC0415

        live = load_workload_identity(target_of(args), args.namespace, warn)
        inp = from_live(
            data.world,
            pods=live.pods,
            owners=live.owners,
            service_accounts=live.service_accounts,
            namespaces=live.namespaces,
            others=live.others,
            webhook_installed=live.webhook_installed,
            warn=warn,
        )
        if args.files or args.kustomize:
            files = from_files(data.world, data.loaded, errors.append)
            seen = {(e.pod.namespace, e.pod.name) for e in files.pods}
            inp.pods = [e for e in inp.pods if (e.pod.namespace, e.pod.name) not in seen] + files.pods
            inp.service_accounts.update(files.service_accounts)
            inp.namespaces.update(files.namespaces)
            inp.credentials = (*inp.credentials, *files.credentials)
        return inp
    return from_files(data.world, data.loaded, errors.append)


def _hazard_text(hazards: tuple[Finding, ...]) -> str:
    """Errors and warnings, errors first (info hazards are in -o json/yaml)."""
    codes = {h.code for h in hazards if h.level != SEVERITY_INFO}
    return ",".join(sorted(codes, key=lambda c: (SEVERITIES.index(H.SEVERITY[c]), c))) or "-"


def _too_old(p: PodAssessment) -> str:
    alt = p.classes_if_sdk_too_old
    return alt[PHASE_REMOVED] if alt else "-"


def _today(p: PodAssessment) -> str:
    if len(p.identities) > 1:
        return f"{p.before_verdict} ({len(p.identities)} identities)"
    return p.before_verdict + (f" {p.identities[0]}" if p.identities else "")


def pods_table(report: Report) -> str:
    rows = [["POD", "NMI TODAY", "PARALLEL", "REMOVED", "IF SDK TOO OLD", "SA", "SDK", "PROXY", "HAZARDS"]]
    for p in report.pods:
        rows.append(
            [
                p.key,
                _today(p),
                p.classes[PHASE_PARALLEL],
                p.classes[PHASE_REMOVED],
                _too_old(p),
                p.service_account,
                p.sdk or p.capability,
                "yes" if p.proxy else "no",
                _hazard_text(p.hazards),
            ]
        )
    return table(rows)


def workloads_table(report: Report) -> str:
    by: dict[str, list[PodAssessment]] = {}
    for p in report.pods:
        by.setdefault(p.workload, []).append(p)
    rows = [
        [
            "WORKLOAD",
            "PODS",
            "NMI TODAY",
            "PARALLEL",
            "REMOVED",
            "IF SDK TOO OLD",
            "SA",
            "SDK",
            "PROXY",
            "HAZARDS",
        ]
    ]
    for key in sorted(by):
        pods = by[key]
        first = pods[0]
        today = {_today(p) for p in pods}
        hz: tuple[Finding, ...] = tuple(h for p in pods for h in p.hazards)
        classes = {ph: worst([p.classes[ph] for p in pods]) for ph in PHASES}
        alt = [p.classes_if_sdk_too_old[PHASE_REMOVED] for p in pods if p.classes_if_sdk_too_old]
        cells = [classes[PHASE_PARALLEL], classes[PHASE_REMOVED], worst(alt) if alt else "-"]
        rows.append(
            [
                key,
                "0 (idle)" if all(p.idle for p in pods) else str(len(pods)),
                today.pop() if len(today) == 1 else "mixed",
                *cells,
                first.service_account,
                first.sdk or first.capability,
                "yes" if any(p.proxy for p in pods) else "no",
                _hazard_text(hz),
            ]
        )
    return table(rows)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _answer(a: Answer) -> str:
    if a.ok:
        return f"200 {a.identity} ({a.via})"
    return _short(f"{a.status or '-'} {a.error}") + f" ({a.via})"


def requests_table(report: Report) -> str:
    rows = [["POD", "REQUEST", "NMI TODAY", "PARALLEL", "REMOVED", "CLASS"]]
    for p in report.pods:
        for r in p.rows:
            rows.append(
                [
                    p.key,
                    r.shape.text if len(r.shape.text) <= 60 else r.shape.text[:28] + "…" + r.shape.text[-28:],
                    _answer(r.before),
                    _answer(r.after[PHASE_PARALLEL]),
                    _answer(r.after[PHASE_REMOVED]),
                    r.classes[PHASE_REMOVED],
                ]
            )
    return table(rows)


def plan_text(plans: tuple[WorkloadPlan, ...]) -> str:
    out = []
    for plan in plans:
        if not plan.migrates:
            continue
        out.append(f"{plan.workload.key} ({len(plan.pods)} pod{'s' if len(plan.pods) != 1 else ''}):")
        out.extend(f"  {i}. {step}" for i, step in enumerate(plan.steps(), 1))
    return "\n".join(out) + ("\n" if out else "")


def summary_line(report: Report) -> str:
    counts = report.counts(PHASE_REMOVED)
    parts = [f"{n} {c}" for c, n in counts.items() if n]
    levels = Counter(h.level for p in report.pods for h in p.hazards)
    return (
        f"{len(report.pods)} pods once NMI is removed: {', '.join(parts) or 'none'}; hazards: "
        f"{levels[SEVERITY_ERROR]} errors, {levels[SEVERITY_WARNING]} warnings"
    )


def document(report: Report, failures: list[str]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "MigrationReport", **report.to_json(), "gate": failures}


def run(args: argparse.Namespace) -> int:
    args.files = [*args.files, *args.paths]
    try:
        gate = parse_gate(args.fail_on, allow_empty=True, known=H.ALL_CODES)
    except GateError as exc:
        raise UsageError(str(exc)) from None
    gate_classes = _classes(args.fail_on_class)
    errors: list[str] = []
    inp = migration_input(args, errors)
    if not inp.pods and not args.allow_empty and not args.cluster:
        raise UsageError("no pods or workloads in the input (pass --allow-empty if that is expected)")
    report = assess(inp, MODE_VERIFY if args.verify else MODE_PLAN)
    failures = sorted(
        {f"{p.key}: {h.code}" for p in report.pods for h in p.hazards if gate.hits(h)}
        | {f"{p.key}: class {p.final_class}" for p in report.pods if p.final_class in gate_classes}
    )
    if args.emit:
        from nmisim.cli.emit import emit  # noqa: PLC0415

        written = emit(args.emit, report, inp, args)
        print(
            f"nmisim: wrote {len(written)} files to {args.emit} (review them, then run {args.emit}/apply.sh)",
            file=sys.stderr,
        )
    if args.output == "table":
        mode = "verify: the migration as it stands" if args.verify else "plan: as if every plan were applied"
        sys.stdout.write(f"Migration to Azure Workload Identity ({mode})\n\n")
        if args.requests:
            sys.stdout.write(requests_table(report))
        else:
            sys.stdout.write(pods_table(report) if args.pods else workloads_table(report))
        text = plan_text(report.plans)
        if text:
            sys.stdout.write("\nPlan, per workload:\n" + text)
        if report.budgets:
            rows = [["IDENTITY", "CLIENT ID", "EXISTING", "PLANNED", "LEFT (OF 20)"]]
            rows += [
                [b.identity, b.client_id, str(b.existing), str(b.planned), str(b.left)]
                for b in report.budgets
            ]
            sys.stdout.write("\nFederated credentials per identity:\n" + table(rows))
        for f in report.findings:
            sys.stdout.write(f"\n{f.code}: {f.message}\n")
        sys.stdout.write("\n" + summary_line(report) + "\n")
        for line in failures:
            sys.stdout.write(f"GATE {line}\n")
    else:
        sys.stdout.write(render_data(document(report, failures), args.output))
    sys.stdout.flush()
    for message in errors:
        print(f"nmisim: error: {message}", file=sys.stderr)
    if errors:
        return EXIT_BAD_INPUT
    return EXIT_GATE if failures else EXIT_OK
