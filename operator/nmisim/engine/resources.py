"""The Kubernetes resources nmisim reads and writes, in one table: kind → API group, version, plural,
scope, and the engine's parser. Every API path (the operator's lists, watches and writes, the node
agent's watches, the CLI's live reads), every kopf registration and the RBAC the manifests grant follow
from it; ``tests/unit/test_resources.py`` checks it against ``crds/`` and ``manifests/``.

Data only: the engine does no I/O, and this module names no client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.engine.config import SimulationConfig
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Model,
    Pod,
    PodIdentityException,
)

AAD_GROUP: Final = "aadpodidentity.k8s.io"
NMISIM_GROUP: Final = "nmisim.dev"
KIND_VERDICT: Final = "NMIVerdict"
KIND_EVENT: Final = "Event"
#: read by the operator for the migration's status (nmisim.engine.migration.objects parses them)
KIND_SERVICE_ACCOUNT: Final = "ServiceAccount"
KIND_NAMESPACE: Final = "Namespace"


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource: where it lives in the API and, for the kinds the engine reads, its model."""

    kind: str
    group: str  #: "" for the core group
    version: str
    plural: str
    namespaced: bool
    model: type[Model] | type[SimulationConfig] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The API path: the collection (all namespaces when ``namespace`` is None), one object, or one
        object's subresource."""
        out = self.prefix
        if namespace is not None and self.namespaced:
            out += f"/namespaces/{namespace}"
        out += f"/{self.plural}"
        if name is not None:
            out += f"/{name}"
            if subresource:
                out += f"/{subresource}"
        return out


RESOURCES: Final[Mapping[str, Resource]] = {
    r.kind: r
    for r in (
        Resource(KIND_POD, "", "v1", "pods", True, Pod),
        Resource(KIND_EXCEPTION, AAD_GROUP, "v1", "azurepodidentityexceptions", True, PodIdentityException),
        Resource(KIND_IDENTITY, AAD_GROUP, "v1", "azureidentities", True, AzureIdentity),
        Resource(KIND_BINDING, AAD_GROUP, "v1", "azureidentitybindings", True, AzureIdentityBinding),
        Resource(KIND_ASSIGNED, AAD_GROUP, "v1", "azureassignedidentities", True, AzureAssignedIdentity),
        Resource(KIND_CONFIG, NMISIM_GROUP, "v1alpha1", "simulationconfigs", False, SimulationConfig),
        Resource(KIND_VERDICT, NMISIM_GROUP, "v1alpha1", "nmiverdicts", True),
        Resource(KIND_EVENT, "", "v1", "events", True),
        Resource(KIND_SERVICE_ACCOUNT, "", "v1", "serviceaccounts", True),
        Resource(KIND_NAMESPACE, "", "v1", "namespaces", False),
    )
}

#: the aad-pod-identity kinds NMI reads, in the order the CLI loads them
AAD_KINDS: Final = (KIND_EXCEPTION, KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED)


def parse(body: Mapping[str, Any], kind: str | None = None) -> Model | SimulationConfig | None:
    """The one way from a Kubernetes object to an engine model: the parser this table names for its kind
    (``kind``, else the body's own); None for a kind the engine does not read. Raises
    :class:`nmisim.engine.models.ModelError` (or ``ConfigError``) naming the field path."""
    k = kind if kind is not None else body.get("kind")
    r = RESOURCES.get(k) if isinstance(k, str) else None
    if r is None or r.model is None:
        return None
    if "kind" not in body:
        body = {**body, "kind": k}
    return r.model.from_k8s(body)


def resource(kind: str) -> Resource:
    """The resource of ``kind``; KeyError for a kind nmisim does not know."""
    return RESOURCES[kind]
