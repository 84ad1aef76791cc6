"""Engine models of the five Kubernetes kinds NMI reads, parsed from plain k8s dicts.

Field names and meanings follow nmi-semantics §1 (CRDs) and §2 (what NMI reads from a pod). Parsing is
strict about types (an error names the field path, e.g. ``metadata.labels: expected a map of strings``)
and lenient about absent fields (Go zero values, as the Go client would decode them).

Pre-1.6 capitalised field names (``PodLabels``, ``Selector``, ``AzureIdentity``, ``ClientID``, ...) are
*ignored*, as NMI and MIC ignore them since v1.6.0 (nmi-semantics §1, §6.15); the models remember them in
``ignored_fields`` so that findings can point at them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict

from nmisim.engine.fold import equal_fold

KIND_POD: Final = "Pod"
KIND_EXCEPTION: Final = "AzurePodIdentityException"
KIND_IDENTITY: Final = "AzureIdentity"
KIND_BINDING: Final = "AzureIdentityBinding"
KIND_ASSIGNED: Final = "AzureAssignedIdentity"
KIND_CONFIG: Final = "SimulationConfig"
MODEL_KINDS: Final = (KIND_POD, KIND_EXCEPTION, KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED)

#: Pod label read by MIC/NMI (nmi-semantics §1, ``CRDLabelKey``).
BINDING_LABEL: Final = "aadpodidbinding"
#: pod phases NMI ignores (a finished pod is never intercepted, exempted or found by IP)
FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})
#: pod phases NMI's lookup by IP keeps (``getPodList``, nmi-semantics §2 "Finding the pod")
LOOKUP_PHASES: Final = frozenset({"Pending", "Running"})
#: Identity annotation that makes one identity namespaced (nmi-semantics §1).
BEHAVIOR_ANNOTATION: Final = "aadpodidentity.k8s.io/Behavior"
BEHAVIOR_NAMESPACED: Final = "namespaced"
#: Namespace given to objects whose manifest has none (what ``kubectl apply`` does with no ``-n``).
DEFAULT_NAMESPACE: Final = "default"

# identity types (nmi-semantics §1 AzureIdentity)
TYPE_USER_ASSIGNED_MSI: Final = 0
TYPE_SERVICE_PRINCIPAL: Final = 1
TYPE_SERVICE_PRINCIPAL_CERTIFICATE: Final = 2
SUPPORTED_IDENTITY_TYPES: Final = (0, 1, 2)

#: MIC's check of a type-0 identity's resourceID (pkg/utils/utils.go ValidateResourceID; Go MatchString,
#: so unanchored, and '.' in "Microsoft.ManagedIdentity" matches any character)
RESOURCE_ID_RE: Final = re.compile(
    r"(?i)/subscriptions/(.+?)/resourcegroups/(.+?)/providers/Microsoft.ManagedIdentity/"
    r"userAssignedIdentities/(.+)"
)


def valid_resource_id(resource_id: str) -> bool:
    """``utils.ValidateResourceID`` (nmi-semantics §1, §8.10)."""
    return RESOURCE_ID_RE.search(resource_id) is not None


#: template text left in a clientID/resourceID: ``<anything>``, an unexpanded ``$VAR``/``${VAR}``, the
#: upper-case names docs and samples use (``SUBSCRIPTION_ID``, ``RESOURCE_ID``, ``CLIENT_ID``, ...), and the
#: zero GUID. MIC's regex accepts ``/subscriptions/<SUBSCRIPTION_ID>/...``; Azure does not (nmisim decision,
#: docs/verdicts.md "Placeholders").
PLACEHOLDER_RE: Final = re.compile(
    r"<[^<>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"
    r"|(?<![A-Za-z0-9])(?:SUBSCRIPTION_ID|RESOURCE_GROUP|RESOURCE_ID|CLIENT_ID|IDENTITY_NAME)(?![A-Za-z0-9])"
    r"|(?<![0-9A-Fa-f])00000000-0000-0000-0000-000000000000(?![0-9A-Fa-f])"
)


def placeholder_in(value: str) -> str | None:
    """The first placeholder in a clientID or resourceID (:data:`PLACEHOLDER_RE`), or None."""
    m = PLACEHOLDER_RE.search(value)
    return m.group(0) if m else None


# assigned identity states (nmi-semantics §1 AzureAssignedIdentity)
ASSIGNED_CREATED: Final = "Created"
ASSIGNED_ASSIGNED: Final = "Assigned"
ASSIGNED_UNASSIGNED: Final = "Unassigned"


class ModelError(ValueError):
    """An object that cannot be read; ``str()`` starts with the field path."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}.get(
        type(value), "map" if isinstance(value, Mapping) else type(value).__name__
    )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def get_map(obj: Mapping[str, Any], key: str, prefix: str) -> Mapping[str, Any]:
    """``obj[key]`` as a map; absent or null gives an empty map."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelError(_join(prefix, key), f"expected a map, got {_type_name(value)}")
    return value


def get_str(obj: Mapping[str, Any], key: str, prefix: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ModelError(_join(prefix, key), f"expected a string, got {_type_name(value)}")
    return value


def get_bool(obj: Mapping[str, Any], key: str, prefix: str, default: bool = False) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ModelError(_join(prefix, key), f"expected a boolean, got {_type_name(value)}")
    return value


def get_int(obj: Mapping[str, Any], key: str, prefix: str, default: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(_join(prefix, key), f"expected an integer, got {_type_name(value)}")
    return value


def get_str_map(obj: Mapping[str, Any], key: str, prefix: str) -> dict[str, str]:
    """A ``map[string]string`` field (labels, annotations, podLabels)."""
    value = obj.get(key)
    path = _join(prefix, key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelError(path, f"expected a map of strings, got {_type_name(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ModelError(path, f"expected a map of strings, got key {k!r} ({_type_name(k)})")
        if not isinstance(v, str):
            raise ModelError(f"{path}.{k}", f"expected a string, got {_type_name(v)}")
        out[k] = v
    return out


def get_str_list(obj: Mapping[str, Any], key: str, prefix: str) -> tuple[str, ...]:
    value = obj.get(key)
    path = _join(prefix, key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ModelError(path, f"expected a list of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ModelError(f"{path}[{i}]", f"expected a string, got {_type_name(item)}")
    return tuple(value)


def _lenient_str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


class _Meta(BaseModel):
    model_config = ConfigDict(frozen=True)
    namespace: str
    name: str
    uid: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    resource_version: str = ""
    generation: int = 0


def parse_metadata(obj: Mapping[str, Any], prefix: str = "", namespaced: bool = True) -> _Meta:
    """Read ``metadata``: name is required; a missing namespace becomes ``default``."""
    if not isinstance(obj, Mapping):
        raise ModelError(prefix, f"expected a map, got {_type_name(obj)}")
    mprefix = _join(prefix, "metadata")
    meta = get_map(obj, "metadata", prefix)
    name = get_str(meta, "name", mprefix)
    if not name:
        raise ModelError(_join(mprefix, "name"), "required (every object needs a name)")
    namespace = get_str(meta, "namespace", mprefix) if namespaced else ""
    return _Meta(
        namespace=namespace or (DEFAULT_NAMESPACE if namespaced else ""),
        name=name,
        uid=get_str(meta, "uid", mprefix),
        labels=get_str_map(meta, "labels", mprefix),
        annotations=get_str_map(meta, "annotations", mprefix),
        resource_version=get_str(meta, "resourceVersion", mprefix),
        generation=get_int(meta, "generation", mprefix),
    )


def _ignored(spec: Mapping[str, Any], capitalised: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    return tuple(_join(prefix, k) for k in capitalised if k in spec)


class Pod(BaseModel):
    """What NMI and MIC read from a pod (nmi-semantics §1 matching, §2 "Finding the pod").

    ``phase`` is ``None`` when the object has no ``status`` (a manifest not yet applied); the engine then
    evaluates it as running (product.md §2).
    """

    model_config = ConfigDict(frozen=True)
    kind: str = KIND_POD
    namespace: str
    name: str
    uid: str = ""
    labels: dict[str, str] = {}
    host_network: bool = False
    node_name: str = ""
    pod_ip: str = ""
    phase: str | None = None
    owner_replicaset: str | None = None
    resource_version: str = ""

    @property
    def binding_label(self) -> str:
        """The ``aadpodidbinding`` value; ``""`` when absent (Go map zero value)."""
        return self.labels.get(BINDING_LABEL, "")

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        meta = parse_metadata(obj)
        md = get_map(obj, "metadata", "")
        owner: str | None = None
        refs = md.get("ownerReferences")
        if refs is not None:
            if not isinstance(refs, list):
                raise ModelError("metadata.ownerReferences", f"expected a list, got {_type_name(refs)}")
            for i, ref in enumerate(refs):
                p = f"metadata.ownerReferences[{i}]"
                if not isinstance(ref, Mapping):
                    raise ModelError(p, f"expected a map, got {_type_name(ref)}")
                # pkg/k8s/client.go getReplicasetName: the first owner whose kind EqualFolds "ReplicaSet"
                if equal_fold(get_str(ref, "kind", p), "ReplicaSet") and owner is None:
                    owner = get_str(ref, "name", p)
        spec = get_map(obj, "spec", "")
        status_raw = obj.get("status")
        status = get_map(obj, "status", "")
        phase: str | None = get_str(status, "phase", "status") if status_raw is not None else None
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            labels=meta.labels,
            host_network=get_bool(spec, "hostNetwork", "spec"),
            node_name=get_str(spec, "nodeName", "spec"),
            pod_ip=get_str(status, "podIP", "status"),
            phase=phase or None,
            owner_replicaset=owner,
            resource_version=meta.resource_version,
        )


class PodIdentityException(BaseModel):
    """AzurePodIdentityException (nmi-semantics §1): ``spec.podLabels`` only."""

    model_config = ConfigDict(frozen=True)
    kind: str = KIND_EXCEPTION
    namespace: str
    name: str
    pod_labels: dict[str, str] = {}
    #: labels under a pre-1.6 ``PodLabels`` key, which NMI ignores
    ignored_pod_labels: dict[str, str] = {}
    ignored_fields: tuple[str, ...] = ()
    generation: int = 0
    resource_version: str = ""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        meta = parse_metadata(obj)
        spec = get_map(obj, "spec", "")
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            pod_labels=get_str_map(spec, "podLabels", "spec"),
            ignored_pod_labels=_lenient_str_map(spec.get("PodLabels")),
            ignored_fields=_ignored(spec, ("PodLabels",), "spec"),
            generation=meta.generation,
            resource_version=meta.resource_version,
        )


class SecretRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = ""
    namespace: str = ""


_IDENTITY_CAPITALISED: Final = (
    "Type",
    "ResourceID",
    "ClientID",
    "ClientPassword",
    "TenantID",
    "AuxiliaryTenantIDs",
    "ADResourceID",
    "ADEndpoint",
)


class AzureIdentity(BaseModel):
    """AzureIdentity (nmi-semantics §1). ``type`` keeps any integer; NMI rejects types outside 0-2 only
    when it tries to fetch a token (``unsupported identity type N``)."""

    model_config = ConfigDict(frozen=True)
    kind: str = KIND_IDENTITY
    namespace: str
    name: str
    type: int = 0
    client_id: str = ""
    resource_id: str = ""
    tenant_id: str = ""
    auxiliary_tenant_ids: tuple[str, ...] = ()
    client_password: SecretRef = SecretRef()
    ad_endpoint: str = ""
    #: annotation ``aadpodidentity.k8s.io/Behavior: namespaced`` (nmi-semantics §1)
    namespaced: bool = False
    #: ``key: value`` of an annotation that means the Behavior annotation but that NMI does not honour:
    #: key or value differs only in case or surrounding spaces (``IsNamespacedIdentity`` looks the exact
    #: key up and compares the value with ``==``, ``pkg/apis/aadpodidentity/utils.go``); ``""`` if none
    behavior_near_miss: str = ""
    ignored_fields: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        return cls._parse(obj, "")

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], prefix: str) -> Self:
        meta = parse_metadata(obj, prefix)
        sp = _join(prefix, "spec")
        spec = get_map(obj, "spec", prefix)
        pw = get_map(spec, "clientPassword", sp)
        pwp = _join(sp, "clientPassword")
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            type=get_int(spec, "type", sp),
            client_id=get_str(spec, "clientID", sp),
            resource_id=get_str(spec, "resourceID", sp),
            tenant_id=get_str(spec, "tenantID", sp),
            auxiliary_tenant_ids=get_str_list(spec, "auxiliaryTenantIDs", sp),
            client_password=SecretRef(name=get_str(pw, "name", pwp), namespace=get_str(pw, "namespace", pwp)),
            ad_endpoint=get_str(spec, "adEndpoint", sp),
            namespaced=meta.annotations.get(BEHAVIOR_ANNOTATION) == BEHAVIOR_NAMESPACED,
            behavior_near_miss=_behavior_near_miss(meta.annotations),
            ignored_fields=_ignored(spec, _IDENTITY_CAPITALISED, sp),
            resource_version=meta.resource_version,
        )


def _behavior_near_miss(annotations: Mapping[str, str]) -> str:
    if annotations.get(BEHAVIOR_ANNOTATION) == BEHAVIOR_NAMESPACED:
        return ""
    for key in sorted(annotations):
        value = annotations[key]
        if equal_fold(key.strip(), BEHAVIOR_ANNOTATION) and equal_fold(value.strip(), BEHAVIOR_NAMESPACED):
            return f"{key}: {value}"
    return ""


class AzureIdentityBinding(BaseModel):
    """AzureIdentityBinding (nmi-semantics §1): ``spec.selector`` is a plain string compared with ``==``
    to the pod's ``aadpodidbinding`` label; ``spec.azureIdentity`` names an identity in the binding's
    namespace."""

    model_config = ConfigDict(frozen=True)
    kind: str = KIND_BINDING
    namespace: str
    name: str
    azure_identity: str = ""
    selector: str = ""
    #: value under a pre-1.6 ``Selector`` key (ignored by NMI/MIC), if any
    ignored_selector: str | None = None
    ignored_fields: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        meta = parse_metadata(obj)
        spec = get_map(obj, "spec", "")
        old = spec.get("Selector")
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            azure_identity=get_str(spec, "azureIdentity", "spec"),
            selector=get_str(spec, "selector", "spec"),
            ignored_selector=old if isinstance(old, str) else None,
            ignored_fields=_ignored(spec, ("AzureIdentity", "Selector", "Weight"), "spec"),
            resource_version=meta.resource_version,
        )


class AzureAssignedIdentity(BaseModel):
    """AzureAssignedIdentity as MIC writes it (nmi-semantics §1): the embedded identity in
    ``spec.azureIdentityRef`` is what NMI serves; ``status.status`` drives NMI's retry loop (§2)."""

    model_config = ConfigDict(frozen=True)
    kind: str = KIND_ASSIGNED
    namespace: str
    name: str
    pod: str = ""
    pod_namespace: str = ""
    node_name: str = ""
    #: the ``nodename`` label NMI's informer filters on (``--enableScaleFeatures``); None when absent
    node_label: str | None = None
    identity: AzureIdentity | None = None
    binding_name: str = ""
    status: str = ""
    resource_version: str = ""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        meta = parse_metadata(obj)
        spec = get_map(obj, "spec", "")
        ref = spec.get("azureIdentityRef")
        identity = None
        if ref is not None:
            if not isinstance(ref, Mapping):
                raise ModelError("spec.azureIdentityRef", f"expected a map, got {_type_name(ref)}")
            identity = AzureIdentity._parse(ref, "spec.azureIdentityRef")
        bref = get_map(spec, "azureBindingRef", "spec")
        bmeta = get_map(bref, "metadata", "spec.azureBindingRef")
        status = get_map(obj, "status", "")
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            pod=get_str(spec, "pod", "spec"),
            pod_namespace=get_str(spec, "podNamespace", "spec"),
            node_name=get_str(spec, "nodename", "spec"),
            node_label=meta.labels.get("nodename"),
            identity=identity,
            binding_name=get_str(bmeta, "name", "spec.azureBindingRef.metadata"),
            status=get_str(status, "status", "status"),
            resource_version=meta.resource_version,
        )


Model = Pod | PodIdentityException | AzureIdentity | AzureIdentityBinding | AzureAssignedIdentity
