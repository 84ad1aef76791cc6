"""Migration hazards: stable codes, severities, what each means and how to fix it (docs/migration.md).

Codes are public (``nmisim migrate`` output, NMIVerdict status, ``--fail-on``): never rename one. Severity as
for NMI's findings: error — a request the team expects to work fails or a pod is not admitted, or an
identity reaches pods it was not meant for; warning — works, but differently or by luck; info — worth
knowing, nothing to fix.
"""

from __future__ import annotations

from typing import Final

from nmisim.engine.findings import SEVERITY_ERROR, SEVERITY_INFO, SEVERITY_WARNING, Finding

MULTIPLE_IDENTITIES: Final = "MultipleIdentities"
CROSS_NAMESPACE_IDENTITY: Final = "CrossNamespaceIdentity"
SERVICE_PRINCIPAL_IDENTITY: Final = "ServicePrincipalIdentity"
AUXILIARY_TENANTS: Final = "AuxiliaryTenants"
SHARED_SERVICE_ACCOUNT: Final = "SharedServiceAccount"
FEDERATED_CREDENTIAL_BUDGET: Final = "FederatedCredentialBudget"
FEDERATED_CREDENTIAL_MISSING: Final = "FederatedCredentialMissing"
PROXY_ON_HOST_NETWORK: Final = "ProxyOnHostNetwork"
PROXY_POD_SECURITY: Final = "ProxyPodSecurity"
PROXY_IGNORES_RESOURCE_ID: Final = "ProxyIgnoresResourceID"
PROXY_WINDOWS: Final = "ProxyWindows"
PROXY_NOT_FOR_PRODUCTION: Final = "ProxyNotForProduction"
PROXY_SKIPPED: Final = "ProxySkipped"
INIT_CONTAINERS_NOT_PROXIED: Final = "InitContainersNotProxied"
JOB_NEVER_COMPLETES: Final = "JobNeverCompletes"
SDK_TOO_OLD: Final = "SDKTooOld"
SDK_UNKNOWN: Final = "SDKUnknown"
SDK_LEGACY_PATH: Final = "SDKLegacyPath"
GO_MANAGED_IDENTITY_CREDENTIAL: Final = "GoManagedIdentityCredential"
TOKEN_FILE_READ_ONCE: Final = "TokenFileReadOnce"
TOKEN_PATH_HARD_CODED: Final = "TokenPathHardCoded"
TOKEN_EXPIRATION_OUT_OF_BOUNDS: Final = "TokenExpirationOutOfBounds"
SERVICE_ACCOUNT_MISSING: Final = "ServiceAccountMissing"
PROXY_PORT_INVALID: Final = "ProxyPortInvalid"
RESTART_NEEDED: Final = "RestartNeeded"
NODE_IDENTITY_EXPOSED: Final = "NodeIdentityExposed"
NOT_ADMITTED_BY_WEBHOOK: Final = "WebhookNotReached"
NO_CLIENT_ID: Final = "NoClientID"
EXCEPTION_MEANINGLESS: Final = "ExceptionMeaningless"
STATUS_CODE_CHANGES: Final = "StatusCodeChanges"
ISSUER_UNKNOWN: Final = "IssuerUnknown"

SEVERITY: Final[dict[str, str]] = {
    MULTIPLE_IDENTITIES: SEVERITY_WARNING,
    CROSS_NAMESPACE_IDENTITY: SEVERITY_WARNING,
    SERVICE_PRINCIPAL_IDENTITY: SEVERITY_WARNING,
    AUXILIARY_TENANTS: SEVERITY_ERROR,
    SHARED_SERVICE_ACCOUNT: SEVERITY_WARNING,
    FEDERATED_CREDENTIAL_BUDGET: SEVERITY_ERROR,
    FEDERATED_CREDENTIAL_MISSING: SEVERITY_ERROR,
    PROXY_ON_HOST_NETWORK: SEVERITY_ERROR,
    PROXY_POD_SECURITY: SEVERITY_ERROR,
    PROXY_IGNORES_RESOURCE_ID: SEVERITY_WARNING,
    PROXY_WINDOWS: SEVERITY_ERROR,
    PROXY_NOT_FOR_PRODUCTION: SEVERITY_INFO,
    PROXY_SKIPPED: SEVERITY_ERROR,
    INIT_CONTAINERS_NOT_PROXIED: SEVERITY_WARNING,
    JOB_NEVER_COMPLETES: SEVERITY_ERROR,
    SDK_TOO_OLD: SEVERITY_WARNING,
    SDK_UNKNOWN: SEVERITY_WARNING,
    SDK_LEGACY_PATH: SEVERITY_INFO,
    GO_MANAGED_IDENTITY_CREDENTIAL: SEVERITY_WARNING,
    TOKEN_FILE_READ_ONCE: SEVERITY_ERROR,
    TOKEN_PATH_HARD_CODED: SEVERITY_ERROR,
    TOKEN_EXPIRATION_OUT_OF_BOUNDS: SEVERITY_ERROR,
    SERVICE_ACCOUNT_MISSING: SEVERITY_ERROR,
    PROXY_PORT_INVALID: SEVERITY_ERROR,
    RESTART_NEEDED: SEVERITY_WARNING,
    NODE_IDENTITY_EXPOSED: SEVERITY_ERROR,
    NOT_ADMITTED_BY_WEBHOOK: SEVERITY_WARNING,
    NO_CLIENT_ID: SEVERITY_WARNING,
    EXCEPTION_MEANINGLESS: SEVERITY_INFO,
    STATUS_CODE_CHANGES: SEVERITY_INFO,
    ISSUER_UNKNOWN: SEVERITY_INFO,
}

#: what the hazard means (one or two sentences) and, after " Fix: ", what to do about it
DESCRIPTION: Final[dict[str, str]] = {
    MULTIPLE_IDENTITIES: (
        "NMI serves the pod several identities; a ServiceAccount's client-id annotation names one default. "
        "Fix: keep the identity NMI answers a request without client_id with as the default; give every "
        "other "
        "identity a federated credential for the same ServiceAccount and pass its client ID in code."
    ),
    CROSS_NAMESPACE_IDENTITY: (
        "The pod's binding or identity lives in another namespace; Workload Identity trusts a ServiceAccount "
        "in the pod's own namespace. Fix: the federated credential's subject names the pod's namespace; "
        "delete the cross-namespace binding at clean-up."
    ),
    SERVICE_PRINCIPAL_IDENTITY: (
        "The identity is a service principal (type 1/2) with a secret or certificate. Fix: add the federated "
        "credential to its app registration (az ad app federated-credential create) and drop the secret."
    ),
    AUXILIARY_TENANTS: (
        "The identity has auxiliaryTenantIDs; NMI returns one token per tenant, Workload Identity one token "
        "for AZURE_TENANT_ID. Fix: request each tenant's token in code with its tenant ID."
    ),
    SHARED_SERVICE_ACCOUNT: (
        "Workloads that need different default identities share one ServiceAccount. Fix: the plan gives each "
        "its own ServiceAccount."
    ),
    FEDERATED_CREDENTIAL_BUDGET: (
        "An identity would carry more than 20 federated credentials, Entra's limit. Fix: share "
        "ServiceAccounts across workloads of one identity, or split the identity."
    ),
    FEDERATED_CREDENTIAL_MISSING: (
        "No federated credential on the identity matches the issuer, the subject "
        "system:serviceaccount:NS:SA and the audience exactly: Entra answers AADSTS70021. Fix: run the "
        "plan's az identity federated-credential create (mind the issuer's trailing slash)."
    ),
    PROXY_ON_HOST_NETWORK: (
        "The webhook denies a hostNetwork pod that asks for the proxy sidecar: hostNetwork is set to true, "
        "cannot inject proxy sidecar. Fix: no proxy; use an SDK that supports workload identity."
    ),
    PROXY_POD_SECURITY: (
        "The proxy's init container azwi-proxy-init is privileged and root; the namespace's Pod Security "
        "level (baseline/restricted) rejects the pod. Fix: upgrade the SDK instead, or exempt the namespace."
    ),
    PROXY_IGNORES_RESOURCE_ID: (
        "The proxy reads only client_id and resource: a request by msi_res_id gets the ServiceAccount's "
        "default identity, not the one named. Fix: request by client_id."
    ),
    PROXY_WINDOWS: ("The proxy images are Linux-only: a Windows pod cannot pull them. Fix: upgrade the SDK."),
    PROXY_NOT_FOR_PRODUCTION: (
        "Microsoft's guide: the migration sidecar is not supported for production use. Fix: plan the SDK "
        "upgrade and remove the proxy annotation afterwards."
    ),
    PROXY_SKIPPED: (
        "skip-containers lists azwi-proxy: it gets no AZURE_TENANT_ID and exits at start-up "
        "(AZURE_TENANT_ID not set). Fix: remove azwi-proxy from skip-containers."
    ),
    INIT_CONTAINERS_NOT_PROXIED: (
        "The pod's own init containers run before azwi-proxy-init installs its iptables rules: their IMDS "
        "calls reach NMI (parallel) or the node's IMDS (removed). Fix: move token calls out of init "
        "containers or give them a supported SDK."
    ),
    JOB_NEVER_COMPLETES: (
        "Before Kubernetes 1.32 the proxy is a regular container that keeps running after the job's work: "
        "the Job never completes. Fix: Kubernetes 1.32+ (native sidecar) or an SDK upgrade."
    ),
    SDK_TOO_OLD: (
        "The application's SDK cannot use workload identity: its requests keep going to IMDS. Fix: upgrade "
        "to the version the plan names, or use the proxy meanwhile."
    ),
    SDK_UNKNOWN: (
        "nmisim does not know which SDK the pod uses; both outcomes are shown. Fix: annotate the pod "
        "template nmisim.dev/sdk: LANGUAGE-PACKAGE==VERSION, or list the image in spec.workloadIdentity.sdks."
    ),
    SDK_LEGACY_PATH: (
        "The SDK reads the token file through DefaultAzureCredential/ManagedIdentityCredential but has no "
        "WorkloadIdentityCredential. Fix: upgrade when convenient."
    ),
    GO_MANAGED_IDENTITY_CREDENTIAL: (
        "Go's ManagedIdentityCredential ignores AZURE_CLIENT_ID and the token file: code that uses it rather "
        "than DefaultAzureCredential or WorkloadIdentityCredential keeps calling IMDS. Fix: use "
        "NewWorkloadIdentityCredential or DefaultAzureCredential."
    ),
    TOKEN_FILE_READ_ONCE: (
        "MSAL (or an old SDK) reads the projected token once; the kubelet rotates it at 80% of its lifetime "
        "and Entra then answers AADSTS700024. Fix: read AZURE_FEDERATED_TOKEN_FILE before every assertion."
    ),
    TOKEN_PATH_HARD_CODED: (
        "A container names a token path that is not its AZURE_FEDERATED_TOKEN_FILE (the path moved in "
        "v1.6.0). Fix: read the environment variable."
    ),
    TOKEN_EXPIRATION_OUT_OF_BOUNDS: (
        "service-account-token-expiration is not a whole number of seconds in 3600..86400: the webhook "
        "denies the pod. Fix: a value in range, in seconds."
    ),
    SERVICE_ACCOUNT_MISSING: (
        "The pod's ServiceAccount does not exist: the webhook denies the pod. Fix: create it (the plan does)."
    ),
    PROXY_PORT_INVALID: (
        "proxy-sidecar-port is not an integer: the webhook denies the pod. Fix: a port number."
    ),
    RESTART_NEEDED: (
        "The webhook mutates pods at creation only: this pod predates its label or its ServiceAccount's "
        "annotation and keeps its old spec. Fix: restart it (kubectl rollout restart)."
    ),
    NODE_IDENTITY_EXPOSED: (
        "NMI denies this pod today; once NMI is removed its IMDS calls reach the node and get the node's "
        "identities. Fix: AKS podLinkLocalAccess: None on the node pool, or a NetworkPolicy denying "
        "169.254.169.254/32."
    ),
    NOT_ADMITTED_BY_WEBHOOK: (
        'The webhook never sees this pod (no azure.workload.identity/use: "true" label, or a namespace the '
        "platform excludes, such as kube-system on AKS). Fix: the label on the pod template; on AKS the "
        "admissions.enforcer/disabled label on the webhook configuration."
    ),
    NO_CLIENT_ID: (
        "The ServiceAccount has no client-id annotation: no AZURE_CLIENT_ID is injected and requests without "
        "client_id fail. Fix: annotate azure.workload.identity/client-id."
    ),
    EXCEPTION_MEANINGLESS: (
        "An AzurePodIdentityException exempts this pod today; without NMI it means nothing, and the pod "
        "reaches IMDS as before. Fix: delete the exception at clean-up."
    ),
    STATUS_CODE_CHANGES: (
        "The pod sees a different status code for the same failure (NMI 404/403, the proxy 400/500, IMDS "
        "400). Fix: check the application's retry and error handling."
    ),
    ISSUER_UNKNOWN: (
        "spec.workloadIdentity.issuer is not set: the plan's commands use $AKS_OIDC_ISSUER. Fix: set it from "
        "az aks show --query oidcIssuerProfile.issuerUrl."
    ),
}

ALL_CODES: Final = tuple(SEVERITY)


def hazard(code: str, message: str) -> Finding:
    """A hazard as a :class:`Finding` carrying its severity (``--fail-on`` reads ``Finding.level``)."""
    return Finding(code, message, SEVERITY[code])


def with_severity(finding: Finding) -> Finding:
    return finding if finding.severity else hazard(finding.code, finding.message)
