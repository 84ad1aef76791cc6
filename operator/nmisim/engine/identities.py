"""Identity resolution: MIC's assignment (simulated or read from AzureAssignedIdentity objects), NMI's
retry loop over assigned-identity states, and NMI's final pick (nmi-semantics §1 binding matching, §2
"Standard mode identity selection", "Managed mode", "GetTokens").

Everything here is pure: the caller (:mod:`nmisim.engine.world`) hands in already-indexed candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from nmisim.engine.config import NMIConfig
from nmisim.engine.fold import equal_fold
from nmisim.engine.models import (
    ASSIGNED_ASSIGNED,
    ASSIGNED_CREATED,
    TYPE_USER_ASSIGNED_MSI,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    placeholder_in,
    valid_resource_id,
)

_REDACT: Final = re.compile(r"^(\S{4})(?:\S|\s)*(\S{4})$")

#: the panic NMI recovers into a 500 when namespace filtering leaves nothing (nmi-semantics §2 step 10)
PANIC_INDEX_OUT_OF_RANGE: Final = "runtime error: index out of range [0] with length 0"


def redact_client_id(value: str) -> str:
    """``pkg/utils`` RedactClientID: first 4 + ``##### REDACTED #####`` + last 4; shorter strings stay."""
    return _REDACT.sub(r"\1##### REDACTED #####\2", value)


def identity_is_namespaced(identity: AzureIdentity, nmi: NMIConfig) -> bool:
    """forceNamespaced, or the identity's ``aadpodidentity.k8s.io/Behavior: namespaced`` (§1)."""
    return nmi.force_namespaced or identity.namespaced


@dataclass(frozen=True, slots=True)
class AssignedEntry:
    """One assigned identity as NMI's standard-mode client sees it."""

    identity: AzureIdentity
    status: str
    #: what this entry stands for, for explanations, e.g. ``AzureAssignedIdentity default/x``
    source: str
    binding: str = ""


@dataclass(slots=True)
class MicOutcome:
    """What MIC would assign to a pod, plus the bindings it skipped and why."""

    entries: list[AssignedEntry] = field(default_factory=list)
    missing_identity: list[AzureIdentityBinding] = field(default_factory=list)
    namespaced_skipped: list[tuple[AzureIdentityBinding, AzureIdentity]] = field(default_factory=list)
    name_collisions: list[tuple[AzureIdentityBinding, AzureIdentity]] = field(default_factory=list)
    #: type-0 identities MIC ignores for an empty or malformed resourceID (nmi-semantics §8.10)
    invalid_resource_id: list[tuple[AzureIdentityBinding, AzureIdentity]] = field(default_factory=list)
    #: type-0 identities whose resourceID passes MIC's regex but holds a placeholder: their entries stay
    #: ``Created`` (the VM update fails)
    placeholder: list[tuple[AzureIdentityBinding, AzureIdentity]] = field(default_factory=list)


def simulate_mic(
    pod: Pod,
    bindings: Iterable[AzureIdentityBinding],
    get_identity: Callable[[str, str], AzureIdentity | None],
    nmi: NMIConfig,
) -> MicOutcome:
    """MIC's ``createDesiredAssignedIdentityList`` for one pod (nmi-semantics §1 "Matching in standard mode").

    ``bindings`` are those whose selector equals the pod's ``aadpodidbinding`` label (any namespace).
    They are taken in (namespace, name) order; a binding whose identity does not exist in the binding's
    namespace is skipped; with forceNamespaced or a namespaced identity, identity, binding and pod must share
    a namespace. MIC names the assigned identity ``<pod>-<podNamespace>-<identityName>``, so a second identity
    with the same name collides and the first one wins (issue #1065). A type-0 identity whose resourceID
    fails ``utils.ValidateResourceID`` is not in MIC's identity map at all (``mic.go`` ``convertIDListToMap``,
    nmi-semantics §8.10), so its bindings assign nothing.

    MIC skips pods without ``spec.nodeName`` or without the label. A pod without a node cannot send requests
    yet and MIC assigns as soon as it is scheduled, so nmisim evaluates such a pod *as if scheduled*
    (this is what makes manifests checkable before they are applied). An empty label gives no entries.

    A type-0 identity whose resourceID passes the regex but holds a placeholder (``/subscriptions/
    <SUBSCRIPTION_ID>/...``, :func:`nmisim.engine.models.placeholder_in`) gets its AzureAssignedIdentity,
    but Azure refuses the VM/VMSS update, so it stays ``Created`` (nmi-semantics §1 lifecycle step 5). The
    other identities of the same pod are still assigned, as upstream's e2e test expects
    (``test/e2e/invalid_identities_test.go`` "should assign the valid identity ... that contain invalid
    identities": the valid one ``Assigned``, the invalid ones ``Created``).
    """
    out = MicOutcome()
    if not pod.binding_label:
        return out
    seen_names: set[str] = set()
    for b in sorted(bindings, key=lambda x: (x.namespace, x.name)):
        ident = get_identity(b.namespace, b.azure_identity)
        if ident is None:
            out.missing_identity.append(b)
            continue
        if ident.type == TYPE_USER_ASSIGNED_MSI and not valid_resource_id(ident.resource_id):
            out.invalid_resource_id.append((b, ident))
            continue
        if identity_is_namespaced(ident, nmi) and not (ident.namespace == b.namespace == pod.namespace):
            out.namespaced_skipped.append((b, ident))
            continue
        if ident.name in seen_names:
            out.name_collisions.append((b, ident))
            continue
        seen_names.add(ident.name)
        status = ASSIGNED_ASSIGNED
        source = f"AzureIdentityBinding {b.key} (simulated MIC)"
        if ident.type == TYPE_USER_ASSIGNED_MSI and placeholder_in(ident.resource_id):
            out.placeholder.append((b, ident))
            status = ASSIGNED_CREATED
            source = (
                f"AzureIdentityBinding {b.key} (simulated MIC: VM update refused, placeholder resourceID)"
            )
        out.entries.append(AssignedEntry(ident, status, source, b.key))
    return out


def entries_from_assigned(objs: Iterable[AzureAssignedIdentity]) -> list[AssignedEntry]:
    """AzureAssignedIdentity objects NMI can see, as entries (the embedded identity is what NMI serves)."""
    out = []
    for a in sorted(objs, key=lambda x: (x.namespace, x.name)):
        if a.identity is None:
            continue
        src = f"AzureAssignedIdentity {a.namespace}/{a.name} (status {a.status or 'empty'})"
        out.append(AssignedEntry(a.identity, a.status, src, a.binding_name))
    return out


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """Result of NMI's ``listPodIDsWithRetry``."""

    entries: tuple[AssignedEntry, ...] | None
    error: str | None
    wait_seconds: float
    attempts: int
    #: which rule ended the loop, for explanations
    reason: str


def _present(entries: Sequence[AssignedEntry], client_id: str, res_id: str) -> list[AssignedEntry]:
    if not client_id and not res_id:
        return list(entries)
    out = []
    for e in entries:
        ident = e.identity
        if (client_id and equal_fold(ident.client_id, client_id)) or (
            res_id and equal_fold(ident.resource_id, res_id)
        ):
            out.append(e)
    return out


def poll_assigned(  # noqa: PLR0917
    entries: Sequence[AssignedEntry],
    pod_namespace: str,
    pod_name: str,
    nmi: NMIConfig,
    client_id: str = "",
    res_id: str = "",
) -> PollOutcome:
    """NMI's retry loop over assigned-identity states (nmi-semantics §2 standard mode).

    Each attempt: legacy entries with empty status win; else all ``Assigned`` entries; else, with no
    ``Created`` entry and attempt >= C, fail with the CREATED error; otherwise sleep I and retry, giving up
    after C+A attempts with the ASSIGNED error. With client_id/res_id, "present" means an entry whose
    clientID or resourceID equals the requested one ignoring case. Entries are a static snapshot, so the
    outcome is known at attempt 0 and the wait is ``sleeps * I``: C*I (80 s) for no assigned identity at
    all, (C+A)*I (100 s) for one stuck in Created.
    """
    c, a, i = (
        nmi.retry_attempts_for_created,
        nmi.retry_attempts_for_assigned,
        nmi.find_identity_retry_interval_seconds,
    )
    by_status: dict[str, list[AssignedEntry]] = {}
    for e in entries:
        by_status.setdefault(e.status, []).append(e)
    legacy = _present(by_status.get("", []), client_id, res_id)
    assigned = _present(by_status.get(ASSIGNED_ASSIGNED, []), client_id, res_id)
    created = _present(by_status.get(ASSIGNED_CREATED, []), client_id, res_id)
    # standard.go listPodIDsWithRetry: only the CREATED-state error carries this prefix (nmi-semantics §8.7)
    prefix = f"clientID in request: {redact_client_id(client_id)}, " if (client_id or res_id) else ""
    suffix = f"retry duration [{i}]s, error: <nil>. Check MIC pod logs for identity assignment errors"
    total = c + a
    if total > 0 and legacy:
        return PollOutcome(
            tuple(by_status[""]), None, 0, 1, "an assigned identity with empty status (legacy)"
        )
    if total > 0 and assigned:
        return PollOutcome(
            tuple(by_status[ASSIGNED_ASSIGNED]), None, 0, 1, "assigned identities in Assigned state"
        )
    if not created and c < total:
        err = (
            f"{prefix}getting assigned identities for pod {pod_namespace}/{pod_name} in CREATED state "
            f"failed after {c} attempts, {suffix}"
        )
        return PollOutcome(None, err, float(c * i), c, "no assigned identity in Created or Assigned state")
    err = (
        f"getting assigned identities for pod {pod_namespace}/{pod_name} in ASSIGNED state "
        f"failed after {total} attempts, {suffix}"
    )
    why = "assigned identity stuck in Created state" if created else "no assigned identity"
    return PollOutcome(None, err, float(total * i), total, why)


@dataclass(frozen=True, slots=True)
class Selection:
    """NMI's ``GetIdentities`` outcome: an identity, or an error with its HTTP status."""

    identity: AzureIdentity | None
    #: all identities a request with no client_id could get (sorted by namespace/name, deduplicated)
    candidates: tuple[AzureIdentity, ...]
    error: str | None
    status: int
    wait_seconds: float
    steps: tuple[str, ...]
    dropped_namespaced: tuple[AzureIdentity, ...] = ()


def _dedupe_sorted(idents: Iterable[AzureIdentity]) -> tuple[AzureIdentity, ...]:
    seen: dict[tuple[str, str], AzureIdentity] = {}
    for ident in idents:
        seen.setdefault((ident.namespace, ident.name), ident)
    return tuple(seen[k] for k in sorted(seen))


def no_identity_error(client_id: str) -> str:
    return f"no azure identity found for request clientID {redact_client_id(client_id)}"


def select_standard(
    entries: Sequence[AssignedEntry],
    pod: Pod,
    nmi: NMIConfig,
    client_id: str = "",
    res_id: str = "",
) -> Selection:
    """Standard-mode ``GetIdentities`` (nmi-semantics §2): poll, drop namespaced identities from other
    namespaces, then take the first (no id requested) or the first case-sensitive clientID/resourceID match.

    NMI's order is the informer's (not deterministic); nmisim uses (namespace, name) order and reports the
    ambiguity separately. A namespace filter that leaves nothing with no id requested is NMI's
    index-out-of-range panic, recovered as a 500 (§2 step 10, inference in the spec).
    """
    poll = poll_assigned(entries, pod.namespace, pod.name, nmi, client_id, res_id)
    steps = [f"NMI polled assigned identities: {poll.reason}"]
    if poll.entries is None:
        assert poll.error is not None
        return Selection(None, (), poll.error, 404, poll.wait_seconds, tuple(steps))
    kept: list[AzureIdentity] = []
    dropped: list[AzureIdentity] = []
    for e in poll.entries:
        ident = e.identity
        if identity_is_namespaced(ident, nmi) and ident.namespace != pod.namespace:
            dropped.append(ident)
        else:
            kept.append(ident)
    if dropped:
        why = (
            "forceNamespaced"
            if nmi.force_namespaced
            else "annotation aadpodidentity.k8s.io/Behavior: namespaced"
        )
        steps.append(
            f"dropped identities from other namespaces ({why}): "
            + ", ".join(i.key for i in _dedupe_sorted(dropped))
        )
    candidates = _dedupe_sorted(kept)
    if not client_id and not res_id:
        if not candidates:
            steps.append("no identity left after namespace filtering: NMI indexes an empty list and panics")
            return Selection(
                None, (), PANIC_INDEX_OUT_OF_RANGE, 500, poll.wait_seconds, tuple(steps), tuple(dropped)
            )
        chosen = candidates[0]
        steps.append(
            f"no client_id/msi_res_id in request: NMI takes the first identity, AzureIdentity {chosen.key}"
        )
        return Selection(chosen, candidates, None, 200, poll.wait_seconds, tuple(steps), tuple(dropped))
    for ident in candidates:
        if (client_id and ident.client_id == client_id) or (res_id and ident.resource_id == res_id):
            steps.append(f"requested identity matches AzureIdentity {ident.key} (case-sensitive)")
            return Selection(ident, candidates, None, 200, poll.wait_seconds, tuple(steps), tuple(dropped))
    steps.append("no identity's clientID/resourceID equals the requested one (case-sensitive comparison)")
    return Selection(
        None, candidates, no_identity_error(client_id), 404, poll.wait_seconds, tuple(steps), tuple(dropped)
    )


def select_managed(
    identities: Sequence[AzureIdentity],
    pod: Pod,
    client_id: str = "",
    res_id: str = "",
) -> Selection:
    """Managed-mode ``GetIdentities`` (``managed.go``; nmi-semantics §8.8): no MIC, no retries, no wait.

    ``identities`` are those named by bindings in the pod's namespace whose selector equals the pod's
    label value (``""`` when the pod has no label: the empty-selector quirk), looked up in the pod's
    namespace. One pass over them: the first whose clientID equals the requested client_id **or** whose
    resourceID equals the requested res_id (both case-sensitive) wins; with neither requested, the first
    one in the pod's namespace (EqualFold).
    """
    candidates = _dedupe_sorted(identities)
    unspecified = not client_id and not res_id
    for ident in candidates:
        if client_id and ident.client_id == client_id:
            return Selection(
                ident, candidates, None, 200, 0, (f"client_id matches AzureIdentity {ident.key}",)
            )
        if res_id and ident.resource_id == res_id:
            return Selection(
                ident, candidates, None, 200, 0, (f"resource id matches AzureIdentity {ident.key}",)
            )
        if unspecified and equal_fold(ident.namespace, pod.namespace):
            step = f"no client_id in request: NMI takes the first identity, AzureIdentity {ident.key}"
            return Selection(ident, candidates, None, 200, 0, (step,))
    step = "no identity bound to this pod in its namespace matches (managed mode: no retries)"
    return Selection(None, candidates, no_identity_error(client_id), 404, 0, (step,))
