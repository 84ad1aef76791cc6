"""What ``nmisim evaluate`` reports and gates on: subjects (a workload and its pods-to-be, or a pod), their
findings with severity, source and suppression, and the gate's decision.

A finding is *gated* when the gate asks for it (``--fail-on error|warning|info|CODE,...``) and nothing
suppresses it: the ``nmisim.dev/ignore: CODE,CODE`` annotation on the pod, its template or its workload,
or an entry of the ``--baseline`` file (subject and code; messages may change between versions).
``--fail-on-verdict`` gates on verdicts (``bypass``, ...). The gate failing exits
:data:`nmisim.cli.main.EXIT_GATE` (3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from nmisim.cli.common import UsageError
from nmisim.engine.diff import parse_gate
from nmisim.engine.findings import SEVERITY_ERROR, SEVERITY_WARNING, Finding
from nmisim.engine.models import KIND_BINDING, KIND_EXCEPTION, KIND_IDENTITY, KIND_POD
from nmisim.engine.objects import ObjectFindings
from nmisim.engine.verdict import VERDICTS, PodResult
from nmisim.sources.files import Loaded, LoadError, Origin

OBJECT_KINDS: Final = (KIND_EXCEPTION, KIND_BINDING, KIND_IDENTITY)
SUPPRESSED_ANNOTATION: Final = "annotation"
SUPPRESSED_BASELINE: Final = "baseline"
BASELINE_KIND: Final = "Baseline"
BASELINE_API_VERSION: Final = "nmisim.dev/v1alpha1"


@dataclass(frozen=True, slots=True)
class Gate:
    """``--fail-on`` and ``--fail-on-verdict``; empty: nothing fails the run."""

    levels: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    verdicts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, fail_on: Sequence[str], fail_on_verdict: Sequence[str]) -> Gate:
        # one --fail-on grammar for evaluate and diff (engine/diff.py); a severity includes those above it
        findings = parse_gate(fail_on, allow_empty=True)
        levels, codes = set(findings.severities), set(findings.codes)
        verdicts: set[str] = set()
        for item in (p.strip() for text in fail_on_verdict for p in text.split(",")):
            if not item:
                continue
            if item not in VERDICTS:
                raise UsageError(f"--fail-on-verdict {item}: not a verdict ({', '.join(VERDICTS)})")
            verdicts.add(item)
        return cls(frozenset(levels), frozenset(codes), frozenset(verdicts))

    def wants(self, finding: Finding) -> bool:
        return finding.level in self.levels or finding.code in self.codes


@dataclass(frozen=True, slots=True)
class Subject:
    """A workload with its pods-to-be, or a pod of its own."""

    kind: str
    namespace: str
    name: str
    #: replicas asked for ("per node" for a DaemonSet); "" for a pod
    replicas: str
    origin: Origin | None
    results: tuple[PodResult, ...]
    #: the workload's own findings (e.g. BindingLabelOnWorkload)
    own_findings: tuple[Finding, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def is_pod(self) -> bool:
        return self.kind == KIND_POD

    @property
    def is_object(self) -> bool:
        """An aad-pod-identity object (exception, binding, identity) reported for its own findings."""
        return self.kind in OBJECT_KINDS

    @property
    def is_workload(self) -> bool:
        return not self.is_pod and not self.is_object

    @property
    def verdict(self) -> str:
        verdicts = sorted({r.verdict for r in self.results})
        if not verdicts:
            return "-"
        return verdicts[0] if len(verdicts) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class Reported:
    """One finding as reported: once per subject and (code, message), however many replicas share it."""

    subject: Subject
    finding: Finding
    #: the pods it was found on (empty: the workload's own)
    pods: tuple[str, ...]
    suppressed: str | None
    gated: bool


@dataclass(slots=True)
class Audit:
    subjects: list[Subject]
    findings: list[Reported]
    gate: Gate
    #: (subject, pod, verdict) of the pods ``--fail-on-verdict`` names
    verdict_failures: list[tuple[Subject, str, str]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.verdict_failures) or any(r.gated for r in self.findings)

    @property
    def pods(self) -> list[PodResult]:
        return [r for s in self.subjects for r in s.results]

    def counts(self) -> dict[str, int]:
        """Findings per code (suppressed ones too)."""
        out: dict[str, int] = {}
        for r in self.findings:
            out[r.finding.code] = out.get(r.finding.code, 0) + 1
        return dict(sorted(out.items()))


def subjects_of(results: Sequence[PodResult], loaded: Loaded) -> list[Subject]:
    """Group pod results by the workload they come from; pods of their own stay subjects of their own."""
    by_pod = {(r.namespace, r.name): r for r in results}
    subjects: list[Subject] = []
    claimed: set[tuple[str, str]] = set()
    for wl in loaded.workloads:
        pods: list[PodResult] = []
        for key, owner in loaded.pod_workload.items():
            if owner == wl.key and key in by_pod:
                pods.append(by_pod[key])
                claimed.add(key)
        subjects.append(
            Subject(
                kind=wl.kind,
                namespace=wl.namespace,
                name=wl.name,
                replicas=wl.replicas_text,
                origin=loaded.origins.get((wl.kind, wl.namespace, wl.name)),
                results=tuple(sorted(pods, key=lambda r: r.name)),
                own_findings=wl.findings,
            )
        )
    for r in results:
        if (r.namespace, r.name) in claimed:
            continue
        subjects.append(
            Subject(
                kind=KIND_POD,
                namespace=r.namespace,
                name=r.name,
                replicas="",
                origin=loaded.origins.get((KIND_POD, r.namespace, r.name)),
                results=(r,),
            )
        )
    subjects.sort(key=lambda s: (s.namespace, s.name, s.kind))
    return subjects


def object_subjects(objects: ObjectFindings, loaded: Loaded) -> list[Subject]:
    """The exceptions, bindings and identities with findings of their own, as subjects."""
    return [
        Subject(
            kind=kind,
            namespace=r.namespace,
            name=r.name,
            replicas="",
            origin=loaded.origins.get((kind, r.namespace, r.name)),
            results=(),
            own_findings=r.findings,
        )
        for kind, r in objects
    ]


def audit(
    subjects: list[Subject],
    gate: Gate,
    ignored: Mapping[tuple[str, str], frozenset[str]],
    workload_ignored: Mapping[str, frozenset[str]],
    baseline: frozenset[tuple[str, str]] = frozenset(),
) -> Audit:
    """Report every finding once per subject, with its suppression and whether the gate wants it."""
    reported: list[Reported] = []
    failures: list[tuple[Subject, str, str]] = []
    for s in subjects:
        grouped: dict[Finding, list[str]] = {}
        for f in s.own_findings:
            grouped.setdefault(f, [])
        for r in s.results:
            if r.verdict in gate.verdicts:
                failures.append((s, r.name, r.verdict))
            for f in r.findings:
                grouped.setdefault(f, []).append(r.name)
        for f, pods in grouped.items():
            suppressed: str | None = None
            codes = workload_ignored.get(s.key, frozenset())
            if pods:
                codes = codes | frozenset().union(*(ignored.get((s.namespace, p), frozenset()) for p in pods))
            if f.code in codes:
                suppressed = SUPPRESSED_ANNOTATION
            elif (s.key, f.code) in baseline:
                suppressed = SUPPRESSED_BASELINE
            reported.append(Reported(s, f, tuple(pods), suppressed, gate.wants(f) and suppressed is None))
    return Audit(subjects, reported, gate, failures)


def read_baseline(path: str) -> frozenset[tuple[str, str]]:
    """(subject key, code) pairs of a baseline file (``--write-baseline`` writes them)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadError(f"--baseline {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LoadError(f"--baseline {path}: cannot read: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, Mapping) or doc.get("kind") != BASELINE_KIND:
        raise LoadError(f"--baseline {path}: not a {BASELINE_KIND} (written by --write-baseline)")
    entries = doc.get("findings") or []
    if not isinstance(entries, list):
        raise LoadError(f"--baseline {path}: findings: expected a list")
    out: set[tuple[str, str]] = set()
    for i, e in enumerate(entries):
        if not (
            isinstance(e, Mapping) and isinstance(e.get("subject"), str) and isinstance(e.get("code"), str)
        ):
            raise LoadError(f"--baseline {path}: findings[{i}]: expected subject and code (strings)")
        out.add((e["subject"], e["code"]))
    return frozenset(out)


def baseline_document(result: Audit) -> dict[str, Any]:
    """Every finding not already suppressed by annotation, as a baseline (subject, code)."""
    pairs = sorted(
        {(r.subject.key, r.finding.code) for r in result.findings if r.suppressed != SUPPRESSED_ANNOTATION}
    )
    return {
        "apiVersion": BASELINE_API_VERSION,
        "kind": BASELINE_KIND,
        "findings": [{"subject": s, "code": c} for s, c in pairs],
    }


def level_rank(level: str) -> int:
    """0 for error, 1 for warning, 2 for info (sorting)."""
    return {SEVERITY_ERROR: 0, SEVERITY_WARNING: 1}.get(level, 2)
