"""Findings about objects rather than pods: each exception, binding and identity is reported once, also when
no pod uses it (:func:`object_findings`, ``World.object_findings()``).

A pod's own findings (:meth:`nmisim.engine.world.World.evaluate`) repeat an object's problem only when it is
why that pod's default token request fails; everything else about an object is said here, once.

What counts as "used" follows nmi-semantics §1:

* an AzurePodIdentityException is used when it exempts a pod: same namespace, any one of its ``podLabels``
  on the pod with an equal value ignoring case, the pod neither hostNetwork nor finished (such a pod's
  label match exempts nothing, §3 and §2 "Finding the pod"); empty ``podLabels`` match nothing;
* an AzureIdentityBinding is used when some pod's ``aadpodidbinding`` equals its selector (MIC compares
  bindings of every namespace in standard mode and never pods with an empty label, so an empty selector
  is never used there; in managed mode only pods of the binding's namespace count, and an empty selector
  matches their unlabelled pods);
* an AzureIdentity is used when a binding in its namespace names it (MIC and NMI look a binding's
  ``spec.azureIdentity`` up in the binding's namespace).

Every check is one pass over the world's objects; no pod is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from nmisim.engine import findings as F
from nmisim.engine.config import SimulationConfig
from nmisim.engine.findings import Finding
from nmisim.engine.fold import equal_fold
from nmisim.engine.models import (
    FINISHED_PHASES,
    KIND_BINDING,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    TYPE_USER_ASSIGNED_MSI,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    PodIdentityException,
    placeholder_in,
    valid_resource_id,
)
from nmisim.engine.nearmiss import NearMissIndex
from nmisim.engine.objecttexts import (
    capitalised_binding,
    capitalised_identity,
    invalid_resource_id,
    missing_identity,
    placeholder_identity,
)

#: how many pods a message names before "and N more"
SAMPLE: Final = 3


class ObjectWorld(Protocol):
    """What object findings read from the world (:class:`nmisim.engine.world.World`)."""

    @property
    def config(self) -> SimulationConfig: ...

    def pods(self) -> Iterator[Pod]: ...

    def exceptions(self, namespace: str | None = None) -> list[PodIdentityException]: ...

    def bindings(self) -> list[AzureIdentityBinding]: ...

    def identities(self) -> list[AzureIdentity]: ...

    def matching_exceptions(self, pod: Pod) -> list[str]: ...

    def get_identity(self, namespace: str, name: str) -> AzureIdentity | None: ...


@dataclass(frozen=True, slots=True, order=True)
class ObjectResult:
    """One object with its findings (sorted, deduplicated)."""

    namespace: str
    name: str
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "findings": [{**f.to_json(), "severity": f.level} for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class ObjectFindings:
    """Objects with at least one finding, per kind, each list sorted by (namespace, name)."""

    exceptions: tuple[ObjectResult, ...] = ()
    bindings: tuple[ObjectResult, ...] = ()
    identities: tuple[ObjectResult, ...] = ()

    def sections(self) -> tuple[tuple[str, tuple[ObjectResult, ...]], ...]:
        """``(kind, results)`` for exceptions, bindings and identities, in that order."""
        return (
            (KIND_EXCEPTION, self.exceptions),
            (KIND_BINDING, self.bindings),
            (KIND_IDENTITY, self.identities),
        )

    def __iter__(self) -> Iterator[tuple[str, ObjectResult]]:
        for kind, results in self.sections():
            for r in results:
                yield kind, r

    def __len__(self) -> int:
        return sum(len(r.findings) for _, r in self)

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """The ``exceptions``, ``bindings`` and ``identities`` keys of the EvaluationResult document."""
        return {
            "exceptions": [r.to_json() for r in self.exceptions],
            "bindings": [r.to_json() for r in self.bindings],
            "identities": [r.to_json() for r in self.identities],
        }


def _result(namespace: str, name: str, found: list[Finding]) -> ObjectResult | None:
    return ObjectResult(namespace, name, tuple(sorted(set(found)))) if found else None


def _sample(keys: list[str]) -> str:
    shown = ", ".join(keys[:SAMPLE])
    return shown + (f" and {len(keys) - SAMPLE} more" if len(keys) > SAMPLE else "")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}"


def _exemptable(pod: Pod) -> bool:
    return not pod.host_network and pod.phase not in FINISHED_PHASES


def _exception_findings(world: ObjectWorld, pods: list[Pod]) -> list[ObjectResult]:
    used: set[tuple[str, str]] = set()
    for p in pods:
        if _exemptable(p):
            used.update((p.namespace, n) for n in world.matching_exceptions(p))
    # pods elsewhere that carry an unused exception's labels: exceptions cover only their own namespace
    unused = [e for e in world.exceptions() if e.pod_labels and (e.namespace, e.name) not in used]
    by_label: dict[str, list[PodIdentityException]] = {}
    for e in unused:
        for k in e.pod_labels:
            by_label.setdefault(k, []).append(e)
    elsewhere: dict[tuple[str, str], list[str]] = {}
    if by_label:
        for p in pods:
            if not _exemptable(p):
                continue
            for k, v in p.labels.items():
                for e in by_label.get(k, ()):
                    if e.namespace != p.namespace and equal_fold(e.pod_labels[k], v):
                        keys = elsewhere.setdefault((e.namespace, e.name), [])
                        if f"{p.namespace}/{p.name}" not in keys:
                            keys.append(f"{p.namespace}/{p.name}")
    out = []
    for e in world.exceptions():
        found: list[Finding] = []
        key = (e.namespace, e.name)
        if e.ignored_fields:
            found.append(
                Finding(
                    F.CAPITALISED_FIELDS,
                    f"AzurePodIdentityException {e.namespace}/{e.name} uses spec.PodLabels, ignored since "
                    "aad-pod-identity v1.6.0: rename it to spec.podLabels",
                )
            )
        if not e.pod_labels and not e.ignored_pod_labels:
            found.append(
                Finding(
                    F.EMPTY_POD_LABELS_EXCEPTION,
                    f"AzurePodIdentityException {e.namespace}/{e.name} has empty spec.podLabels, which match "
                    "no pod (NMI has no namespace-wide exception): list the labels of the pods to exempt",
                )
            )
        elif e.pod_labels and key not in used:
            other = sorted(elsewhere.get(key, []))
            tail = (
                f"; pods in other namespaces carry them ({_sample(other)}), but an exception covers only "
                f"its own namespace: create one in theirs"
                if other
                else "; check the pods' labels (one label with an equal value, ignoring case, is enough)"
            )
            found.append(
                Finding(
                    F.UNUSED_EXCEPTION,
                    f"AzurePodIdentityException {e.namespace}/{e.name} exempts no pod: no running, "
                    f"non-hostNetwork pod in namespace {e.namespace} carries any of {_labels(e.pod_labels)}"
                    + tail,
                )
            )
        r = _result(e.namespace, e.name, found)
        if r is not None:
            out.append(r)
    return out


def _binding_used(world: ObjectWorld, b: AzureIdentityBinding, selectors: dict[str, set[str]]) -> bool:
    namespaces = selectors.get(b.selector, set())
    if world.config.managed:
        return b.namespace in namespaces
    return bool(b.selector) and bool(namespaces)


def _binding_findings(world: ObjectWorld, pods: list[Pod]) -> list[ObjectResult]:
    # label value -> namespaces of pods carrying it (managed mode counts an unlabelled pod as "")
    selectors: dict[str, set[str]] = {}
    pods_by_label: dict[str, list[str]] = {}
    for p in pods:
        selectors.setdefault(p.binding_label, set()).add(p.namespace)
        if p.binding_label:
            pods_by_label.setdefault(p.binding_label, []).append(f"{p.namespace}/{p.name}")
    near: NearMissIndex | None = None
    out = []
    for b in world.bindings():
        found: list[Finding] = []
        if b.ignored_fields:
            found.append(capitalised_binding(b))
        if world.get_identity(b.namespace, b.azure_identity) is None:
            found.append(missing_identity(b))
        if not _binding_used(world, b, selectors):
            if near is None:
                near = NearMissIndex(pods_by_label)
            close = [v for v in near.near(b.selector) if v not in (b.selector,)] if b.selector else []
            if close:
                hint = "; did you mean " + ", ".join(
                    f"'{v}' (aadpodidbinding of {_sample(sorted(pods_by_label[v]))})" for v in close
                )
            elif not b.selector and not world.config.managed:
                hint = "; MIC never matches an empty selector: set spec.selector"
            else:
                hint = "; label the pods aadpodidbinding=" + (b.selector or "<selector>")
            where = f" in namespace {b.namespace}" if world.config.managed else ""
            found.append(
                Finding(
                    F.ORPHAN_BINDING,
                    f"AzureIdentityBinding {b.key} selects no pod: no pod{where} has aadpodidbinding="
                    f"'{b.selector}'" + hint,
                )
            )
        r = _result(b.namespace, b.name, found)
        if r is not None:
            out.append(r)
    return out


def _identity_findings(world: ObjectWorld) -> list[ObjectResult]:
    named = {(b.namespace, b.azure_identity) for b in world.bindings()}
    out = []
    for ident in world.identities():
        found: list[Finding] = []
        if ident.ignored_fields:
            found.append(capitalised_identity(ident))
        rid_placeholder = placeholder_in(ident.resource_id)
        if rid_placeholder or placeholder_in(ident.client_id):
            found.append(placeholder_identity(ident))
        if (
            ident.type == TYPE_USER_ASSIGNED_MSI
            and not valid_resource_id(ident.resource_id)
            and not rid_placeholder
        ):
            found.append(invalid_resource_id(ident))
        if ident.behavior_near_miss:
            found.append(_behavior_case(ident))
        if (ident.namespace, ident.name) not in named:
            found.append(
                Finding(
                    F.UNBOUND_IDENTITY,
                    f"AzureIdentity {ident.key} is named by no AzureIdentityBinding in namespace "
                    f"{ident.namespace}, so no pod can use it",
                )
            )
        r = _result(ident.namespace, ident.name, found)
        if r is not None:
            out.append(r)
    return out


def _behavior_case(ident: AzureIdentity) -> Finding:
    """``IsNamespacedIdentity`` looks up the exact key and compares the value with ``==``
    (``pkg/apis/aadpodidentity/utils.go``), so ``Behavior: Namespaced`` leaves the identity cluster-wide."""
    return Finding(
        F.BEHAVIOR_ANNOTATION_CASE,
        f"AzureIdentity {ident.key} is annotated '{ident.behavior_near_miss}', which NMI and MIC do not "
        "honour (they compare key and value exactly), so pods of other namespaces can still use it: write "
        "aadpodidentity.k8s.io/Behavior: namespaced",
    )


def object_findings(world: ObjectWorld) -> ObjectFindings:
    """Findings of every exception, binding and identity in ``world`` (objects without any are left out)."""
    pods = list(world.pods())
    return ObjectFindings(
        exceptions=tuple(_exception_findings(world, pods)),
        bindings=tuple(_binding_findings(world, pods)),
        identities=tuple(_identity_findings(world)),
    )
