"""Comparing two evaluations pod by pod (issue 19 item 8, ``nmisim diff``).

A pod differs when its verdict, the identity of its default token request, that request's outcome
(status, error text, wait) or its findings differ between BASE and HEAD; pods only on one side are
``added`` or ``removed``. Findings compare by code and level (error/warning/info), not by message, so a
reworded message alone is no difference.

The gate (``--fail-on``) asks the question a pull request needs: does HEAD introduce a finding, at a
severity (``error``; ``warning`` includes errors; ``info`` includes everything) or with a code, that BASE
did not have for the same pod? A pod only in HEAD introduces all its findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nmisim.engine.findings import ALL_CODES, SEVERITIES, Finding
from nmisim.engine.verdict import PodResult

CHANGE_ADDED: Final = "added"
CHANGE_REMOVED: Final = "removed"
CHANGE_CHANGED: Final = "changed"

#: what is compared, in the order reported
ASPECTS: Final = ("verdict", "identity", "status", "error", "wait", "findings")


class GateError(ValueError):
    """A ``--fail-on`` value that is neither a severity nor a finding code (exit 2)."""


def _finding_keys(result: PodResult) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({(f.code, f.level) for f in result.findings}))


def _aspect(result: PodResult, aspect: str) -> object:
    t = result.token_request
    return {
        "verdict": result.verdict,
        "identity": t.identity,
        "status": t.status,
        "error": t.error,
        "wait": t.wait_seconds,
        "findings": _finding_keys(result),
    }[aspect]


@dataclass(frozen=True, slots=True)
class PodDiff:
    namespace: str
    name: str
    change: str
    #: the aspects that differ (all of them for added/removed pods)
    aspects: tuple[str, ...]
    base: PodResult | None
    head: PodResult | None
    #: HEAD's findings whose (code, level) the pod's BASE result did not have
    new_findings: tuple[Finding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "change": self.change,
            "aspects": list(self.aspects),
            "base": self.base.to_json() if self.base is not None else None,
            "head": self.head.to_json() if self.head is not None else None,
            "newFindings": [{**f.to_json(), "severity": f.level} for f in self.new_findings],
        }


def _new_findings(base: PodResult | None, head: PodResult | None) -> tuple[Finding, ...]:
    if head is None:
        return ()
    had = set(_finding_keys(base)) if base is not None else set()
    return tuple(f for f in head.findings if (f.code, f.level) not in had)


def diff_results(base: Iterable[PodResult], head: Iterable[PodResult]) -> list[PodDiff]:
    """The pods that differ, sorted by namespace and name."""
    b = {(r.namespace, r.name): r for r in base}
    h = {(r.namespace, r.name): r for r in head}
    out: list[PodDiff] = []
    for key in sorted(b.keys() | h.keys()):
        rb, rh = b.get(key), h.get(key)
        if rb is None or rh is None:
            change = CHANGE_ADDED if rb is None else CHANGE_REMOVED
            out.append(PodDiff(*key, change, ASPECTS, rb, rh, _new_findings(rb, rh)))
            continue
        aspects = tuple(a for a in ASPECTS if _aspect(rb, a) != _aspect(rh, a))
        if aspects:
            out.append(PodDiff(*key, CHANGE_CHANGED, aspects, rb, rh, _new_findings(rb, rh)))
    return out


@dataclass(frozen=True, slots=True)
class Gate:
    """``--fail-on``: severities and codes; a new finding at one of the severities or codes fails it."""

    severities: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()

    def hits(self, finding: Finding) -> bool:
        return finding.code in self.codes or finding.level in self.severities

    def to_json(self) -> list[str]:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(self.severities, key=order.__getitem__) + sorted(self.codes)


def _near(item: str, known: Sequence[str] = ALL_CODES) -> str:
    low = item.lower()
    close = [c for c in known if c.lower().startswith(low[:4])] if len(low) >= 4 else []
    return f"did you mean {', '.join(close)}?" if close else "see docs/cli.md#severities"


def parse_gate(values: Sequence[str], *, allow_empty: bool = False, known: Sequence[str] = ALL_CODES) -> Gate:
    """``error``, ``warning`` (errors too), ``info`` (all) or finding codes (``known``: NMI's findings, or
    ``nmisim migrate``'s hazards), comma-separated and/or repeated. Codes compare exactly (they are stable
    identifiers)."""
    severities: set[str] = set()
    codes: set[str] = set()
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if item in SEVERITIES:
                # gate order: a lower bar includes every severity above it
                severities.update(SEVERITIES[: SEVERITIES.index(item) + 1])
            elif item in known:
                codes.add(item)
            else:
                raise GateError(
                    f"--fail-on {item}: not a severity ({', '.join(SEVERITIES)}) or a finding code "
                    f"({_near(item, known)})"
                )
    if not severities and not codes and not allow_empty:
        raise GateError("--fail-on: empty; pass error, warning, info or finding codes")
    return Gate(frozenset(severities), frozenset(codes))


def gate_failures(diffs: Iterable[PodDiff], gate: Gate) -> list[tuple[PodDiff, Finding]]:
    """Each new HEAD finding the gate catches, with its pod."""
    return [(d, f) for d in diffs for f in d.new_findings if gate.hits(f)]
