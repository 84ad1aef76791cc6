"""Audit findings with stable codes.

Codes are part of nmisim's public interface (verdict status, metrics labels, CI checks): never rename one.
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
