"""Builders for the migration tests (tests/unit/test_migration_*.py): plain Kubernetes dicts for pods,
ServiceAccounts and namespaces, loaded the way ``nmisim.sources.migration.from_files`` loads them (the
engine's ``Pod``/``PodSpec``/``ServiceAccount``/``Namespace`` ``from_k8s``), into a ``MigrationInput``."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nmisim.engine.config import SimulationConfig
from nmisim.engine.migration.assess import MigrationInput, PodAssessment, PodEntry, Report
from nmisim.engine.migration.objects import Namespace, PodSpec, ServiceAccount
from nmisim.engine.migration.plan import WorkloadRef
from nmisim.engine.models import AzureIdentity, AzureIdentityBinding, Pod, PodIdentityException
from nmisim.engine.world import World

ISSUER: Final = "https://westeurope.oic.prod-aks.azure.com/00000000-0000-0000-0000-0000000000aa/cluster-1/"
TENANT: Final = "00000000-0000-0000-0000-0000000000aa"
AUDIENCE: Final = "api://AzureADTokenExchange"
USE: Final = {"azure.workload.identity/use": "true"}


def container(name: str = "app", image: str = "app:1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def pod_obj(
    name: str = "app-0",
    ns: str = "ns1",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    sa: str | None = None,
    host_network: bool = False,
    containers: Sequence[Mapping[str, Any]] | None = None,
    init_containers: Sequence[Mapping[str, Any]] | None = None,
    owner: tuple[str, str] | None = None,
    node: str = "node-1",
    ip: str | None = None,
    uid: str | None = None,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A running Pod as the API server would send it; its IP is one of its own (NMI finds pods by IP)."""
    if ip is None:
        h = zlib.crc32(f"{ns}/{name}".encode())
        ip = f"10.{(h >> 16) & 0xFF}.{(h >> 8) & 0xFF}.{h & 0xFF or 1}"
    md: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if annotations:
        md["annotations"] = dict(annotations)
    if owner is not None:
        md["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True, "uid": "u"}
        ]
    if uid is not None:
        md["uid"] = uid
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [dict(c) for c in (containers or [container()])],
    }
    if sa is not None:
        spec["serviceAccountName"] = sa
    if host_network:
        spec["hostNetwork"] = True
    if init_containers:
        spec["initContainers"] = [dict(c) for c in init_containers]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip},
    }


def sa_obj(name: str, ns: str = "ns1", annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations is not None:
        md["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": md}


def ns_obj(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}


def identity_obj(
    name: str,
    ns: str,
    client_id: str,
    *,
    type_: int = 0,
    resource_id: str | None = None,
    tenant_id: str = "",
    aux: Sequence[str] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": type_,
        "clientID": client_id,
        "resourceID": resource_id if resource_id is not None else rid(name),
    }
    if tenant_id:
        spec["tenantID"] = tenant_id
    if aux:
        spec["auxiliaryTenantIDs"] = list(aux)
    return {"kind": "AzureIdentity", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def binding_obj(name: str, ns: str, identity: str, selector: str) -> dict[str, Any]:
    return {
        "kind": "AzureIdentityBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"azureIdentity": identity, "selector": selector},
    }


def exception_obj(name: str, ns: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "kind": "AzurePodIdentityException",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podLabels": dict(pod_labels)},
    }


def rid(name: str, rg: str = "rg-1", sub: str = "sub-1") -> str:
    return (
        f"/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
        + name
    )


def fic(
    client_id: str, ns: str, sa: str, *, issuer: str = ISSUER, audience: str = AUDIENCE
) -> dict[str, Any]:
    """A SimulationConfig ``spec.workloadIdentity.federatedCredentials`` item."""
    return {
        "clientID": client_id,
        "name": f"{ns}-{sa}",
        "issuer": issuer,
        "subject": f"system:serviceaccount:{ns}:{sa}",
        "audiences": [audience],
    }


def sim_config(
    wi: Mapping[str, Any] | None = None, imds: Mapping[str, Any] | None = None
) -> SimulationConfig:
    spec: dict[str, Any] = {"workloadIdentity": {"issuer": ISSUER, "tenantID": TENANT, **(wi or {})}}
    if imds is not None:
        spec["imds"] = dict(imds)
    return SimulationConfig.from_k8s(
        {"apiVersion": "nmisim.dev/v1alpha1", "kind": "SimulationConfig", "spec": spec}
    )


def _nmi_model(o: Mapping[str, Any]) -> AzureIdentity | AzureIdentityBinding | PodIdentityException:
    kind = o.get("kind")
    if kind == "AzureIdentity":
        return AzureIdentity.from_k8s(o)
    if kind == "AzureIdentityBinding":
        return AzureIdentityBinding.from_k8s(o)
    if kind == "AzurePodIdentityException":
        return PodIdentityException.from_k8s(o)
    raise AssertionError(f"make_input: unexpected kind {kind!r}")


def make_input(
    *objs: Mapping[str, Any],
    wi: Mapping[str, Any] | None = None,
    imds: Mapping[str, Any] | None = None,
    template_labelled: Mapping[str, bool] | None = None,
    service_accounts_complete: bool = False,
    webhook_installed: bool | None = None,
) -> MigrationInput:
    """The migration input of ``objs`` (plain k8s dicts) under a SimulationConfig whose
    ``spec.workloadIdentity`` is ``wi`` (issuer and tenant preset)."""
    world = World(sim_config(wi, imds))
    pods: list[tuple[Pod, PodSpec]] = []
    sas: dict[tuple[str, str], ServiceAccount] = {}
    nss: dict[str, Namespace] = {}
    for o in objs:
        kind = o.get("kind")
        if kind == "Pod":
            p = Pod.from_k8s(o)
            world.upsert(p)
            pods.append((p, PodSpec.from_k8s(o)))
        elif kind == "ServiceAccount":
            sa = ServiceAccount.from_k8s(o)
            sas[(sa.namespace, sa.name)] = sa
        elif kind == "Namespace":
            n = Namespace.from_k8s(o)
            nss[n.name] = n
        else:
            world.upsert(_nmi_model(o))
    entries = []
    for p, spec in pods:
        ref = WorkloadRef(*spec.workload())
        entries.append(PodEntry(p, spec, ref, (template_labelled or {}).get(ref.key)))
    return MigrationInput(
        world=world,
        pods=entries,
        service_accounts=sas,
        namespaces=nss,
        service_accounts_complete=service_accounts_complete,
        webhook_installed=webhook_installed,
    )


def pod_of(report: Report, key: str) -> PodAssessment:
    for p in report.pods:
        if p.key == key:
            return p
    raise AssertionError(f"no pod {key} in {[p.key for p in report.pods]}")


def codes(p: PodAssessment) -> set[str]:
    return {h.code for h in p.hazards}


def bound_pod(
    selector: str,
    name: str = "app-0",
    ns: str = "ns1",
    **kw: Any,
) -> dict[str, Any]:
    """A pod NMI binds by ``aadpodidbinding=<selector>``."""
    labels = {"aadpodidbinding": selector, **(kw.pop("labels", None) or {})}
    return pod_obj(name, ns, labels=labels, **kw)
