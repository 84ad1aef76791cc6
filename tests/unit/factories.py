"""The unit tests' builders: k8s bodies and the engine's models made from them (one pod builder for every
suite), the shared ``UID``, and a local HTTP server for the fake API servers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nmisim.engine.config import SimulationConfig
from nmisim.engine.models import (
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    PodIdentityException,
)
from nmisim.engine.world import World

#: a pod's uid, where a test needs one (Event names use its first 8 characters)
UID = "0a1b2c3d-0000-4000-8000-000000000001"
CID1 = "11111111-aaaa-bbbb-cccc-000000000001"
CID2 = "22222222-aaaa-bbbb-cccc-000000000002"


def rid(name: str) -> str:
    """A resourceID that passes MIC's ValidateResourceID (pkg/utils/utils.go)."""
    return (
        "/subscriptions/sub-1/resourcegroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
        + name
    )


def pod_body(
    name: str = "p",
    ns: str = "default",
    labels: dict[str, str] | None = None,
    *,
    node: str = "node-1",
    ip: str | None = "10.0.0.1",
    phase: str | None = "Running",
    host_network: bool = False,
    rs: str | None = None,
    uid: str | None = None,
    rv: str | None = None,
) -> dict[str, Any]:
    """A Pod as the API server sends it (``uid`` and ``resourceVersion`` only when given)."""
    metadata: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if uid is not None:
        metadata["uid"] = uid
    if rv is not None:
        metadata["resourceVersion"] = rv
    if rs is not None:
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": rs}]
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [{"name": "c", "image": "i"}]},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, **({"podIP": ip} if ip else {})}
    return obj


def pod(
    name: str = "p",
    ns: str = "default",
    labels: dict[str, str] | None = None,
    *,
    node: str = "node-1",
    ip: str | None = "10.0.0.1",
    phase: str | None = "Running",
    host_network: bool = False,
    rs: str | None = None,
    uid: str | None = None,
    rv: str | None = None,
) -> Pod:
    """The engine's Pod of :func:`pod_body`."""
    return Pod.from_k8s(
        pod_body(
            name, ns, labels, node=node, ip=ip, phase=phase, host_network=host_network, rs=rs, uid=uid, rv=rv
        )
    )


def exc(name: str, ns: str, pod_labels: dict[str, str]) -> PodIdentityException:
    return PodIdentityException.from_k8s(
        {
            "kind": "AzurePodIdentityException",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podLabels": pod_labels},
        }
    )


def ident(
    name: str,
    ns: str,
    client_id: str = CID1,
    *,
    type_: int = 0,
    resource_id: str = "",
    namespaced: bool = False,
    aux: list[str] | None = None,
) -> AzureIdentity:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if namespaced:
        md["annotations"] = {"aadpodidentity.k8s.io/Behavior": "namespaced"}
    spec: dict[str, Any] = {"type": type_, "clientID": client_id, "resourceID": resource_id or rid(name)}
    if type_ in (1, 2):
        spec["tenantID"] = "tenant-0"
    if aux:
        spec["auxiliaryTenantIDs"] = aux
    return AzureIdentity.from_k8s({"kind": "AzureIdentity", "metadata": md, "spec": spec})


def binding(name: str, ns: str, identity: str, selector: str) -> AzureIdentityBinding:
    return AzureIdentityBinding.from_k8s(
        {
            "kind": "AzureIdentityBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"azureIdentity": identity, "selector": selector},
        }
    )


def assigned(
    name: str,
    pod_name: str,
    pod_ns: str,
    identity: AzureIdentity,
    status: str,
    *,
    node: str = "node-1",
) -> AzureAssignedIdentity:
    return AzureAssignedIdentity.from_k8s(
        {
            "kind": "AzureAssignedIdentity",
            "metadata": {"name": name, "namespace": "default", "labels": {"nodename": node}},
            "spec": {
                "pod": pod_name,
                "podNamespace": pod_ns,
                "nodename": node,
                "azureIdentityRef": {
                    "metadata": {
                        "name": identity.name,
                        "namespace": identity.namespace,
                        "annotations": {"aadpodidentity.k8s.io/Behavior": "namespaced"}
                        if identity.namespaced
                        else {},
                    },
                    "spec": {
                        "type": identity.type,
                        "clientID": identity.client_id,
                        "resourceID": identity.resource_id,
                    },
                },
            },
            "status": {"status": status},
        }
    )


def config(nmi: dict[str, Any] | None = None, imds: dict[str, Any] | None = None) -> SimulationConfig:
    spec: dict[str, Any] = {}
    if nmi is not None:
        spec["nmi"] = nmi
    if imds is not None:
        spec["imds"] = imds
    return SimulationConfig.from_k8s(
        {"apiVersion": "nmisim.dev/v1alpha1", "kind": "SimulationConfig", "spec": spec}
    )


def world(*objs: Any, cfg: SimulationConfig | None = None) -> World:
    w = World(cfg)
    for o in objs:
        w.upsert(o)
    return w


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1: its runner (to clean up) and the port."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port
