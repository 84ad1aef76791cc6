"""Per workload, the plan (workload-identity.md "What a migration simulator would need" §15; the official
guide's steps, §4): the pod label, the ServiceAccount to create or annotate, the federated credentials to
create as ``az`` commands with the budget left per identity, the proxy decision and its reason, the SDK
action, and the clean-up order. Grouped by top-level controller, whatever its kind (``azwi podidentity
detect`` aborts on kinds it does not know and misses workloads without running pods).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from nmisim.engine.config import FederatedCredential, WorkloadIdentityConfig
from nmisim.engine.findings import Finding
from nmisim.engine.migration import entra, sdk
from nmisim.engine.migration import hazards as H
from nmisim.engine.migration.objects import (
    CLIENT_ID_ANNOTATION,
    DEFAULT_SERVICE_ACCOUNT,
    INJECT_PROXY_ANNOTATION,
    TENANT_ID_ANNOTATION,
    USE_LABEL,
    Namespace,
    PodSpec,
    ServiceAccount,
)
from nmisim.engine.models import BINDING_LABEL, AzureIdentity

ISSUER_PLACEHOLDER: Final = "${AKS_OIDC_ISSUER}"
SA_CREATE: Final = "create"
SA_ANNOTATE: Final = "annotate"
SA_KEEP: Final = "keep"
_RESOURCE_ID: Final = re.compile(
    r"(?i)/subscriptions/([^/]+)/resourcegroups/([^/]+)/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/([^/]+)"
)
_FIC_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_-]+")
_DNS_BAD: Final = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, key: str) -> WorkloadRef:
        kind, ns, name = key.split("/", 2)
        return cls(kind, ns, name)


@dataclass(frozen=True, slots=True)
class CredentialPlan:
    """One federated credential the plan needs."""

    identity: str
    client_id: str
    name: str
    issuer: str
    subject: str
    audience: str
    exists: bool
    command: str
    service_principal: bool = False

    def credential(self, issuer: str) -> FederatedCredential:
        return FederatedCredential(
            client_id=self.client_id,
            name=self.name,
            issuer=issuer,
            subject=self.subject,
            audiences=(self.audience,),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "clientID": self.client_id,
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audience": self.audience,
            "exists": self.exists,
            "command": self.command,
        }


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    workload: WorkloadRef
    pods: tuple[str, ...]
    identities: tuple[str, ...]
    default_identity: str = ""
    default_client_id: str = ""
    service_account: str = ""
    service_account_action: str = SA_KEEP
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    label_done: bool = False
    proxy: bool = False
    proxy_reason: str = ""
    sdk_action: str = ""
    credentials: tuple[CredentialPlan, ...] = ()
    cleanup: tuple[str, ...] = ()
    hazards: tuple[Finding, ...] = ()

    @property
    def migrates(self) -> bool:
        return bool(self.identities)

    def steps(self) -> list[str]:
        """The plan as steps a person reads, in order."""
        if not self.migrates:
            return []
        out = []
        sa = self.service_account
        ann = ", ".join(f"{k}={v}" for k, v in sorted(self.service_account_annotations.items()))
        verb = {SA_CREATE: "create", SA_ANNOTATE: "annotate", SA_KEEP: "keep"}[self.service_account_action]
        out.append(f"{verb} ServiceAccount {self.workload.namespace}/{sa}" + (f" ({ann})" if ann else ""))
        for c in self.credentials:
            out.append(("(exists) " if c.exists else "") + c.command)
        label = f'label the pod template {USE_LABEL}: "true"' + (" (done)" if self.label_done else "")
        out.append(label + f", serviceAccountName: {sa}")
        if self.proxy:
            out.append(f'annotate the pod template {INJECT_PROXY_ANNOTATION}: "true" ({self.proxy_reason})')
        others = [c for c in self.credentials if c.identity != self.default_identity]
        for c in others:
            out.append(
                f"in code, ask for {c.identity} by its client ID {c.client_id} (the ServiceAccount's default "
                f"is {self.default_identity}; a request by resource ID gets the default)"
            )
        if self.sdk_action:
            out.append(self.sdk_action)
        out.extend(self.cleanup)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload.key,
            "pods": list(self.pods),
            "identities": list(self.identities),
            "defaultIdentity": self.default_identity or None,
            "serviceAccount": {
                "name": self.service_account,
                "action": self.service_account_action,
                "annotations": dict(sorted(self.service_account_annotations.items())),
            },
            "label": {USE_LABEL: "true", "done": self.label_done},
            "proxy": {"inject": self.proxy, "reason": self.proxy_reason},
            "sdkAction": self.sdk_action or None,
            "federatedCredentials": [c.to_json() for c in self.credentials],
            "cleanup": list(self.cleanup),
            "steps": self.steps(),
            "hazards": [h.to_json() for h in self.hazards],
        }


def dns_name(text: str) -> str:
    name = _DNS_BAD.sub("-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "workload"


def fic_name(namespace: str, service_account: str) -> str:
    """``<namespace>-<serviceaccount>``, in the characters Entra accepts (3-120, letters, digits, - and _)."""
    name = _FIC_NAME_BAD.sub("-", f"{namespace}-{service_account}").strip("-_")
    return (name or "fic")[:120]


def fic_command(identity: AzureIdentity, name: str, issuer: str, subj: str, audience: str) -> str:
    """The ``az`` command that creates the credential: on a user-assigned identity, or on an app
    registration for a service principal (``azwi serviceaccount`` cannot do the former)."""
    if identity.type in (1, 2):
        params = json.dumps({"name": name, "issuer": issuer, "subject": subj, "audiences": [audience]})
        return (
            f"az ad app federated-credential create --id {identity.client_id} "
            f"--parameters {shlex.quote(params)}"
        )
    m = _RESOURCE_ID.search(identity.resource_id)
    if m is None:
        where = (
            f"--identity-name <name of {identity.client_id or identity.name}> --resource-group <its group>"
        )
    else:
        where = f"--identity-name {m.group(3)} --resource-group {m.group(2)} --subscription {m.group(1)}"
    issuer_arg = f'"{issuer}"' if issuer == ISSUER_PLACEHOLDER else shlex.quote(issuer)
    return (
        f"az identity federated-credential create --name {name} {where} --issuer {issuer_arg} "
        f"--subject {subj} --audience {audience}"
    )


def credential_exists(
    credentials: Sequence[FederatedCredential], client_id: str, issuer: str, subj: str, audience: str
) -> bool:
    return any(
        c.client_id.lower() == client_id.lower() and entra.matches(c, issuer, subj, audience)
        for c in credentials
    )


@dataclass(frozen=True, slots=True)
class ProxyDecision:
    inject: bool
    reason: str
    hazards: tuple[Finding, ...] = ()


def decide_proxy(spec: PodSpec, capability: str, namespace: Namespace | None) -> ProxyDecision:
    """The proxy only for an application that calls IMDS itself, and only where it can run."""
    if capability != sdk.CAP_IMDS:
        why = {
            sdk.CAP_WORKLOAD_IDENTITY: "not needed: the SDK uses workload identity",
            sdk.CAP_LEGACY: "not needed: the SDK reads the token file",
            sdk.CAP_MSAL: "not needed: MSAL reads the token file",
            sdk.CAP_UNKNOWN: "not planned: the SDK is unknown (declare it with nmisim.dev/sdk)",
        }[capability]
        return ProxyDecision(False, why)
    blockers: list[Finding] = []
    if spec.host_network:
        blockers.append(
            Finding(H.PROXY_ON_HOST_NETWORK, "hostNetwork pod: the webhook denies the proxy; upgrade the SDK")
        )
    if spec.windows:
        blockers.append(
            Finding(H.PROXY_WINDOWS, "Windows pod: the proxy images are Linux-only; upgrade the SDK")
        )
    level = namespace.pod_security if namespace is not None else "privileged"
    if level in ("baseline", "restricted"):
        blockers.append(
            Finding(
                H.PROXY_POD_SECURITY,
                f"namespace {spec.namespace} enforces Pod Security {level}: the privileged azwi-proxy-init "
                "is "
                "rejected; upgrade the SDK",
            )
        )
    if blockers:
        return ProxyDecision(False, "impossible: " + "; ".join(b.code for b in blockers), tuple(blockers))
    return ProxyDecision(True, "the application calls IMDS itself (its SDK predates workload identity)")


def sdk_action(sdks: Sequence[sdk.SDK], capability: str) -> str:
    if capability == sdk.CAP_UNKNOWN:
        return "declare the SDK: annotate the pod template nmisim.dev/sdk: LANGUAGE-PACKAGE==VERSION"
    upgrades = [f"{s.name} to {s.upgrade_to}+" for s in sdks if s.upgrade_to]
    if upgrades:
        return "upgrade " + ", ".join(upgrades)
    if capability == sdk.CAP_IMDS:
        return "rewrite the IMDS calls with an Azure Identity SDK that supports workload identity"
    if capability == sdk.CAP_MSAL:
        return "re-read AZURE_FEDERATED_TOKEN_FILE before each assertion (MSAL)"
    return ""


def applied_spec(spec: PodSpec, plan: WorkloadPlan) -> PodSpec:
    """The pod as it would be created once the plan is applied."""
    if not plan.migrates:
        return spec
    labels = {**spec.labels, USE_LABEL: "true"}
    annotations = dict(spec.annotations)
    if plan.proxy:
        annotations[INJECT_PROXY_ANNOTATION] = "true"
    from dataclasses import replace  # noqa: PLC0415

    return replace(spec, labels=labels, annotations=annotations, service_account=plan.service_account)


def applied_service_account(current: ServiceAccount | None, plan: WorkloadPlan) -> ServiceAccount:
    base = current.annotations if current is not None else {}
    return ServiceAccount(
        plan.workload.namespace, plan.service_account, {**base, **plan.service_account_annotations}
    )


def tenant_annotation(identity: AzureIdentity, wi: WorkloadIdentityConfig) -> dict[str, str]:
    """A service principal in another tenant than the webhook's needs ``tenant-id`` on its ServiceAccount."""
    if identity.tenant_id and identity.tenant_id.lower() != wi.tenant_id.lower():
        return {TENANT_ID_ANNOTATION: identity.tenant_id}
    return {}


def client_id_annotation(client_id: str) -> dict[str, str]:
    return {CLIENT_ID_ANNOTATION: client_id}


def binding_cleanup_label() -> str:
    return BINDING_LABEL


def default_service_account_name(spec: PodSpec, workload: WorkloadRef) -> str:
    if spec.service_account and spec.service_account != DEFAULT_SERVICE_ACCOUNT:
        return spec.service_account
    return dns_name(workload.name)
