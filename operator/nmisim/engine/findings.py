"""Audit findings with stable codes.

Codes are part of nmisim's public interface (verdict status, metrics labels, CI checks): never rename one.
This module holds the codes, severities and descriptions; a pod's findings are derived in
:mod:`nmisim.engine.podfindings`, the objects' in :mod:`nmisim.engine.objects`.
Each finding is a single actionable line. Messages are deterministic (no timestamps, sorted names) so
that a result only changes when the world changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Exempt pod carrying `aadpodidbinding`: NMI ignores the binding (nmi-semantics §1, §2 step 6).
EXEMPT_POD_HAS_BINDING: Final = "ExemptPodHasBinding"
# Pod labelled kubernetes.azure.com/managedby=aks that is intercepted, in kube-system or in any other
# namespace, where kube-system's aks-addon-exception does not reach (§5, §6.1).
AKS_ADDON_NOT_EXEMPT: Final = "AKSAddonNotExempt"
# hostNetwork pod: never reaches NMI, IMDS answers directly (§3, §6.5).
HOST_NETWORK_BYPASS: Final = "HostNetworkBypass"
# More than one candidate identity; NMI's pick is not deterministic (§2 standard mode, §6.9).
AMBIGUOUS_IDENTITY: Final = "AmbiguousIdentity"
# Intercepted pod without any identity: token requests fail after NMI's retries (§2, §6.6).
NO_IDENTITY: Final = "NoIdentity"
# The pod uses a binding or identity from another namespace (§1 cross-namespace default, §6.13).
CROSS_NAMESPACE_BINDING: Final = "CrossNamespaceBinding"
# Pre-1.6 capitalised fields (PodLabels, Selector, AzureIdentity, ClientID, ...) are ignored (§1, §6.15).
CAPITALISED_FIELDS: Final = "CapitalisedFields"
# AzureIdentity spec.type outside 0/1/2 (§1 AzureIdentity).
UNSUPPORTED_IDENTITY_TYPE: Final = "UnsupportedIdentityType"
# AzureAssignedIdentity stuck in Created: ~100 s wait then 404 (§1 lifecycle, §2 standard mode).
ASSIGNED_IDENTITY_STUCK_CREATED: Final = "AssignedIdentityStuckCreated"
# A binding names an AzureIdentity that does not exist in the binding's namespace (§1 binding).
BINDING_IDENTITY_MISSING: Final = "BindingIdentityMissing"
# A binding matched by label but dropped by forceNamespaced / the namespaced annotation (§1).
NAMESPACED_BINDING_IGNORED: Final = "NamespacedBindingIgnored"
# Managed mode: a binding with an empty selector matches every unlabelled pod (§1 managed quirk).
EMPTY_SELECTOR_BINDING: Final = "EmptySelectorBinding"
# Exempt pod whose default token request fails at IMDS (no client_id forwarded; §6.3, §7).
EXEMPT_POD_IMDS_ERROR: Final = "ExemptPodIMDSError"
# hostNetwork pod whose default token request fails at IMDS (§6.4, §7).
BYPASS_POD_IMDS_ERROR: Final = "BypassPodIMDSError"
# Identity chosen by NMI is not assigned to the node's VM in managed mode (§2 managed mode, §7).
IDENTITY_NOT_ON_NODE: Final = "IdentityNotOnNode"
# The pod's label has the right value only case-insensitively; selectors are case-sensitive (§1).
SELECTOR_CASE_MISMATCH: Final = "SelectorCaseMismatch"
# AzureAssignedIdentity for this pod is labelled for another node; NMI there cannot see it (§2).
ASSIGNED_IDENTITY_OTHER_NODE: Final = "AssignedIdentityOtherNode"
# Two identities with the same name collide on MIC's assigned-identity name (issue #1065, §1).
ASSIGNED_IDENTITY_NAME_COLLISION: Final = "AssignedIdentityNameCollision"
# A type-0 AzureIdentity with an empty or malformed resourceID, which MIC ignores (§8.10).
INVALID_RESOURCE_ID: Final = "InvalidResourceID"
# hostNetwork pod NMI would serve its bound identity to a caller of NMI's own port from the node IP:
# NMI's lookup by IP ignores hostNetwork (pkg/k8s/client.go getPodList, §8.4).
HOST_NETWORK_IDENTITY_EXPOSED: Final = "HostNetworkIdentityExposed"
# A workload carries aadpodidbinding on its own metadata but not on its pod template (upstream #1074).
BINDING_LABEL_ON_WORKLOAD: Final = "BindingLabelOnWorkload"
# Object-level (World.object_findings, engine/objects.py) unless noted:
# An AzurePodIdentityException whose podLabels match no pod in its namespace (§1 exception matching).
UNUSED_EXCEPTION: Final = "UnusedException"
# An AzurePodIdentityException with empty podLabels, which matches no pod at all (§1: "empty podLabels
# matches nothing"; there is no namespace-wide exception, §6.2).
EMPTY_POD_LABELS_EXCEPTION: Final = "EmptyPodLabelsException"
# An AzureIdentityBinding whose selector no pod's aadpodidbinding label equals (§1 binding matching).
ORPHAN_BINDING: Final = "OrphanBinding"
# An AzureIdentity no AzureIdentityBinding names (§1: bindings name identities in their own namespace).
UNBOUND_IDENTITY: Final = "UnboundIdentity"
# A template placeholder (<...>, SUBSCRIPTION_ID, the zero GUID, ...) in spec.resourceID/clientID: MIC's VM
# assignment fails and the AzureAssignedIdentity stays Created (test/e2e/invalid_identities_test.go).
PLACEHOLDER_IDENTITY: Final = "PlaceholderIdentity"
# aadpodidentity.k8s.io/Behavior annotation differing in case/spaces: NMI compares key and value exactly,
# so the identity is not namespaced (pkg/apis/aadpodidentity/utils.go IsNamespacedIdentity, §1).
BEHAVIOR_ANNOTATION_CASE: Final = "BehaviorAnnotationCase"
# Per pod: its aadpodidbinding value (or a misspelt label key) is one typo away from a binding's selector.
SELECTOR_NEAR_MISS: Final = "SelectorNearMiss"

ALL_CODES: Final = (
    EXEMPT_POD_HAS_BINDING,
    AKS_ADDON_NOT_EXEMPT,
    HOST_NETWORK_BYPASS,
    AMBIGUOUS_IDENTITY,
    NO_IDENTITY,
    CROSS_NAMESPACE_BINDING,
    CAPITALISED_FIELDS,
    UNSUPPORTED_IDENTITY_TYPE,
    ASSIGNED_IDENTITY_STUCK_CREATED,
    BINDING_IDENTITY_MISSING,
    NAMESPACED_BINDING_IGNORED,
    EMPTY_SELECTOR_BINDING,
    EXEMPT_POD_IMDS_ERROR,
    BYPASS_POD_IMDS_ERROR,
    IDENTITY_NOT_ON_NODE,
    SELECTOR_CASE_MISMATCH,
    ASSIGNED_IDENTITY_OTHER_NODE,
    ASSIGNED_IDENTITY_NAME_COLLISION,
    INVALID_RESOURCE_ID,
    HOST_NETWORK_IDENTITY_EXPOSED,
    BINDING_LABEL_ON_WORKLOAD,
    UNUSED_EXCEPTION,
    EMPTY_POD_LABELS_EXCEPTION,
    ORPHAN_BINDING,
    UNBOUND_IDENTITY,
    PLACEHOLDER_IDENTITY,
    BEHAVIOR_ANNOTATION_CASE,
    SELECTOR_NEAR_MISS,
)


SEVERITY_ERROR: Final = "error"
SEVERITY_WARNING: Final = "warning"
SEVERITY_INFO: Final = "info"
#: gate order: ``--fail-on warning`` also fails on errors
SEVERITIES: Final = (SEVERITY_ERROR, SEVERITY_WARNING, SEVERITY_INFO)

#: The one table of severities (docs/cli.md "Severities" prints it). error: a request the team expects to
#: work fails, or an identity reaches pods it was not meant for; warning: works today by accident or will
#: surprise; info: how NMI treats the pod, nothing to fix.
SEVERITY: Final[dict[str, str]] = {
    EXEMPT_POD_HAS_BINDING: SEVERITY_WARNING,
    AKS_ADDON_NOT_EXEMPT: SEVERITY_ERROR,
    HOST_NETWORK_BYPASS: SEVERITY_INFO,
    AMBIGUOUS_IDENTITY: SEVERITY_WARNING,
    NO_IDENTITY: SEVERITY_ERROR,
    CROSS_NAMESPACE_BINDING: SEVERITY_WARNING,
    CAPITALISED_FIELDS: SEVERITY_ERROR,
    UNSUPPORTED_IDENTITY_TYPE: SEVERITY_ERROR,
    ASSIGNED_IDENTITY_STUCK_CREATED: SEVERITY_ERROR,
    BINDING_IDENTITY_MISSING: SEVERITY_ERROR,
    NAMESPACED_BINDING_IGNORED: SEVERITY_WARNING,
    EMPTY_SELECTOR_BINDING: SEVERITY_WARNING,
    EXEMPT_POD_IMDS_ERROR: SEVERITY_WARNING,
    BYPASS_POD_IMDS_ERROR: SEVERITY_WARNING,
    IDENTITY_NOT_ON_NODE: SEVERITY_ERROR,
    SELECTOR_CASE_MISMATCH: SEVERITY_ERROR,
    ASSIGNED_IDENTITY_OTHER_NODE: SEVERITY_ERROR,
    ASSIGNED_IDENTITY_NAME_COLLISION: SEVERITY_ERROR,
    INVALID_RESOURCE_ID: SEVERITY_ERROR,
    HOST_NETWORK_IDENTITY_EXPOSED: SEVERITY_WARNING,
    BINDING_LABEL_ON_WORKLOAD: SEVERITY_ERROR,
    # dead configuration: nothing fails, but someone expected it to exempt a pod
    UNUSED_EXCEPTION: SEVERITY_WARNING,
    # the author expected a namespace-wide exception, which NMI does not have
    EMPTY_POD_LABELS_EXCEPTION: SEVERITY_WARNING,
    # nothing uses it; usually a selector typo (the message names a near-miss pod when there is one)
    ORPHAN_BINDING: SEVERITY_WARNING,
    # identities are often created before their bindings: how things are, nothing breaks
    UNBOUND_IDENTITY: SEVERITY_INFO,
    # every request for this identity fails
    PLACEHOLDER_IDENTITY: SEVERITY_ERROR,
    # the identity is not restricted to its namespace although its author asked for it
    BEHAVIOR_ANNOTATION_CASE: SEVERITY_WARNING,
    # the pod asked for an identity and gets none
    SELECTOR_NEAR_MISS: SEVERITY_ERROR,
}


#: What each code means and what to do, one paragraph each: SARIF's rule help, docs/cli.md's table.
DESCRIPTION: Final[dict[str, str]] = {
    EXEMPT_POD_HAS_BINDING: (
        "The pod is exempt by an AzurePodIdentityException, so NMI ignores its aadpodidbinding label: its"
        " token requests go to IMDS with the VM's identities, never the bound one."
    ),
    AKS_ADDON_NOT_EXEMPT: (
        "A pod labelled kubernetes.azure.com/managedby=aks is intercepted: AKS add-ons then get 403/404 "
        "instead of the node's identity. Exempt it with an AzurePodIdentityException in its namespace."
    ),
    HOST_NETWORK_BYPASS: (
        "A hostNetwork pod never reaches NMI (the iptables rule is in the pod network): IMDS answers it "
        "directly with the VM's identities."
    ),
    AMBIGUOUS_IDENTITY: (
        "More than one identity is bound to the pod and the request names none: NMI's pick is not "
        "deterministic. Request a clientID or bind one identity."
    ),
    NO_IDENTITY: (
        "The pod is intercepted and no identity is assigned to it: token requests fail after NMI's wait. "
        "Bind an identity, or exempt the pod if it must reach IMDS."
    ),
    CROSS_NAMESPACE_BINDING: (
        "The pod gets an identity through a binding or identity in another namespace; forceNamespaced or "
        "managed mode would drop it."
    ),
    CAPITALISED_FIELDS: (
        "Pre-1.6 capitalised fields (PodLabels, Selector, AzureIdentity, ClientID, ResourceID) are "
        "ignored since v1.6.0: the object behaves as if they were absent. Use the lower-case names."
    ),
    UNSUPPORTED_IDENTITY_TYPE: ("AzureIdentity spec.type is not 0, 1 or 2: MIC cannot assign it."),
    ASSIGNED_IDENTITY_STUCK_CREATED: (
        "The AzureAssignedIdentity stays Created (MIC could not assign the identity to the VM): NMI waits"
        " and then answers 404."
    ),
    BINDING_IDENTITY_MISSING: (
        "The binding names an AzureIdentity that does not exist in its namespace: the binding is skipped."
    ),
    NAMESPACED_BINDING_IGNORED: (
        "A binding matches the pod's label but forceNamespaced or the identity's namespaced annotation "
        "drops it (it is in another namespace)."
    ),
    EMPTY_SELECTOR_BINDING: (
        "Managed mode: a binding with an empty selector matches every pod without the aadpodidbinding label."
    ),
    EXEMPT_POD_IMDS_ERROR: (
        "The exempt pod's default token request fails at IMDS (NMI forwards it unchanged; the VM carries "
        "no identity, or several and the request names none)."
    ),
    BYPASS_POD_IMDS_ERROR: (
        "The hostNetwork pod's default token request fails at IMDS (the VM carries no identity, or "
        "several and the request names none)."
    ),
    IDENTITY_NOT_ON_NODE: (
        "Managed mode: the identity NMI picks is not on the node's VM; assign it to the VM (az vmss "
        "identity assign)."
    ),
    SELECTOR_CASE_MISMATCH: (
        "The pod's aadpodidbinding equals a binding's selector only ignoring case; selectors compare "
        "case-sensitively."
    ),
    ASSIGNED_IDENTITY_OTHER_NODE: (
        "The pod's AzureAssignedIdentity is labelled for another node; NMI on the pod's node does not see it."
    ),
    ASSIGNED_IDENTITY_NAME_COLLISION: (
        "Two identities collide on MIC's AzureAssignedIdentity name (upstream issue #1065): one of them "
        "is never assigned."
    ),
    INVALID_RESOURCE_ID: (
        "A type-0 AzureIdentity's resourceID is empty or malformed: MIC ignores the identity."
    ),
    HOST_NETWORK_IDENTITY_EXPOSED: (
        "A bound hostNetwork pod's identity is served by NMI's own port to any process on the node that "
        "calls it from the node's IP (NMI looks callers up by IP)."
    ),
    BINDING_LABEL_ON_WORKLOAD: (
        "The workload carries aadpodidbinding on its own metadata, not on its pod template: the pods get "
        "no label, and NMI answers 404 after its wait. Move it to spec.template.metadata.labels."
    ),
    UNUSED_EXCEPTION: (
        "An AzurePodIdentityException exempts no pod: no running, non-hostNetwork pod in its namespace "
        "carries all of its podLabels (exceptions cover only their own namespace)."
    ),
    EMPTY_POD_LABELS_EXCEPTION: (
        "An AzurePodIdentityException with empty podLabels matches no pod: NMI has no namespace-wide "
        "exception. List the labels of the pods to exempt."
    ),
    ORPHAN_BINDING: (
        "No pod's aadpodidbinding label equals the binding's selector (managed mode: no pod of its "
        "namespace); usually a typo."
    ),
    UNBOUND_IDENTITY: ("No AzureIdentityBinding in the identity's namespace names it, so no pod can use it."),
    PLACEHOLDER_IDENTITY: (
        "spec.resourceID or spec.clientID still holds a template placeholder (<...>, SUBSCRIPTION_ID, the"
        " zero GUID): the AzureAssignedIdentity stays Created (404), or IMDS does not know the clientID "
        "(403)."
    ),
    BEHAVIOR_ANNOTATION_CASE: (
        "The aadpodidentity.k8s.io/Behavior annotation differs in case or spaces; NMI compares key and "
        "value exactly, so the identity is not namespaced."
    ),
    SELECTOR_NEAR_MISS: (
        "The pod's aadpodidbinding value is one typo away from a binding's selector, or its label key is "
        "a misspelt aadpodidbinding: the pod gets no identity."
    ),
}


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One audit note: a stable `code` and a one-line actionable `message`.

    ``severity`` overrides the code's entry in :data:`SEVERITY` where the situation decides it (``""``: the
    table's). It is not part of :meth:`to_json` (the operator's status keeps its shape); the CLI's reports
    add it.
    """

    code: str
    message: str
    severity: str = ""

    @property
    def level(self) -> str:
        """error, warning or info."""
        return self.severity or SEVERITY.get(self.code, SEVERITY_WARNING)

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
