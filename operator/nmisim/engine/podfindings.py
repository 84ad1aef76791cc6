"""A pod's own findings (product.md §2 ``findings``): what is wrong for this pod, derived from its verdict,
its default token request's answer and the objects NMI looked at for it.

A problem that belongs to one object (a binding naming a missing identity, an identity's bad resourceID,
capitalised fields, ...) is said once by :mod:`nmisim.engine.objects`; a pod repeats it only when it is why
the pod's default token request fails. The codes, severities and descriptions are
:mod:`nmisim.engine.findings`'; the texts shared with object findings are :mod:`nmisim.engine.objecttexts`'.

Everything is read through two small Protocols: :class:`FindingsWorld` (the world's indexes:
:class:`nmisim.engine.world.World`) and :class:`PodScope` (what one evaluation already computed about the
pod: ``World.evaluate``'s scope), so this module never imports the world.
"""

from __future__ import annotations

from typing import Final, Protocol

from nmisim.engine import findings as F
from nmisim.engine.config import SimulationConfig
from nmisim.engine.findings import Finding
from nmisim.engine.fold import equal_fold
from nmisim.engine.http import DEFAULT_REQUEST, SERVED_BY_NMI, TARGET_NMI, RequestResult, json_number
from nmisim.engine.identities import MicOutcome, Selection
from nmisim.engine.imds import ERR_IDENTITY_NOT_FOUND
from nmisim.engine.models import (
    ASSIGNED_ASSIGNED,
    ASSIGNED_CREATED,
    BINDING_LABEL,
    LOOKUP_PHASES,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    placeholder_in,
)
from nmisim.engine.nearmiss import is_near_miss
from nmisim.engine.objecttexts import (
    capitalised_binding,
    capitalised_identity,
    invalid_resource_id,
    invalid_resource_id_cause,
    missing_identity,
    missing_identity_cause,
    placeholder_identity,
)
from nmisim.engine.routes import Cluster, simulate_request
from nmisim.engine.verdict import VERDICT_BYPASS, VERDICT_EXEMPT

AKS_MANAGED_LABEL: Final = "kubernetes.azure.com/managedby"
KUBE_SYSTEM: Final = "kube-system"


class FindingsWorld(Protocol):
    """What a pod's findings read from the world's indexes (:class:`nmisim.engine.world.World`)."""

    @property
    def config(self) -> SimulationConfig: ...

    def pods_at(self, node: str, ip: str) -> list[Pod]: ...

    def get_identity(self, namespace: str, name: str) -> AzureIdentity | None: ...

    def ignored_exceptions(self, pod: Pod) -> list[str]: ...

    def managed_bindings(self, pod: Pod) -> list[AzureIdentityBinding]: ...

    def bindings_with_selector(self, selector: str) -> list[AzureIdentityBinding]: ...

    def bindings_with_ignored_selector(self, selector: str) -> list[AzureIdentityBinding]: ...

    def bindings_with_folded_selector(self, selector: str) -> list[AzureIdentityBinding]: ...

    def near_selectors(self, value: str) -> list[str]: ...


class AssignedView(Protocol):
    """A pod's assigned identities as NMI on its own node sees them (standard mode): MIC's simulated
    outcome, or the AzureAssignedIdentities of the input (``aai``) and those labelled for another node."""

    @property
    def mic(self) -> MicOutcome | None: ...

    @property
    def hidden(self) -> list[AzureAssignedIdentity]: ...

    @property
    def aai(self) -> list[AzureAssignedIdentity]: ...


class PodScope(Cluster, Protocol):
    """The world as one evaluation of :attr:`pod` sees it (a :class:`nmisim.engine.routes.Cluster`), with
    what that evaluation computes once: the pod's assigned identities and its default identity selection."""

    @property
    def pod(self) -> Pod: ...

    def standard_info(self) -> AssignedView: ...

    def default_selection(self) -> Selection: ...


def pod_findings(
    world: FindingsWorld, scope: PodScope, verdict: str, res: RequestResult
) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    """The findings of ``scope.pod`` (sorted, deduplicated) and its candidate identities (intercepted pods
    only), given its ``verdict`` (not inactive) and its default token request's answer ``res``."""
    pod = scope.pod
    out: list[Finding] = []
    identities: tuple[str, ...] = ()
    _capitalised_exception_findings(world, pod, out)
    if verdict == VERDICT_BYPASS:
        _bypass_findings(world, scope, res, out)
    elif verdict == VERDICT_EXEMPT:
        excs = tuple(scope.matching_exceptions(pod))
        _exempt_findings(pod, excs, scope.is_mic(pod), res, out)
    else:
        identities = _intercepted_findings(world, scope, res, out)
    return tuple(sorted(set(out))), identities


def _capitalised_exception_findings(world: FindingsWorld, pod: Pod, out: list[Finding]) -> None:
    for name in world.ignored_exceptions(pod):
        out.append(
            Finding(
                F.CAPITALISED_FIELDS,
                f"AzurePodIdentityException {pod.namespace}/{name} uses spec.PodLabels, ignored since "
                "aad-pod-identity v1.6.0: rename it to spec.podLabels",
            )
        )


def _bypass_findings(world: FindingsWorld, scope: PodScope, res: RequestResult, out: list[Finding]) -> None:
    out.append(
        Finding(
            F.HOST_NETWORK_BYPASS,
            "hostNetwork pod: NMI never sees its IMDS traffic and it "
            "can use any identity on the node's VM; "
            "drop hostNetwork if it must be restricted to its binding",
        )
    )
    exposed = _node_ip_identity(world, scope)
    if exposed is not None:
        out.append(exposed)
    if res.status != 200:
        out.append(
            Finding(
                F.BYPASS_POD_IMDS_ERROR,
                f"default token request fails at IMDS ({res.status}: {_imds_error(res.body)}); "
                "send client_id or fix spec.imds for the node",
            )
        )


def _node_ip_identity(world: FindingsWorld, scope: PodScope) -> Finding | None:
    """A hostNetwork pod NMI would serve a pod identity: NMI's lookup by IP ignores hostNetwork
    (``pkg/k8s/client.go`` ``getPodList``, nmi-semantics §8.4), so a caller of NMI's own port from the
    node IP is taken for this pod whenever it is the only Pending/Running pod with that IP. Its own
    IMDS traffic never reaches NMI, so the binding serves only other processes on the node."""
    pod = scope.pod
    if not pod.pod_ip or not pod.node_name or (pod.phase is not None and pod.phase not in LOOKUP_PHASES):
        return None
    solo = simulate_request(scope, DEFAULT_REQUEST, pod=pod, assume_found=True, target=TARGET_NMI)
    if solo.status != 200 or solo.served_by != SERVED_BY_NMI:
        return None
    where = f"IP {pod.pod_ip} on node {pod.node_name}"
    fix = (
        "remove its aadpodidbinding label (the pod's own IMDS requests go to IMDS directly, so the "
        "binding serves only other processes on the node)"
    )
    sharing = world.pods_at(pod.node_name, pod.pod_ip)
    if any(p.name != pod.name or p.namespace != pod.namespace for p in sharing):
        return Finding(
            F.HOST_NETWORK_IDENTITY_EXPOSED,
            f"NMI looks callers of its own port up by IP and ignores hostNetwork: other Pending/Running "
            f"pods share {where}, so such callers get 500 'failed to match pod IP' today, but once this "
            f"pod is alone there any process on the node reaching NMI's port from that IP gets identity "
            f"{solo.identity}; {fix}",
        )
    return Finding(
        F.HOST_NETWORK_IDENTITY_EXPOSED,
        f"NMI looks callers of its own port up by IP and ignores hostNetwork: this pod is the only "
        f"Pending/Running pod with {where}, so any process on the node reaching NMI's port from that IP "
        f"(NMI listening beyond 127.0.0.1, or a client binding the node IP) gets identity "
        f"{solo.identity}; {fix}",
    )


def _exempt_findings(
    pod: Pod, excs: tuple[str, ...], mic: bool, res: RequestResult, out: list[Finding]
) -> None:
    if pod.binding_label and excs:
        out.append(
            Finding(
                F.EXEMPT_POD_HAS_BINDING,
                f"pod is exempt through AzurePodIdentityException {pod.namespace}/{excs[0]}, so NMI "
                f"ignores its aadpodidbinding={pod.binding_label} label; "
                "remove the label or the matching exception",
            )
        )
    elif pod.binding_label:
        # isMIC (nmi-semantics §2 step 6): no exception is involved, so none can be removed
        out.append(
            Finding(
                F.EXEMPT_POD_HAS_BINDING,
                f"pod is exempt through NMI's MIC shortcut (namespace {pod.namespace} is --MICNamespace "
                f"and its ReplicaSet {pod.owner_replicaset} starts with 'mic'), so NMI ignores its "
                f"aadpodidbinding={pod.binding_label} label; if it is not MIC, rename its Deployment so "
                "the ReplicaSet name does not start with 'mic', or run it outside that namespace "
                "(NMI's --MICNamespace, spec.nmi.micNamespace)",
            )
        )
    if res.status != 200:
        out.append(
            Finding(
                F.EXEMPT_POD_IMDS_ERROR,
                f"exempt pod's default token request gets {res.status}: IMDS said "
                f"'{_imds_error(res.error or '')}' because NMI forwards no identity; pass client_id",
            )
        )


def _intercepted_findings(
    world: FindingsWorld, scope: PodScope, res: RequestResult, out: list[Finding]
) -> tuple[str, ...]:
    """Findings of an intercepted pod. A problem that belongs to one object (a binding naming a missing
    identity, an identity's bad resourceID, capitalised fields, ...) is reported once in
    :func:`nmisim.engine.objects.object_findings`; the pod repeats it only when its own default token
    request fails (``failed``), where it is the reason."""
    cfg = world.config
    pod = scope.pod
    sel = scope.default_selection()
    failed = res.status != 200
    identities = tuple(i.key for i in sel.candidates)
    if equal_fold(pod.labels.get(AKS_MANAGED_LABEL, ""), "aks"):
        out.append(_aks_addon_not_exempt(pod.namespace))
    if len(identities) > 1:
        out.append(
            Finding(
                F.AMBIGUOUS_IDENTITY,
                f"{len(identities)} identities match ({', '.join(identities)}) and NMI picks one at "
                "random when no client_id is sent; send client_id or keep one binding per selector",
            )
        )
    for ident in sel.candidates:
        if ident.namespace != pod.namespace:
            out.append(
                Finding(
                    F.CROSS_NAMESPACE_BINDING,
                    f"pod uses AzureIdentity {ident.key} from another namespace; set forceNamespaced or "
                    "annotate the identity aadpodidentity.k8s.io/Behavior: namespaced to forbid this",
                )
            )
        if ident.type not in (0, 1, 2):
            out.append(
                Finding(
                    F.UNSUPPORTED_IDENTITY_TYPE,
                    f"AzureIdentity {ident.key} has spec.type {ident.type}; NMI answers 503 'unsupported "
                    "identity type': use 0 (user-assigned MSI), 1 (SP secret) or 2 (SP certificate)",
                )
            )
        if failed and ident.ignored_fields:
            out.append(capitalised_identity(ident))
        if failed and (placeholder_in(ident.client_id) or placeholder_in(ident.resource_id)):
            out.append(placeholder_identity(ident))
    causes: list[str] = []
    if cfg.managed:
        _managed_findings(world, pod, out, causes, failed=failed)
    else:
        _standard_findings(world, pod, scope.standard_info(), out, causes, failed=failed)
    label = pod.binding_label
    exact = bool(label) and bool(world.bindings_with_selector(label))
    if label:
        for b in world.bindings_with_ignored_selector(label):
            if failed:
                out.append(capitalised_binding(b))
            causes.append(f"AzureIdentityBinding {b.key} has the selector under spec.Selector (ignored)")
        if not exact:
            for b in world.bindings_with_folded_selector(label):
                if cfg.managed and b.namespace != pod.namespace:
                    continue
                out.append(
                    Finding(
                        F.SELECTOR_CASE_MISMATCH,
                        f"AzureIdentityBinding {b.key} has selector '{b.selector}' but the pod's "
                        f"aadpodidbinding is '{label}'; selectors compare case-sensitively",
                    )
                )
                causes.append(f"AzureIdentityBinding {b.key} has selector '{b.selector}' (case differs)")
            _near_miss_findings(world, pod, out, causes)
    else:
        _label_key_findings(world, pod, out, causes)
    if sel.identity is None and res.status in (404, 503) and res.azure_identity is None:
        if causes:
            hint = "; ".join(causes)
        elif not label and not (cfg.managed and world.bindings_with_selector("")):
            hint = "label the pod aadpodidbinding=<selector> or exempt it with an AzurePodIdentityException"
        elif exact and cfg.managed:
            hint = f"no AzureIdentityBinding in namespace {pod.namespace} has selector '{label}'"
        else:
            hint = f"create an AzureIdentityBinding with selector '{label}' and its AzureIdentity"
        wait = f" after {json_number(res.wait_seconds)} s" if res.wait_seconds else ""
        # a pod nobody labelled for an identity is told how NMI treats it (info); one that asks for an
        # identity and gets none is an error (the table's)
        out.append(
            Finding(
                F.NO_IDENTITY,
                f"token requests fail with {res.status}{wait}: no identity; {hint}",
                "" if label else F.SEVERITY_INFO,
            )
        )
    if (
        cfg.managed
        and res.azure_identity is not None
        and res.status == 403
        and ERR_IDENTITY_NOT_FOUND in (res.error or "")
        and not placeholder_in(res.azure_identity.client_id)
    ):
        ident = res.azure_identity
        out.append(
            Finding(
                F.IDENTITY_NOT_ON_NODE,
                f"AzureIdentity {ident.key} (clientID {ident.client_id}) is not on node "
                f"{pod.node_name or '(unscheduled)'}'s VM in spec.imds: managed mode needs "
                "'az vmss identity assign'",
            )
        )
    return identities


def _near_miss_findings(world: FindingsWorld, pod: Pod, out: list[Finding], causes: list[str]) -> None:
    """The pod's ``aadpodidbinding`` value equals no selector but is one typo away from some."""
    label = pod.binding_label
    for selector in world.near_selectors(label):
        bs = [
            b
            for b in world.bindings_with_selector(selector)
            if not world.config.managed or b.namespace == pod.namespace
        ]
        if not bs:
            continue
        names = ", ".join(b.key for b in bs)
        out.append(
            Finding(
                F.SELECTOR_NEAR_MISS,
                f"no AzureIdentityBinding has selector '{label}'; did you mean '{selector}' "
                f"(AzureIdentityBinding {names})? selectors compare exactly: fix the pod's "
                "aadpodidbinding label or the binding's spec.selector",
            )
        )
        causes.append(f"no AzureIdentityBinding has selector '{label}' (did you mean '{selector}'?)")


def _label_key_findings(world: FindingsWorld, pod: Pod, out: list[Finding], causes: list[str]) -> None:
    """A label key that means ``aadpodidbinding`` but is not it (NMI and MIC read the exact key)."""
    for key in sorted(pod.labels):
        if key == BINDING_LABEL or not (equal_fold(key, BINDING_LABEL) or is_near_miss(key, BINDING_LABEL)):
            continue
        value = pod.labels[key]
        bound = world.bindings_with_selector(value) if value else []
        tail = f" (AzureIdentityBinding {bound[0].key} has selector '{value}')" if bound else ""
        out.append(
            Finding(
                F.SELECTOR_NEAR_MISS,
                f"label '{key}: {value}' is not aadpodidbinding{tail}: MIC and NMI read only the exact "
                f"key, so this pod has no binding; rename the label to {BINDING_LABEL}",
            )
        )
        causes.append(f"its label '{key}' is not {BINDING_LABEL}: rename it")


def _managed_findings(
    world: FindingsWorld, pod: Pod, out: list[Finding], causes: list[str], *, failed: bool
) -> None:
    for b in world.managed_bindings(pod):
        if world.get_identity(pod.namespace, b.azure_identity) is None:
            if failed:
                out.append(missing_identity(b))
            causes.append(missing_identity_cause(b))
        if b.selector == "" and not pod.binding_label:
            out.append(
                Finding(
                    F.EMPTY_SELECTOR_BINDING,
                    f"AzureIdentityBinding {b.key} has an empty selector "
                    "and matches every pod without an "
                    "aadpodidbinding label in managed mode; set spec.selector",
                )
            )


def _standard_findings(
    world: FindingsWorld, pod: Pod, info: AssignedView, out: list[Finding], causes: list[str], *, failed: bool
) -> None:
    if info.mic is not None:
        for b in info.mic.missing_identity:
            if failed:
                out.append(missing_identity(b))
            causes.append(missing_identity_cause(b))
        for b, ident in info.mic.namespaced_skipped:
            out.append(
                Finding(
                    F.NAMESPACED_BINDING_IGNORED,
                    f"AzureIdentityBinding {b.key} -> AzureIdentity "
                    f"{ident.key} is ignored: namespaced mode "
                    f"needs identity, binding and pod all in namespace {pod.namespace}",
                )
            )
            causes.append(f"AzureIdentityBinding {b.key} -> {ident.key} is ignored in namespaced mode")
        for b, ident in info.mic.invalid_resource_id:
            if failed:
                out.append(invalid_resource_id(ident, b))
            causes.append(invalid_resource_id_cause(ident, b))
        for b, ident in info.mic.placeholder:
            if failed:
                out.append(placeholder_identity(ident))
            causes.append(
                f"AzureIdentity {ident.key} (via {b.key}) has a placeholder in spec.resourceID, so "
                "Azure refuses MIC's VM update and its AzureAssignedIdentity stays Created"
            )
        for b, ident in info.mic.name_collisions:
            out.append(
                Finding(
                    F.ASSIGNED_IDENTITY_NAME_COLLISION,
                    f"AzureIdentity {ident.key} (via {b.key}) has the same "
                    "name as an earlier identity; MIC's "
                    "assigned-identity name collides and only the first is assigned: rename one",
                )
            )
    for a in info.hidden:
        out.append(
            Finding(
                F.ASSIGNED_IDENTITY_OTHER_NODE,
                f"AzureAssignedIdentity {a.namespace}/{a.name} is "
                f"labelled nodename={a.node_label or ''} but "
                f"the pod runs on {pod.node_name}; NMI there cannot see it",
            )
        )
        causes.append(f"AzureAssignedIdentity {a.namespace}/{a.name} is labelled for another node")
    visible = [a for a in info.aai if a not in info.hidden]
    if any(a.status == ASSIGNED_CREATED for a in visible) and not any(
        a.status in (ASSIGNED_ASSIGNED, "") for a in visible
    ):
        stuck = ", ".join(f"{a.namespace}/{a.name}" for a in visible if a.status == ASSIGNED_CREATED)
        n = world.config.nmi
        wait = (
            n.retry_attempts_for_created + n.retry_attempts_for_assigned
        ) * n.find_identity_retry_interval_seconds
        out.append(
            Finding(
                F.ASSIGNED_IDENTITY_STUCK_CREATED,
                f"AzureAssignedIdentity {stuck} is stuck in Created: requests wait {wait} s then 404; "
                "check MIC logs for the VM/VMSS identity assignment error",
            )
        )
        causes.append(f"AzureAssignedIdentity {stuck} is stuck in Created")


def _aks_addon_not_exempt(namespace: str) -> Finding:
    """An intercepted pod labelled ``kubernetes.azure.com/managedby: aks`` (nmi-semantics §5, §6.1).

    Upstream's ``aks-addon-exception`` lives in ``kube-system`` and NMI looks for exceptions only in the
    pod's own namespace, so add-ons elsewhere (e.g. ``gatekeeper-system``) need their own exception.
    """
    if namespace == KUBE_SYSTEM:
        return Finding(
            F.AKS_ADDON_NOT_EXEMPT,
            "AKS add-on pod (kubernetes.azure.com/managedby=aks) is intercepted: create aks-addon-exception "
            "in kube-system with podLabels {kubernetes.azure.com/managedby: aks}",
        )
    return Finding(
        F.AKS_ADDON_NOT_EXEMPT,
        f"AKS add-on pod (kubernetes.azure.com/managedby=aks) in namespace {namespace} is intercepted: NMI "
        "only honours exceptions in the pod's own namespace, so kube-system's aks-addon-exception does not "
        f"cover it; create an AzurePodIdentityException in {namespace} with podLabels "
        "{kubernetes.azure.com/managedby: aks}",
    )


def _imds_error(text: str) -> str:
    for marker in ('"error_description":"', 'error_description": "'):
        i = text.find(marker)
        if i >= 0:
            rest = text[i + len(marker) :]
            return rest.split('"', 1)[0]
    return text.strip()
