"""``nmisim evaluate``'s reports: the table, the JSON/YAML document, JUnit XML, SARIF 2.1.0 and GitHub
workflow commands, all rendered from one :class:`nmisim.cli.audit.Audit`.

- JUnit: one ``testcase`` per subject (workload or pod; ``classname`` its namespace), a ``failure`` when
  the gate wants one of its findings or verdicts, the other findings in ``system-out``.
- SARIF: one rule per finding code (its help text, its severity as ``defaultConfiguration.level``), one
  result per finding with the object's file and line; suppressed ones carry ``suppressions``.
- GitHub: ``::error``/``::warning``/``::notice`` per finding (suppressed ones left out), with file and line,
  so a workflow run annotates the pull request's files.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any, Final

from nmisim import __version__
from nmisim.cli.audit import Audit, Reported, Subject, level_rank
from nmisim.cli.output import API_VERSION, table
from nmisim.engine.findings import DESCRIPTION, SEVERITY, SEVERITY_ERROR, SEVERITY_WARNING
from nmisim.engine.http import json_number
from nmisim.engine.models import KIND_BINDING, KIND_EXCEPTION, KIND_IDENTITY
from nmisim.engine.verdict import VERDICTS, PodResult

REPORT_FORMATS: Final = ("table", "json", "yaml", "junit", "sarif", "github")
SARIF_SCHEMA: Final = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI: Final = "https://github.com/nmisim/nmisim/blob/main/docs/cli.md"
_SARIF_LEVEL: Final = {SEVERITY_ERROR: "error", SEVERITY_WARNING: "warning"}


def _wait(seconds: float) -> str:
    return f"{json_number(seconds)}s" if seconds else "-"


def _summary(result: Audit) -> dict[str, Any]:
    pods = result.pods
    summary: dict[str, Any] = {
        "workloads": sum(1 for s in result.subjects if s.is_workload),
        "pods": len(pods),
    }
    for verdict in VERDICTS:
        summary[verdict] = sum(1 for r in pods if r.verdict == verdict)
    summary["findings"] = result.counts()
    summary["gate"] = {
        "failed": result.failed,
        "failOn": sorted(result.gate.levels | result.gate.codes),
        "failOnVerdict": sorted(result.gate.verdicts),
        "gatedFindings": sum(1 for r in result.findings if r.gated),
        "verdictFailures": len(result.verdict_failures),
    }
    return summary


def _finding_json(r: Reported) -> dict[str, Any]:
    out: dict[str, Any] = {"code": r.finding.code, "severity": r.finding.level, "message": r.finding.message}
    out["source"] = r.subject.origin.to_json() if r.subject.origin else None
    out["suppressed"] = r.suppressed
    out["gated"] = r.gated
    return out


def evaluation_document(result: Audit) -> dict[str, Any]:
    """The ``EvaluationResult`` document: product.md §4's ``results`` (one per pod, each with its workload,
    source and findings' severities) plus ``workloads`` and the gate's ``summary``."""
    by_pod: dict[tuple[str, str], list[Reported]] = {}
    own: dict[str, list[Reported]] = {}
    for r in result.findings:
        if not r.pods:
            own.setdefault(r.subject.key, []).append(r)
        for p in r.pods:
            by_pod.setdefault((r.subject.namespace, p), []).append(r)
    results: list[dict[str, Any]] = []
    workloads: list[dict[str, Any]] = []
    objects: dict[str, list[dict[str, Any]]] = {}
    for s in result.subjects:
        for pr in s.results:
            item = pr.to_json()
            item["workload"] = None if s.is_pod else s.key
            item["source"] = s.origin.to_json() if s.origin else None
            item["findings"] = [_finding_json(r) for r in by_pod.get((pr.namespace, pr.name), [])]
            results.append(item)
        if s.is_object:
            objects.setdefault(s.kind, []).append(
                {
                    "namespace": s.namespace,
                    "name": s.name,
                    "source": s.origin.to_json() if s.origin else None,
                    "findings": [_finding_json(r) for r in own.get(s.key, [])],
                }
            )
        elif not s.is_pod:
            workloads.append(
                {
                    "kind": s.kind,
                    "namespace": s.namespace,
                    "name": s.name,
                    "replicas": s.replicas,
                    "verdict": s.verdict,
                    "pods": [r.name for r in s.results],
                    "source": s.origin.to_json() if s.origin else None,
                    "findings": [_finding_json(r) for r in own.get(s.key, [])],
                }
            )
    return {
        "apiVersion": API_VERSION,
        "kind": "EvaluationResult",
        "results": results,
        "workloads": workloads,
        # the aad-pod-identity objects with findings of their own (docs/verdicts.md)
        "exceptions": objects.get(KIND_EXCEPTION, []),
        "bindings": objects.get(KIND_BINDING, []),
        "identities": objects.get(KIND_IDENTITY, []),
        "summary": _summary(result),
    }


def _row(s: Subject, r: PodResult | None, name: str) -> list[str]:
    if r is None:
        return [s.namespace, name, s.replicas or "-", s.verdict, "-", "-", "-", "-"]
    exc = r.exception or ("(mic shortcut)" if r.mic_shortcut else "-")
    ident = r.token_request.identity or "-"
    if r.ambiguous:
        ident += f" (+{len(r.identities) - 1} more)"
    status = str(r.token_request.status) if r.token_request.status is not None else "-"
    return [
        s.namespace,
        name,
        s.replicas or "-",
        r.verdict,
        exc,
        ident,
        status,
        _wait(r.token_request.wait_seconds),
    ]


def evaluation_table(result: Audit, *, pods: bool = False) -> str:
    """One row per workload (its first pod's answer; ``mixed`` when its pods differ) and per pod of its own;
    with ``pods``, one row per pod, named ``Kind/workload/pod``."""
    rows = [["NAMESPACE", "NAME", "REPLICAS", "VERDICT", "EXCEPTION", "IDENTITY", "TOKEN", "WAIT"]]
    for s in result.subjects:
        if s.is_object:
            continue  # its findings are listed below
        label = s.name if s.is_pod else f"{s.kind.lower()}/{s.name}"
        if s.is_pod or not pods:
            first = s.results[0] if s.results else None
            row = _row(s, first, label)
            if first is not None and s.verdict == "mixed":
                row[3] = "mixed"
            rows.append(row)
        else:
            rows.extend(_row(s, r, f"{label}/{r.name}") for r in s.results)
    summary = _summary(result)
    out = table(rows) if len(rows) > 1 else "No pods or workloads in the input.\n"
    out += (
        f"\n{summary['workloads']} workloads, {summary['pods']} pods: {summary['intercepted']} intercepted, "
        f"{summary['exempt']} exempt, {summary['bypass']} bypass, {summary['inactive']} inactive\n"
    )
    if result.findings:
        ordered = sorted(
            result.findings, key=lambda r: (level_rank(r.finding.level), r.subject.key, r.finding)
        )
        out += f"\nFindings ({len(ordered)}):\n"
        frows = []
        for r in ordered:
            where = f"{r.subject.namespace}/{r.subject.name}" if r.subject.is_pod else r.subject.key
            mark = f" [{r.suppressed}]" if r.suppressed else (" [gate]" if r.gated else "")
            frows.append([r.finding.level + mark, where, r.finding.code, r.finding.message])
        out += "".join("  " + line + "\n" for line in table(frows).splitlines())
    for s, pod, verdict in result.verdict_failures:
        out += f"  gate: {s.key}: pod {pod} is {verdict} (--fail-on-verdict)\n"
    if result.gate.levels or result.gate.codes or result.gate.verdicts:
        gated = sum(1 for r in result.findings if r.gated) + len(result.verdict_failures)
        out += f"\nGate: {'FAILED' if result.failed else 'passed'} ({gated} gated)\n"
    return out


# ------------------------------------------------------------------ JUnit XML
def junit(result: Audit) -> str:
    suite = ET.Element("testsuite", name="nmisim evaluate")
    failures = 0
    for s in result.subjects:
        case = ET.SubElement(suite, "testcase", classname=s.namespace, name=f"{s.kind}/{s.name}")
        if s.origin is not None:
            case.set("file", s.origin.file)
            case.set("line", str(s.origin.line))
        mine = [r for r in result.findings if r.subject is s]
        gated = [r for r in mine if r.gated]
        verdicts = [(p, v) for subj, p, v in result.verdict_failures if subj is s]
        if gated or verdicts:
            failures += 1
            first = gated[0].finding.code if gated else f"verdict {verdicts[0][1]}"
            fail = ET.SubElement(
                case,
                "failure",
                message=f"{first}"
                + (f" (+{len(gated) + len(verdicts) - 1} more)" if len(gated) + len(verdicts) > 1 else ""),
                type="nmisim",
            )
            lines = [f"{r.finding.level} {r.finding.code}: {r.finding.message}" for r in gated]
            lines += [f"pod {p} is {v} (--fail-on-verdict)" for p, v in verdicts]
            fail.text = "\n".join(lines)
        rest = [r for r in mine if not r.gated]
        if rest:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(
                f"{r.finding.level} {r.finding.code}: {r.finding.message}"
                + (f" (suppressed: {r.suppressed})" if r.suppressed else "")
                for r in rest
            )
    suite.set("tests", str(len(result.subjects)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suites = ET.Element("testsuites", name="nmisim", tests=str(len(result.subjects)), failures=str(failures))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# ------------------------------------------------------------------ SARIF 2.1.0
def sarif(result: Audit) -> str:
    codes = sorted({r.finding.code for r in result.findings})
    rules = [
        {
            "id": code,
            "name": code,
            "shortDescription": {"text": code},
            "fullDescription": {"text": DESCRIPTION.get(code, code)},
            "help": {"text": DESCRIPTION.get(code, code)},
            "helpUri": f"{INFORMATION_URI}#severities",
            "defaultConfiguration": {"level": _SARIF_LEVEL.get(SEVERITY.get(code, ""), "note")},
        }
        for code in codes
    ]
    index = {code: i for i, code in enumerate(codes)}
    results: list[dict[str, Any]] = []
    for r in result.findings:
        item: dict[str, Any] = {
            "ruleId": r.finding.code,
            "ruleIndex": index[r.finding.code],
            "level": _SARIF_LEVEL.get(r.finding.level, "note"),
            "message": {"text": f"{r.subject.key}: {r.finding.message}"},
        }
        if r.subject.origin is not None:
            item["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": r.subject.origin.file},
                        "region": {"startLine": r.subject.origin.line},
                    },
                    "logicalLocations": [{"name": r.subject.key, "kind": "object"}],
                }
            ]
        if r.suppressed:
            item["suppressions"] = [
                {
                    "kind": "inSource" if r.suppressed == "annotation" else "external",
                    "justification": r.suppressed,
                }
            ]
        results.append(item)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "nmisim",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


# ------------------------------------------------------------------ GitHub workflow commands
_GITHUB_COMMAND: Final = {SEVERITY_ERROR: "error", SEVERITY_WARNING: "warning"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(result: Audit) -> str:
    lines: list[str] = []
    for r in sorted(result.findings, key=lambda r: (level_rank(r.finding.level), r.subject.key, r.finding)):
        if r.suppressed:
            continue
        props = []
        if r.subject.origin is not None:
            props.append(f"file={_escape_property(r.subject.origin.file)}")
            props.append(f"line={r.subject.origin.line}")
        props.append(f"title={_escape_property(f'nmisim {r.finding.code}')}")
        command = _GITHUB_COMMAND.get(r.finding.level, "notice")
        lines.append(
            f"::{command} {','.join(props)}::{_escape_data(f'{r.subject.key}: {r.finding.message}')}"
        )
    for s, pod, verdict in result.verdict_failures:
        props = [f"file={_escape_property(s.origin.file)}", f"line={s.origin.line}"] if s.origin else []
        props.append("title=nmisim verdict")
        lines.append(f"::error {','.join(props)}::{_escape_data(f'{s.key}: pod {pod} is {verdict}')}")
    return "".join(line + "\n" for line in lines)
