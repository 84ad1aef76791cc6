"""Findings about one object (an exception, a binding, an identity), shared by a pod's findings
(:mod:`nmisim.engine.world`, where the object is why the pod gets no identity) and the objects' own
(:mod:`nmisim.engine.objects`), so that both say the same thing in the same words.
"""

from __future__ import annotations

from typing import Final

from nmisim.engine import findings as F
from nmisim.engine.findings import Finding
from nmisim.engine.models import AzureIdentity, AzureIdentityBinding, placeholder_in, valid_resource_id

#: MIC's resourceID format (nmi-semantics §1), as users read it
RESOURCE_ID_FORMAT: Final = (
    "/subscriptions/<sub>/resourcegroups/<rg>/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/<name>"
)


def _lower_camel(field: str) -> str:
    """``spec.ResourceID`` -> ``spec.resourceID`` (the v1.6.0 names, nmi-semantics §1)."""
    head, _, last = field.rpartition(".")
    renamed = {"AzureIdentity": "azureIdentity", "PodLabels": "podLabels"}.get(last)
    if renamed is None:
        i = 0
        while i < len(last) and last[i].isupper():
            i += 1
        # "ResourceID" -> "resourceID", "ADEndpoint" -> "adEndpoint", "Type" -> "type"
        cut = i - 1 if 1 < i < len(last) else i
        renamed = last[:cut].lower() + last[cut:]
    return f"{head}.{renamed}" if head else renamed


def _renames(fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f} -> {_lower_camel(f)}" for f in fields)


def capitalised_identity(ident: AzureIdentity) -> Finding:
    return Finding(
        F.CAPITALISED_FIELDS,
        f"AzureIdentity {ident.key} uses {', '.join(ident.ignored_fields)}, ignored since aad-pod-identity "
        f"v1.6.0: rename {_renames(ident.ignored_fields)}",
    )


def capitalised_binding(b: AzureIdentityBinding) -> Finding:
    return Finding(
        F.CAPITALISED_FIELDS,
        f"AzureIdentityBinding {b.key} uses {', '.join(b.ignored_fields)}, ignored since aad-pod-identity "
        f"v1.6.0: rename {_renames(b.ignored_fields)}",
    )


def _identity_field_capitalised(b: AzureIdentityBinding) -> bool:
    return not b.azure_identity and "spec.AzureIdentity" in b.ignored_fields


def missing_identity(b: AzureIdentityBinding) -> Finding:
    """The binding's AzureIdentity does not exist in its namespace; when the binding names it under the
    pre-1.6 ``spec.AzureIdentity`` key, that is the cause (``CapitalisedFields``)."""
    if _identity_field_capitalised(b):
        return capitalised_binding(b)
    return Finding(
        F.BINDING_IDENTITY_MISSING,
        f"AzureIdentityBinding {b.key} names AzureIdentity '{b.azure_identity}', which does not exist in "
        f"namespace {b.namespace}; create it or fix spec.azureIdentity",
    )


def missing_identity_cause(b: AzureIdentityBinding) -> str:
    """Why a pod bound through ``b`` gets no identity (a clause for ``NoIdentity``)."""
    if _identity_field_capitalised(b):
        return (
            f"AzureIdentityBinding {b.key} names its identity under spec.AzureIdentity, ignored since "
            "v1.6.0: rename it to spec.azureIdentity"
        )
    return (
        f"AzureIdentityBinding {b.key} selects this pod but its AzureIdentity '{b.azure_identity}' does not "
        f"exist in namespace {b.namespace}: create it or fix spec.azureIdentity"
    )


def _resource_id_capitalised(ident: AzureIdentity) -> bool:
    return not ident.resource_id and "spec.ResourceID" in ident.ignored_fields


def invalid_resource_id(ident: AzureIdentity, b: AzureIdentityBinding | None = None) -> Finding:
    """A type-0 identity MIC ignores (nmi-semantics §8.10); a capitalised ``spec.ResourceID`` is the cause
    when the lower-camel field is empty."""
    if _resource_id_capitalised(ident):
        return capitalised_identity(ident)
    shown = f"'{ident.resource_id}'" if ident.resource_id else "an empty resourceID"
    via = f" (via {b.key})" if b is not None else ""
    return Finding(
        F.INVALID_RESOURCE_ID,
        f"AzureIdentity {ident.key}{via} is type 0 with {shown}, which MIC ignores "
        f"(it must match {RESOURCE_ID_FORMAT}): fix spec.resourceID",
    )


def invalid_resource_id_cause(ident: AzureIdentity, b: AzureIdentityBinding) -> str:
    if _resource_id_capitalised(ident):
        return (
            f"AzureIdentity {ident.key} (via {b.key}) has its resource ID under spec.ResourceID, ignored "
            "since v1.6.0, so MIC ignores the identity: rename it to spec.resourceID"
        )
    return (
        f"AzureIdentity {ident.key} (via {b.key}) has an invalid spec.resourceID, so MIC ignores it: "
        "fix spec.resourceID"
    )


def placeholder_identity(ident: AzureIdentity) -> Finding:
    """A template placeholder left in ``spec.resourceID`` or ``spec.clientID``.

    resourceID: Azure refuses MIC's VM/VMSS update, the AzureAssignedIdentity stays ``Created`` and NMI
    answers 404 after its wait (nmi-semantics §1 lifecycle step 5, §2; upstream
    ``test/e2e/invalid_identities_test.go``). clientID: the identity MIC put on the VM has its real client
    ID, so IMDS answers ``Identity not found`` and NMI 403 (§2 step 8).
    """
    parts = []
    rid = placeholder_in(ident.resource_id) if ident.resource_id else None
    cid = placeholder_in(ident.client_id) if ident.client_id else None
    if rid and valid_resource_id(ident.resource_id):
        parts.append(
            f"spec.resourceID holds the placeholder '{rid}': Azure refuses MIC's VM update, the "
            "AzureAssignedIdentity stays Created and token requests get 404 after NMI's wait"
        )
    elif rid:
        parts.append(
            f"spec.resourceID holds the placeholder '{rid}' and fails MIC's format check, so MIC ignores "
            "the identity and token requests get 404 after NMI's wait"
        )
    if cid:
        parts.append(
            f"spec.clientID holds the placeholder '{cid}': no identity on the VM has it, so IMDS answers "
            "'Identity not found' (403 through NMI)"
        )
    return Finding(
        F.PLACEHOLDER_IDENTITY,
        f"AzureIdentity {ident.key}: {'; '.join(parts)}; put the real values in "
        "(az identity show -g <rg> -n <name> --query '{clientID:clientId,resourceID:id}')",
    )
