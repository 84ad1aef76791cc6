"""SimulationConfig: NMI's flags and the IMDS model of the VMs behind the nodes (product.md §3).

Defaults are NMI v1.8.17's flag defaults (nmi-semantics §4). ``from_k8s`` refuses what NMI itself would
refuse to start with (nmi-semantics §2 managed mode, §4 ``--operation-mode``): an unknown operation mode,
managed mode without forceNamespaced, and negative retry counts. Unknown fields are refused too, so that
a typo (``forcenamespaced``) does not silently keep a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict

from nmisim.engine.models import (
    ModelError,
    get_bool,
    get_int,
    get_map,
    get_str,
    get_str_list,
    parse_metadata,
)

API_VERSION: Final = "nmisim.dev/v1alpha1"
#: the NMI release nmisim simulates (aad-pod-identity's last)
NMI_VERSION: Final = "1.8.17"
#: the one SimulationConfig the operator and the node agent read (cluster-scoped)
CONFIG_NAME: Final = "default"
MODE_STANDARD: Final = "standard"
MODE_MANAGED: Final = "managed"


class ConfigError(ModelError):
    """A SimulationConfig that NMI would refuse or that cannot be read."""


class UserAssignedIdentity(BaseModel):
    """A user-assigned managed identity on a VM (IMDS model, nmi-semantics §7)."""

    model_config = ConfigDict(frozen=True)
    client_id: str = ""
    resource_id: str = ""
    object_id: str = ""


class VMIdentities(BaseModel):
    """The managed identities one VM carries."""

    model_config = ConfigDict(frozen=True)
    system_assigned: bool = False
    user_assigned: tuple[UserAssignedIdentity, ...] = ()


class NodeOverride(BaseModel):
    """Per-node override; a field left out keeps the cluster-wide value."""

    model_config = ConfigDict(frozen=True)
    system_assigned: bool | None = None
    user_assigned: tuple[UserAssignedIdentity, ...] | None = None


class IMDSConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    system_assigned: bool = False
    user_assigned: tuple[UserAssignedIdentity, ...] = ()
    nodes: dict[str, NodeOverride] = {}

    @property
    def describes_vms(self) -> bool:
        """Whether ``spec.imds`` says anything: unset and ``{}`` (the CRD's default, which the API server
        fills in) describe no VM. In managed mode an undescribed VM is assumed to carry every identity the
        pod's bindings name (nmi-semantics §8, product decision); a described one is the truth."""
        return self.system_assigned or bool(self.user_assigned) or bool(self.nodes)

    def vm_for(self, node: str) -> VMIdentities:
        """The VM behind ``node``: cluster-wide identities with the node's override applied."""
        ov = self.nodes.get(node)
        sa = self.system_assigned if ov is None or ov.system_assigned is None else ov.system_assigned
        ua = self.user_assigned if ov is None or ov.user_assigned is None else ov.user_assigned
        return VMIdentities(system_assigned=sa, user_assigned=ua)


#: ``--vm-identity aks``: the kubelet identity every AKS node pool carries, a user-assigned identity named
#: ``<cluster>-agentpool`` in the node resource group ``MC_<resourceGroup>_<cluster>_<region>``. The IDs are
#: obviously fake (subscription 1111..., client ID ...c0de) but pass every format check (docs/cli.md).
AKS_KUBELET_IDENTITY: Final = UserAssignedIdentity(
    client_id="0aa5ce1e-0000-4000-8000-00000000c0de",
    resource_id="/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/MC_rg_aks_eastus/"
    "providers/Microsoft.ManagedIdentity/userAssignedIdentities/aks-agentpool",
)
#: the ``--vm-identity`` value that stands for :data:`AKS_KUBELET_IDENTITY`
VM_IDENTITY_AKS: Final = "aks"


def vm_identity(value: str) -> UserAssignedIdentity:
    """One ``--vm-identity`` value: ``aks`` (:data:`AKS_KUBELET_IDENTITY`), a resource ID (starts with
    ``/subscriptions/``, ignoring case) or a client ID. ValueError for an empty value."""
    v = value.strip()
    if not v:
        raise ValueError("--vm-identity needs a client ID, a resource ID or 'aks'")
    if v.lower() == VM_IDENTITY_AKS:
        return AKS_KUBELET_IDENTITY
    if v.lower().startswith("/subscriptions/"):
        return UserAssignedIdentity(resource_id=v)
    return UserAssignedIdentity(client_id=v)


def _same(a: UserAssignedIdentity, b: UserAssignedIdentity) -> bool:
    return (bool(a.client_id) and a.client_id.lower() == b.client_id.lower()) or (
        bool(a.resource_id) and a.resource_id.lower() == b.resource_id.lower()
    )


def _plus(
    have: tuple[UserAssignedIdentity, ...], extra: tuple[UserAssignedIdentity, ...]
) -> tuple[UserAssignedIdentity, ...]:
    out = list(have)
    for ua in extra:
        if not any(_same(ua, h) for h in out):
            out.append(ua)
    return tuple(out)


class NMIConfig(BaseModel):
    """NMI flags (nmi-semantics §4), same defaults as upstream."""

    model_config = ConfigDict(frozen=True)
    operation_mode: str = MODE_STANDARD
    force_namespaced: bool = False
    mic_namespace: str = "default"
    metadata_header_required: bool = True
    block_instance_metadata: bool = False
    set_retry_after_header: bool = False
    retry_attempts_for_created: int = 16
    retry_attempts_for_assigned: int = 4
    find_identity_retry_interval_seconds: int = 5


#: Azure Workload Identity's defaults (workload-identity.md §1)
WI_AUDIENCE: Final = "api://AzureADTokenExchange"
WI_WEBHOOK_VERSION: Final = "v1.6.0"
WI_PLATFORM_AKS: Final = "aks"
WI_PLATFORM_OSS: Final = "oss"
#: the Kubernetes version assumed when none is set: the oldest minor AKS still supported on 2026-12-02
#: (nmisim decision, docs/migration.md "Settings")
WI_KUBERNETES_VERSION: Final = "1.32"
#: the webhook's AZURE_TENANT_ID when none is set: it refuses to start without one, so a stand-in that is
#: obviously not a real tenant (docs/migration.md "Settings")
WI_TENANT_STAND_IN: Final = "11111111-1111-1111-1111-111111111111"
POD_LINK_LOCAL_IMDS: Final = "IMDS"
POD_LINK_LOCAL_NONE: Final = "None"


class FederatedCredential(BaseModel):
    """A federated identity credential that exists on an identity (or app registration) in Entra: the
    simulated Entra's record (workload-identity.md §4 "FIC rules")."""

    model_config = ConfigDict(frozen=True)
    #: the identity's client ID (a user-assigned identity's or an app registration's)
    client_id: str
    name: str = ""
    issuer: str = ""
    subject: str = ""
    audiences: tuple[str, ...] = (WI_AUDIENCE,)


class SDKRule(BaseModel):
    """``image`` (an fnmatch pattern on a container's image) uses ``sdk`` (``LANGUAGE-PACKAGE==VERSION``)."""

    model_config = ConfigDict(frozen=True)
    image: str
    sdk: str


class WorkloadIdentityConfig(BaseModel):
    """The Azure Workload Identity side of the cluster (SimulationConfig ``spec.workloadIdentity``): the
    OIDC issuer, the webhook's tenant and version, the federated credentials that exist, and which SDK the
    images use. Read by ``nmisim migrate`` and the operator's migration classes (docs/migration.md)."""

    model_config = ConfigDict(frozen=True)
    #: the cluster's OIDC issuer URL, exactly as ``az aks show --query oidcIssuerProfile.issuerUrl`` prints
    #: it (trailing slash included); ``""`` when not known yet
    issuer: str = ""
    #: the webhook's ``AZURE_TENANT_ID`` (its default tenant)
    tenant_id: str = WI_TENANT_STAND_IN
    webhook_version: str = WI_WEBHOOK_VERSION
    #: the webhook's ``--audience``
    audience: str = WI_AUDIENCE
    #: the API server's version as the webhook sees it at start-up (native sidecars from 1.32)
    kubernetes_version: str = WI_KUBERNETES_VERSION
    #: ``aks`` (the Admissions Enforcer keeps the webhook out of kube-system) or ``oss``
    platform: str = WI_PLATFORM_AKS
    #: AKS's ``podLinkLocalAccess`` once NMI is gone: ``IMDS`` (pods reach IMDS) or ``None``
    pod_link_local_access: str = POD_LINK_LOCAL_IMDS
    federated_credentials: tuple[FederatedCredential, ...] = ()
    sdks: tuple[SDKRule, ...] = ()
    #: the ``az`` resource group and cluster name the clean-up commands name (placeholders when empty)
    resource_group: str = ""
    cluster_name: str = ""


class SimulationConfig(BaseModel):
    """The cluster-scoped SimulationConfig (product.md §3)."""

    model_config = ConfigDict(frozen=True)
    kind: str = "SimulationConfig"
    name: str = "default"
    nmi: NMIConfig = NMIConfig()
    imds: IMDSConfig = IMDSConfig()
    workload_identity: WorkloadIdentityConfig = WorkloadIdentityConfig()

    @classmethod
    def default(cls) -> Self:
        return cls()

    @property
    def managed(self) -> bool:
        return self.nmi.operation_mode == MODE_MANAGED

    def with_vm_identities(self, identities: Sequence[UserAssignedIdentity]) -> Self:
        """This config with ``identities`` added to every VM's user-assigned identities: the cluster-wide
        list and each node override that replaces it (``--vm-identity``). An identity a VM already has
        (same client ID or resource ID, ignoring case) is not added twice. Pure: ``self`` is unchanged."""
        if not identities:
            return self
        extra = tuple(identities)
        imds = self.imds
        nodes = {
            name: ov
            if ov.user_assigned is None
            else ov.model_copy(update={"user_assigned": _plus(ov.user_assigned, extra)})
            for name, ov in imds.nodes.items()
        }
        new_imds = imds.model_copy(update={"user_assigned": _plus(imds.user_assigned, extra), "nodes": nodes})
        return self.model_copy(update={"imds": new_imds})

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        try:
            return cls._parse(obj)
        except ConfigError:
            raise
        except ModelError as exc:
            raise ConfigError(exc.path, exc.problem) from None

    @classmethod
    def _parse(cls, obj: Mapping[str, Any]) -> Self:
        if not isinstance(obj, Mapping):
            raise ConfigError("", "expected a SimulationConfig map")
        kind = obj.get("kind")
        if kind != "SimulationConfig":
            raise ConfigError("kind", f"expected SimulationConfig, got {kind!r}")
        api = obj.get("apiVersion")
        if api != API_VERSION:
            raise ConfigError("apiVersion", f"expected {API_VERSION}, got {api!r}")
        meta = parse_metadata(obj, namespaced=False) if obj.get("metadata") else None
        spec = get_map(obj, "spec", "")
        _no_unknown(spec, {"nmi", "imds", "workloadIdentity"}, "spec")
        return cls(
            name=meta.name if meta else "default",
            nmi=_parse_nmi(get_map(spec, "nmi", "spec")),
            imds=_parse_imds(get_map(spec, "imds", "spec")),
            workload_identity=parse_workload_identity(get_map(spec, "workloadIdentity", "spec")),
        )


_NMI_FIELDS: Final = {
    "operationMode",
    "forceNamespaced",
    "micNamespace",
    "metadataHeaderRequired",
    "blockInstanceMetadata",
    "setRetryAfterHeader",
    "retryAttemptsForCreated",
    "retryAttemptsForAssigned",
    "findIdentityRetryIntervalSeconds",
}


def _no_unknown(obj: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in obj:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", f"unknown field (known: {', '.join(sorted(known))})")


def _parse_nmi(spec: Mapping[str, Any]) -> NMIConfig:
    p = "spec.nmi"
    _no_unknown(spec, _NMI_FIELDS, p)
    d = NMIConfig()
    # NMI lower-cases --operation-mode and refuses anything else (nmi-semantics §4)
    mode_raw = get_str(spec, "operationMode", p, d.operation_mode)
    mode = mode_raw.lower()
    if mode not in (MODE_STANDARD, MODE_MANAGED):
        raise ConfigError(f"{p}.operationMode", f"operation mode {mode_raw} not supported")
    force = get_bool(spec, "forceNamespaced", p, d.force_namespaced)
    if mode == MODE_MANAGED and not force:
        # nmi-semantics §2 managed mode: NMI exits fatally (message verbatim, sic)
        raise ConfigError(
            f"{p}.forceNamespaced",
            "managed mode not intialized in force namespaced mode (managed mode needs forceNamespaced: true)",
        )
    ints: dict[str, int] = {}
    for key in ("retryAttemptsForCreated", "retryAttemptsForAssigned", "findIdentityRetryIntervalSeconds"):
        value = get_int(spec, key, p, getattr(d, _snake(key)))
        if value < 0:
            raise ConfigError(f"{p}.{key}", f"must not be negative, got {value}")
        ints[_snake(key)] = value
    return NMIConfig(
        operation_mode=mode,
        force_namespaced=force,
        mic_namespace=get_str(spec, "micNamespace", p, d.mic_namespace),
        metadata_header_required=get_bool(spec, "metadataHeaderRequired", p, d.metadata_header_required),
        block_instance_metadata=get_bool(spec, "blockInstanceMetadata", p, d.block_instance_metadata),
        set_retry_after_header=get_bool(spec, "setRetryAfterHeader", p, d.set_retry_after_header),
        **ints,
    )


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _parse_user_assigned(spec: Mapping[str, Any], key: str, prefix: str) -> tuple[UserAssignedIdentity, ...]:
    value = spec.get(key)
    path = f"{prefix}.{key}"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(path, "expected a list of {clientID, resourceID}")
    out = []
    for i, item in enumerate(value):
        ip = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(ip, "expected a map with clientID and/or resourceID")
        _no_unknown(item, {"clientID", "resourceID", "objectID"}, ip)
        ua = UserAssignedIdentity(
            client_id=get_str(item, "clientID", ip),
            resource_id=get_str(item, "resourceID", ip),
            object_id=get_str(item, "objectID", ip),
        )
        if not (ua.client_id or ua.resource_id):
            raise ConfigError(ip, "needs clientID or resourceID")
        out.append(ua)
    return tuple(out)


def _parse_imds(spec: Mapping[str, Any]) -> IMDSConfig:
    p = "spec.imds"
    _no_unknown(spec, {"systemAssigned", "userAssigned", "nodes"}, p)
    nodes_raw = get_map(spec, "nodes", p)
    nodes: dict[str, NodeOverride] = {}
    for node, ov in nodes_raw.items():
        np = f"{p}.nodes.{node}"
        if not isinstance(ov, Mapping):
            raise ConfigError(np, "expected a map with systemAssigned and/or userAssigned")
        _no_unknown(ov, {"systemAssigned", "userAssigned"}, np)
        nodes[str(node)] = NodeOverride(
            system_assigned=get_bool(ov, "systemAssigned", np) if "systemAssigned" in ov else None,
            user_assigned=_parse_user_assigned(ov, "userAssigned", np) if "userAssigned" in ov else None,
        )
    return IMDSConfig(
        system_assigned=get_bool(spec, "systemAssigned", p),
        user_assigned=_parse_user_assigned(spec, "userAssigned", p),
        nodes=nodes,
    )


_WI_FIELDS: Final = {
    "issuer",
    "tenantID",
    "webhookVersion",
    "audience",
    "kubernetesVersion",
    "platform",
    "podLinkLocalAccess",
    "federatedCredentials",
    "sdks",
    "resourceGroup",
    "clusterName",
}
#: semver's -pre/+build and PEP 440's a1/b2/rc1/.dev0/.post1 suffixes are read as the release they precede
#: or follow (azure-identity 1.13.0b2 added WorkloadIdentityCredential, which 1.13.0 has)
_VERSION_RE: Final = re.compile(
    r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+.]?(?:a|b|rc|dev|post|alpha|beta)?\d*.*)?$"
)


def version_tuple(text: str) -> tuple[int, int, int] | None:
    """``v1.6.0``/``1.32``/``1.5.1-rc.0`` as ``(1, 6, 0)``; None when it is not a version."""
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _list_of_maps(spec: Mapping[str, Any], key: str, prefix: str) -> list[tuple[str, Mapping[str, Any]]]:
    value = spec.get(key)
    path = f"{prefix}.{key}"
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, "expected a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{path}[{i}]", "expected a map")
        out.append((f"{path}[{i}]", item))
    return out


def parse_workload_identity(spec: Mapping[str, Any]) -> WorkloadIdentityConfig:
    p = "spec.workloadIdentity"
    _no_unknown(spec, _WI_FIELDS, p)
    d = WorkloadIdentityConfig()
    for key in ("webhookVersion", "kubernetesVersion"):
        if key in spec and version_tuple(get_str(spec, key, p)) is None:
            raise ConfigError(f"{p}.{key}", f"expected a version like v1.6.0 or 1.32, got {spec[key]!r}")
    platform = get_str(spec, "platform", p, d.platform)
    if platform not in (WI_PLATFORM_AKS, WI_PLATFORM_OSS):
        raise ConfigError(f"{p}.platform", f"expected aks or oss, got {platform!r}")
    link = get_str(spec, "podLinkLocalAccess", p, d.pod_link_local_access)
    if link not in (POD_LINK_LOCAL_IMDS, POD_LINK_LOCAL_NONE):
        raise ConfigError(f"{p}.podLinkLocalAccess", f"expected IMDS or None, got {link!r}")
    fics = []
    for ip, item in _list_of_maps(spec, "federatedCredentials", p):
        _no_unknown(item, {"clientID", "name", "issuer", "subject", "audiences"}, ip)
        client_id = get_str(item, "clientID", ip)
        if not client_id:
            raise ConfigError(f"{ip}.clientID", "required (the identity the credential is on)")
        audiences = get_str_list(item, "audiences", ip) if "audiences" in item else (d.audience,)
        fics.append(
            FederatedCredential(
                client_id=client_id,
                name=get_str(item, "name", ip),
                issuer=get_str(item, "issuer", ip),
                subject=get_str(item, "subject", ip),
                audiences=audiences,
            )
        )
    sdks = []
    for ip, item in _list_of_maps(spec, "sdks", p):
        _no_unknown(item, {"image", "sdk"}, ip)
        image, sdk = get_str(item, "image", ip), get_str(item, "sdk", ip)
        if not image or not sdk:
            raise ConfigError(ip, "needs image (a pattern) and sdk (LANGUAGE-PACKAGE==VERSION)")
        sdks.append(SDKRule(image=image, sdk=sdk))
    return WorkloadIdentityConfig(
        issuer=get_str(spec, "issuer", p),
        tenant_id=get_str(spec, "tenantID", p) or d.tenant_id,
        webhook_version=get_str(spec, "webhookVersion", p, d.webhook_version),
        audience=get_str(spec, "audience", p, d.audience) or d.audience,
        kubernetes_version=get_str(spec, "kubernetesVersion", p, d.kubernetes_version),
        platform=platform,
        pod_link_local_access=link,
        federated_credentials=tuple(fics),
        sdks=tuple(sdks),
        resource_group=get_str(spec, "resourceGroup", p),
        cluster_name=get_str(spec, "clusterName", p),
    )
