"""What the operator wants the cluster to say: NMIVerdict, exception and SimulationConfig statuses, and
the Events for transitions. Pure functions of engine results; no I/O.

Comparisons are *semantic*: bookkeeping fields (resource versions, transition times) and null values
(which a merge patch deletes and the API server never stores) are left out, so a status read back from
the API server compares equal to the one that was written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.engine.models import Pod, PodIdentityException
from nmisim.engine.verdict import (
    VERDICT_BYPASS,
    VERDICT_EXEMPT,
    VERDICT_INACTIVE,
    VERDICT_INTERCEPTED,
    VERDICTS,
    PodResult,
)

BOOKKEEPING: Final = frozenset({"observedPodResourceVersion", "lastTransitionTime", "transitions"})
SAMPLE_SIZE: Final = 10

# Event reasons (product.md §5)
REASON_INTERCEPTED: Final = "IMDSIntercepted"
REASON_DENIED: Final = "IMDSDenied"
REASON_EXEMPTED: Final = "IMDSExempted"
REASON_BYPASSED: Final = "IMDSBypassed"
REASON_EXC_MATCHES: Final = "ExceptionMatchesPods"
REASON_EXC_NO_MATCH: Final = "ExceptionMatchesNoPods"

# Ready condition reasons of an AzurePodIdentityException
COND_PODS_EXEMPTED: Final = "PodsExempted"
COND_NO_MATCHING_PODS: Final = "NoMatchingPods"
COND_EMPTY_POD_LABELS: Final = "EmptyPodLabels"

# API server limits from the CRD schemas (crds/nmiverdicts.nmisim.dev.yaml)
_MAX_ITEMS: Final = 64
_MAX_FINDINGS: Final = 32
_MAX_MESSAGE: Final = 1024
_MAX_ERROR: Final = 4096


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(timestamp: str | None) -> int:
    """Seconds since the epoch of an RFC 3339 timestamp; 0 for none or garbage."""
    if not timestamp:
        return 0
    try:
        return int(dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def semantic(status: Mapping[str, Any] | None) -> str:
    """A canonical form of a status for change detection."""
    if not status:
        return ""
    body = {k: v for k, v in status.items() if k not in BOOKKEEPING}
    return json.dumps(_drop_nulls(body), sort_keys=True, separators=(",", ":"))


# --- NMIVerdict -----------------------------------------------------------------------------------------


def verdict_status(result: PodResult, pod: Pod, migration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The NMIVerdict status for a result and the pod's migration status (:mod:`.migration`), fitted to
    the CRD's bounds. Nulls are kept (they delete): a pod without a migration status has ``migration``
    null."""
    body = result.to_json()
    del body["namespace"], body["name"]
    body["exceptions"] = body["exceptions"][:_MAX_ITEMS]
    body["identities"] = body["identities"][:_MAX_ITEMS]
    body["findings"] = [
        {"code": f["code"], "message": f["message"][:_MAX_MESSAGE]} for f in body["findings"][:_MAX_FINDINGS]
    ]
    token = body["tokenRequest"]
    if token.get("error"):
        token["error"] = token["error"][:_MAX_ERROR]
    body["podUID"] = pod.uid
    body["migration"] = dict(migration) if migration is not None else None
    return body


def event_reason(status: Mapping[str, Any] | None) -> str | None:
    """The Event reason a verdict status stands for; None for none (inactive, or no status yet)."""
    if not status:
        return None
    verdict = status.get("verdict")
    if verdict == VERDICT_BYPASS:
        return REASON_BYPASSED
    if verdict == VERDICT_EXEMPT:
        return REASON_EXEMPTED
    if verdict == VERDICT_INTERCEPTED:
        token = status.get("tokenRequest") or {}
        return REASON_INTERCEPTED if token.get("status") == 200 else REASON_DENIED
    return None


def event_message(status: Mapping[str, Any]) -> str:
    reason = event_reason(status)
    token = status.get("tokenRequest") or {}
    if reason == REASON_BYPASSED:
        return "hostNetwork pod: its IMDS requests never reach NMI; IMDS answers them directly"
    if reason == REASON_EXEMPTED:
        via = status.get("exception") or "the MIC shortcut"
        return (
            f"exempted by {via}: NMI fetches tokens from IMDS for this pod, forwarding only client_id "
            f"and resource (default token request: HTTP {token.get('status')})"
        )
    if reason == REASON_INTERCEPTED:
        return f"NMI intercepts IMDS requests and serves tokens for {token.get('identity')}"
    wait = token.get("waitSeconds") or 0
    error = (token.get("error") or "").strip()
    after = f" after {wait:g} s" if wait else ""
    text = (
        f"NMI intercepts IMDS requests and denies token requests (HTTP {token.get('status')}{after}): {error}"
    )
    return text[:_MAX_MESSAGE]


# --- AzurePodIdentityException ------------------------------------------------------------------------


def matched_pods(exception: str, results: Iterable[PodResult]) -> list[str]:
    """Names of the pods this exception actually exempts (product.md §5), sorted."""
    return sorted(r.name for r in results if r.verdict == VERDICT_EXEMPT and exception in r.exceptions)


def exception_status(
    exc: PodIdentityException, matched: list[str], old: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Desired status of an exception; keeps the condition's lastTransitionTime unless it changed."""
    labels = ", ".join(f"{k}={v}" for k, v in sorted(exc.pod_labels.items()))
    if not exc.pod_labels:
        state, reason = "False", COND_EMPTY_POD_LABELS
        message = "spec.podLabels is empty: NMI matches no pod with this exception"
    elif matched:
        state, reason = "True", COND_PODS_EXEMPTED
        message = (
            f"exempts {len(matched)} pod(s) in namespace {exc.namespace} (any one of {labels}); "
            "NMI forwards their token requests to IMDS"
        )
    else:
        state, reason = "False", COND_NO_MATCHING_PODS
        message = (
            f"no running pod in namespace {exc.namespace} carries any of {labels}; "
            "exceptions only match pods in their own namespace"
        )
    return {
        "matchedPods": len(matched),
        "matchedPodsSample": matched[:SAMPLE_SIZE],
        "observedGeneration": exc.generation,
        "conditions": [ready(state, reason, message, exc.generation, old)],
    }


def exception_semantic(status: Mapping[str, Any] | None) -> str:
    """Exception status without condition timestamps (and without upstream's unused ``status``)."""
    return _object_semantic(
        status, {"matchedPods": None, "matchedPodsSample": [], "observedGeneration": None}
    )


def _object_semantic(status: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> str:
    """The given status fields (with their defaults) and the conditions without their timestamps."""
    if not status:
        return ""
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
    ]
    body = {
        name: default if status.get(name) is None else status.get(name) for name, default in fields.items()
    }
    body["conditions"] = conditions
    return json.dumps(_drop_nulls(body), sort_keys=True, separators=(",", ":"))


def ready(
    state: str, reason: str, message: str, generation: int, old: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A metav1.Condition of type Ready; its lastTransitionTime moves only when status or reason change."""
    previous = _condition(old, "Ready")
    unchanged = previous is not None and previous.get("status") == state and previous.get("reason") == reason
    return {
        "type": "Ready",
        "status": state,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "lastTransitionTime": str(previous.get("lastTransitionTime")) if unchanged and previous else now(),
        "observedGeneration": generation,
    }


def _condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return None


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return _condition(status, "Ready")


# --- SimulationConfig ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    verdicts: dict[str, int]
    findings: dict[str, int]
    by_namespace: dict[tuple[str, str], int]


def totals(results: Iterable[PodResult]) -> Totals:
    verdicts: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    by_ns: Counter[tuple[str, str]] = Counter()
    for r in results:
        verdicts[r.verdict] += 1
        by_ns[(r.namespace, r.verdict)] += 1
        findings.update(r.finding_codes)
    return Totals(dict(verdicts), dict(findings), dict(by_ns))


def config_status(
    t: Totals,
    generation: int,
    error: str | None,
    old: Mapping[str, Any] | None,
    migration: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """Desired SimulationConfig status: totals per verdict, findings per code, pods per migration class
    in each phase (every class, zeros included), a Ready condition."""
    counts = {v: t.verdicts.get(v, 0) for v in VERDICTS}
    state, reason = ("False", "Refused") if error else ("True", "Applied")
    message = f"NMI would refuse this configuration: {error}" if error else "every pod is evaluated with it"
    return {
        "totals": {"pods": sum(counts.values()), **counts},
        "findings": dict(sorted(t.findings.items())),
        "migration": {p: dict(c) for p, c in migration.items()} if migration is not None else None,
        "observedGeneration": generation,
        "conditions": [ready(state, reason, message, generation, old)],
    }


def config_semantic(status: Mapping[str, Any] | None) -> str:
    return _object_semantic(
        status, {"totals": None, "findings": {}, "migration": None, "observedGeneration": None}
    )


__all__ = [
    "VERDICT_INACTIVE",
    "Totals",
    "config_semantic",
    "config_status",
    "epoch",
    "event_message",
    "event_reason",
    "exception_semantic",
    "exception_status",
    "matched_pods",
    "now",
    "ready_condition",
    "semantic",
    "totals",
    "verdict_status",
]
