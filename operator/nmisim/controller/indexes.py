"""kopf indexes of the small kinds: exceptions, identities, bindings, assigned identities, configs.

kopf fills every index from the initial LIST before any handler runs, so the reconciler is seeded with
every exception and binding at once and its first answers already see them. Index values are parsed
engine models (only the fields NMI reads), never whole Kubernetes bodies. An object the engine cannot
parse is left out of its index with a warning: the operator never stops on one.

Pods and NMIVerdicts are not indexed by kopf: its readiness bookkeeping waits object by object and costs
O(n^2) at thousands of objects (16 s for 2,000 pods, measured with py-spy). The reconciler lists them
itself at start (paginated) and follows kopf's watch events from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import kopf

from nmisim.controller.reconciler import ObjectRecord
from nmisim.engine.models import (
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    ModelError,
    PodIdentityException,
)

AAD = "aadpodidentity.k8s.io"
NMISIM = "nmisim.dev"
Key = tuple[str, str]
T = TypeVar("T")


def _parse(cls: Any, body: Mapping[str, Any], logger: Any) -> Any:
    try:
        return cls.from_k8s(body)
    except ModelError as exc:
        meta = body.get("metadata") or {}
        logger.warning(f"ignored: {cls.__name__} {meta.get('namespace')}/{meta.get('name')}: {exc}")
        return None


def _entry(key: Key, value: T | None) -> dict[Key, T] | None:
    return {key: value} if value is not None else None


@kopf.index(AAD, "v1", "azurepodidentityexceptions")
def nmisim_exceptions(
    body: kopf.Body, namespace: str | None, name: str, logger: Any, **_: Any
) -> dict[Key, tuple[PodIdentityException, ObjectRecord]] | None:
    exc = _parse(PodIdentityException, body, logger)
    return _entry((namespace or "", name), (exc, ObjectRecord.from_body(body)) if exc is not None else None)


@kopf.index(AAD, "v1", "azureidentities")
def nmisim_identities(
    body: kopf.Body, namespace: str | None, name: str, logger: Any, **_: Any
) -> dict[Key, AzureIdentity] | None:
    return _entry((namespace or "", name), _parse(AzureIdentity, body, logger))


@kopf.index(AAD, "v1", "azureidentitybindings")
def nmisim_bindings(
    body: kopf.Body, namespace: str | None, name: str, logger: Any, **_: Any
) -> dict[Key, AzureIdentityBinding] | None:
    return _entry((namespace or "", name), _parse(AzureIdentityBinding, body, logger))


@kopf.index(AAD, "v1", "azureassignedidentities")
def nmisim_assigned(
    body: kopf.Body, namespace: str | None, name: str, logger: Any, **_: Any
) -> dict[Key, AzureAssignedIdentity] | None:
    return _entry((namespace or "", name), _parse(AzureAssignedIdentity, body, logger))


@kopf.index(NMISIM, "v1alpha1", "simulationconfigs")
def nmisim_configs(body: kopf.Body, name: str, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status")}}


def one(index: kopf.Index[Any, T], key: Any) -> T | None:
    """The single value an index holds under a key, or None."""
    store = index.get(key)
    if store is None:
        return None
    for value in store:
        return value
    return None


def values(index: kopf.Index[Any, T]) -> list[T]:
    return [v for store in index.values() for v in store]
