"""Who can obtain an identity: the reverse of ``evaluate``, like kubectl-who-can (issue 19 item 7).

An identity is named as an AzureIdentity (``NAME`` or ``NAMESPACE/NAME``), a client ID or a resource ID
(both compared ignoring case, as Azure treats them), or ``system-assigned`` (the VMs' own identity). It
stands for an Azure principal: every AzureIdentity and every VM user-assigned identity of the
SimulationConfig's IMDS model with the same client ID or resource ID is that principal too.

Nothing here decides on its own whether a pod can get a token: every answer is the engine's simulation
of a token request (:func:`nmisim.engine.routes.simulate_request`), asking for the identity by
``client_id``, then by ``msi_res_id``, then naming none, and a way counts when the simulated answer is
200 with a token for the principal. The ways (nmi-semantics §2, §3, §7, §8.4, §8.9):

* ``binding``: a pod NMI intercepts, through its AzureIdentityBinding (same namespace or not);
* ``exempt``: an excepted pod (or the MIC shortcut): NMI asks IMDS itself, so the node's VM must carry
  the identity in ``spec.imds``;
* ``hostNetwork``: a hostNetwork pod talks to IMDS directly, same condition;
* ``nmi-port``: a caller of NMI's own port from a hostNetwork pod's IP is looked up by that IP and gets
  the pod's binding (HostNetworkIdentityExposed), with NMI's real lookup (several pods on the IP: 500);
* ``host-token``: NMI's ``/host/token`` answers anything on the node's host network (127.0.0.1) for the
  pod named in its ``podns``/``podname`` headers, so every hostNetwork pod on a node gets the identity of
  any pod on that node bound to it (and so does every process on the node: :attr:`WhoCan.host_token`).

Rows carry a ``workload`` field: the workload (``Kind/ns/name``) a pod-to-be comes from, set by the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from nmisim.engine.config import UserAssignedIdentity
from nmisim.engine.fold import equal_fold
from nmisim.engine.http import (
    DEFAULT_HEADERS,
    DEFAULT_QUERY,
    SERVED_BY_IMDS,
    SERVED_BY_NMI,
    TARGET_NMI,
    HttpRequest,
    RequestResult,
    json_number,
)
from nmisim.engine.imds import SYSTEM_ASSIGNED
from nmisim.engine.models import FINISHED_PHASES, AzureIdentity, Pod
from nmisim.engine.router import ROUTE_DIRECT
from nmisim.engine.routes import simulate_request
from nmisim.engine.world import World

HOW_BINDING: Final = "binding"
HOW_EXEMPT: Final = "exempt"
HOW_HOST_NETWORK: Final = "hostNetwork"
HOW_NMI_PORT: Final = "nmi-port"
HOW_HOST_TOKEN: Final = "host-token"
#: table and summary order
HOWS: Final = (HOW_BINDING, HOW_EXEMPT, HOW_HOST_NETWORK, HOW_NMI_PORT, HOW_HOST_TOKEN)

ASK_CLIENT_ID: Final = "client_id"
ASK_RES_ID: Final = "msi_res_id"
ASK_NONE: Final = "none"

HOST_IP: Final = "127.0.0.1"
HOST_TOKEN_PATH: Final = "/host/token"


class WhoCanError(ValueError):
    """An identity that matches nothing, or a name that matches several: bad input (exit 2)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The Azure identity asked about, and every object in the input that stands for it."""

    query: str
    client_ids: tuple[str, ...] = ()
    resource_ids: tuple[str, ...] = ()
    system_assigned: bool = False
    #: AzureIdentity keys (namespace/name) with this client ID or resource ID
    azure_identities: tuple[str, ...] = ()
    #: the IMDS model lists it cluster-wide (``spec.imds.userAssigned``/``systemAssigned``)
    on_all_vms: bool = False
    #: nodes whose VM carries it (``spec.imds.nodes`` and the cluster-wide list, for the nodes known)
    vm_nodes: tuple[str, ...] = ()

    def matches(self, client_id: str, resource_id: str) -> bool:
        """Whether an identity with these IDs is this principal (IDs compare ignoring case)."""
        return any(equal_fold(client_id, c) for c in self.client_ids if client_id) or any(
            equal_fold(resource_id, r) for r in self.resource_ids if resource_id
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "clientIDs": list(self.client_ids),
            "resourceIDs": list(self.resource_ids),
            "systemAssigned": self.system_assigned,
            "azureIdentities": list(self.azure_identities),
            "onAllVMs": self.on_all_vms,
            "vmNodes": list(self.vm_nodes),
        }


@dataclass(frozen=True, slots=True)
class WhoCanRow:
    """One pod and one way it obtains the identity."""

    namespace: str
    name: str
    how: str
    #: the objects that decide, in words (binding and AzureIdentity, exception, node's VM, ...)
    via: str
    #: how the request named the identity: client_id, msi_res_id or none
    ask: str
    #: the identity that served it: an AzureIdentity key, or the VM identity IMDS names
    identity: str
    wait_seconds: float = 0.0
    cross_namespace: bool = False
    #: the workload (``Kind/ns/name``) a pod-to-be comes from; empty for a pod of its own
    workload: str = ""
    node: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "workload": self.workload or None,
            "node": self.node or None,
            "how": self.how,
            "via": self.via,
            "ask": self.ask,
            "identity": self.identity,
            "crossNamespace": self.cross_namespace,
            "waitSeconds": json_number(self.wait_seconds),
        }


@dataclass(frozen=True, slots=True)
class HostTokenExposure:
    """Any process on ``node`` obtains the identity from NMI's /host/token by naming ``pod``."""

    node: str
    pod: str
    identity: str

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "pod": self.pod, "identity": self.identity}


@dataclass(frozen=True, slots=True)
class WhoCan:
    principal: Principal
    rows: tuple[WhoCanRow, ...]
    host_token: tuple[HostTokenExposure, ...] = field(default=())

    def summary(self) -> dict[str, int]:
        out = {"pods": len({(r.namespace, r.name) for r in self.rows})}
        for how in HOWS:
            out[how] = sum(1 for r in self.rows if r.how == how)
        return out


# ------------------------------------------------------------------ resolving the identity
def _known_nodes(world: World) -> list[str]:
    nodes = {p.node_name for p in world.pods() if p.node_name}
    nodes.update(world.config.imds.nodes)
    return sorted(nodes)


def _vm_identities(world: World) -> list[UserAssignedIdentity]:
    imds = world.config.imds
    out = list(imds.user_assigned)
    for ov in imds.nodes.values():
        out.extend(ov.user_assigned or ())
    return out


def resolve(world: World, query: str) -> Principal:
    """The principal ``query`` names (see the module doc). Raises :class:`WhoCanError`."""
    q = query.strip()
    if not q:
        raise WhoCanError(
            "IDENTITY is empty: pass an AzureIdentity name, NAMESPACE/NAME, a clientID or a resourceID"
        )
    idents = world.identities()
    if equal_fold(q, SYSTEM_ASSIGNED):
        return _system_assigned(world, q)
    seeds: list[tuple[str, str]] = []  # (client_id, resource_id) of what the query names
    if q.count("/") == 1 and not q.startswith("/"):
        ns, name = q.split("/")
        found = world.get_identity(ns, name)
        if found is not None:
            seeds.append((found.client_id, found.resource_id))
    elif "/" not in q:
        named = [i for i in idents if i.name == q]
        if len(named) > 1:
            raise WhoCanError(
                f"AzureIdentity name {q!r} is ambiguous: {', '.join(i.key for i in named)}; "
                "pass NAMESPACE/NAME"
            )
        seeds.extend((i.client_id, i.resource_id) for i in named)
    if not seeds:
        ids = [(i.client_id, i.resource_id) for i in idents] + [
            (u.client_id, u.resource_id) for u in _vm_identities(world)
        ]
        if any(equal_fold(c, q) for c, _ in ids if c) or any(equal_fold(r, q) for _, r in ids if r):
            seeds.append((q, "") if "/" not in q else ("", q))
    if not seeds:
        raise WhoCanError(
            f"no AzureIdentity or VM identity matches {query!r} (by name, NAMESPACE/NAME, clientID or "
            "resourceID; VM identities come from the SimulationConfig's spec.imds)"
        )
    return _expand(world, q, seeds)


def _expand(world: World, query: str, seeds: list[tuple[str, str]]) -> Principal:
    """The principal's IDs (each spelling once, in the order found): the seeds' own, and, for a query
    that names one ID only, the other ID of every object with that ID. Not transitive: an object that
    shares one ID and carries a different other one does not pull in a third principal."""
    client_ids: list[str] = []
    resource_ids: list[str] = []

    def add(cid: str, rid: str) -> None:
        if cid and not any(equal_fold(cid, c) for c in client_ids):
            client_ids.append(cid)
        if rid and not any(equal_fold(rid, r) for r in resource_ids):
            resource_ids.append(rid)

    for cid, rid in seeds:
        add(cid, rid)
    if all(not (c and r) for c, r in seeds):
        seed = Principal(query, tuple(client_ids), tuple(resource_ids))
        everything = [(i.client_id, i.resource_id) for i in world.identities()]
        everything += [(u.client_id, u.resource_id) for u in _vm_identities(world)]
        for cid, rid in everything:
            if seed.matches(cid, rid):
                add(cid, rid)
    p = Principal(query, tuple(client_ids), tuple(resource_ids))
    keys = tuple(i.key for i in world.identities() if p.matches(i.client_id, i.resource_id))
    imds = world.config.imds
    on_all = any(p.matches(u.client_id, u.resource_id) for u in imds.user_assigned)
    vm_nodes = tuple(
        n
        for n in _known_nodes(world)
        if any(p.matches(u.client_id, u.resource_id) for u in imds.vm_for(n).user_assigned)
    )
    return Principal(query, p.client_ids, p.resource_ids, False, keys, on_all, vm_nodes)


def _system_assigned(world: World, query: str) -> Principal:
    imds = world.config.imds
    nodes = tuple(n for n in _known_nodes(world) if imds.vm_for(n).system_assigned)
    if not imds.system_assigned and not nodes:
        raise WhoCanError(
            f"no AzureIdentity or VM identity matches {query!r}: spec.imds gives no VM a system-assigned "
            "identity"
        )
    return Principal(query, system_assigned=True, on_all_vms=imds.system_assigned, vm_nodes=nodes)


# ------------------------------------------------------------------ asking the engine
def _asks(p: Principal) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """The token requests' extra query parameters, in the order tried: each client ID spelling, each
    resource ID spelling, then naming no identity (NMI's first identity, or IMDS's default rules)."""
    out: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    out += [(ASK_CLIENT_ID, (("client_id", c),)) for c in p.client_ids]
    out += [(ASK_RES_ID, (("msi_res_id", r),)) for r in p.resource_ids]
    out.append((ASK_NONE, ()))
    return out


def _obtained(p: Principal, res: RequestResult) -> bool:
    """Whether the simulated answer is a token for the principal."""
    if res.status != 200:
        return False
    if res.served_by == SERVED_BY_NMI:
        ident = res.azure_identity
        return ident is not None and not p.system_assigned and p.matches(ident.client_id, ident.resource_id)
    if res.served_by == SERVED_BY_IMDS and res.identity:
        if p.system_assigned:
            return res.identity == SYSTEM_ASSIGNED
        return res.identity != SYSTEM_ASSIGNED and p.matches(res.identity, res.identity)
    return False


Query = tuple[tuple[str, str], ...]


def _first_token(
    world: World, p: Principal, make: Callable[[Query], HttpRequest], **kwargs: Any
) -> tuple[str, RequestResult] | None:
    """The first of :func:`_asks` whose simulated answer is a token for the principal."""
    for ask, extra in _asks(p):
        res = simulate_request(world, make(extra), **kwargs)
        if _obtained(p, res):
            return ask, res
    return None


def _token_request(extra: tuple[tuple[str, str], ...]) -> HttpRequest:
    return HttpRequest(query=(*DEFAULT_QUERY, *extra), headers=DEFAULT_HEADERS)


def _bindings_to(world: World, pod: Pod, ident: AzureIdentity) -> list[str]:
    """The bindings through which ``pod`` reaches ``ident``: AzureAssignedIdentities' binding names where
    they exist, else the bindings that select the pod and name the identity."""
    assigned = world.assigned_for(pod)
    if assigned:
        names = {
            a.binding_name
            for a in assigned
            if a.identity is not None and a.identity.key == ident.key and a.binding_name
        }
        return [f"AzureIdentityBinding {n}" for n in sorted(names)]
    return [
        f"AzureIdentityBinding {b.key}"
        for b in world.candidate_bindings(pod)
        if b.namespace == ident.namespace and b.azure_identity == ident.name
    ]


def _nmi_row(world: World, pod: Pod, how: str, ask: str, res: RequestResult) -> WhoCanRow:
    ident = res.azure_identity
    assert ident is not None
    cross = ident.namespace != pod.namespace
    via = ", ".join(_bindings_to(world, pod, ident)) or "an assigned identity"
    via += f" -> AzureIdentity {ident.key}"
    via += " (cross-namespace)" if cross else " (same namespace)"
    if how == HOW_NMI_PORT:
        via = f"NMI's own port, caller looked up by IP {pod.pod_ip or '(pod IP)'}: " + via
    return WhoCanRow(
        pod.namespace, pod.name, how, via, ask, ident.key, res.wait_seconds, cross, node=pod.node_name
    )


def _imds_row(world: World, pod: Pod, how: str, ask: str, res: RequestResult) -> WhoCanRow:
    node = pod.node_name or "(unscheduled)"
    if how == HOW_EXEMPT:
        excs = world.matching_exceptions(pod)
        by = f"AzurePodIdentityException {pod.namespace}/{excs[0]}" if excs else "the MIC shortcut"
        via = f"{by}: NMI asks IMDS on node {node}'s VM, which carries it"
    else:
        via = f"IMDS on node {node}'s VM directly (NMI never sees hostNetwork traffic), which carries it"
    return WhoCanRow(
        pod.namespace, pod.name, how, via, ask, res.identity or "", res.wait_seconds, node=pod.node_name
    )


def who_can(world: World, query: str) -> WhoCan:
    """Every Pending/Running pod (or pod with no status) that can obtain the identity ``query`` names,
    and how (see the module doc), sorted by namespace, name and way."""
    p = resolve(world, query)
    pods = sorted(
        (x for x in world.pods() if x.phase not in FINISHED_PHASES), key=lambda x: (x.namespace, x.name)
    )
    rows: list[WhoCanRow] = []
    for pod in pods:
        got = _first_token(world, p, _token_request, pod=pod, assume_found=True)
        if got is not None:
            ask, res = got
            if res.route == ROUTE_DIRECT:
                rows.append(_imds_row(world, pod, HOW_HOST_NETWORK, ask, res))
            elif res.served_by == SERVED_BY_IMDS:
                rows.append(_imds_row(world, pod, HOW_EXEMPT, ask, res))
            else:
                rows.append(_nmi_row(world, pod, HOW_BINDING, ask, res))
        if pod.host_network:
            # NMI's real lookup by IP (no assume_found): pods sharing the IP make it a 500 today
            got = _first_token(world, p, _token_request, pod=pod, target=TARGET_NMI)
            if got is not None:
                rows.append(_nmi_row(world, pod, HOW_NMI_PORT, *got))
    exposures = _host_token(world, p, pods)
    for exp in exposures:
        for caller in pods:
            if caller.host_network and caller.node_name == exp.node:
                via = f"NMI's /host/token from 127.0.0.1 on node {exp.node}, naming pod {exp.pod}"
                rows.append(
                    WhoCanRow(
                        caller.namespace,
                        caller.name,
                        HOW_HOST_TOKEN,
                        via,
                        exp.ask,
                        exp.identity,
                        exp.wait_seconds,
                        node=exp.node,
                    )
                )
    order = {h: i for i, h in enumerate(HOWS)}
    rows.sort(key=lambda r: (r.namespace, r.name, order[r.how], r.via))
    return WhoCan(
        p, tuple(_dedupe(rows)), tuple(HostTokenExposure(e.node, e.pod, e.identity) for e in exposures)
    )


@dataclass(frozen=True, slots=True)
class _Exposure:
    node: str
    pod: str
    identity: str
    ask: str
    wait_seconds: float


def _host_token(world: World, p: Principal, pods: Iterable[Pod]) -> list[_Exposure]:
    """For each scheduled pod, whether /host/token on its node serves the principal when named in the
    headers (nmi-semantics §2 "/host/token", §8.9)."""
    if p.system_assigned:
        return []  # NMI serves bound identities only; IMDS's own default is not on this route
    out: list[_Exposure] = []
    for pod in pods:
        if not pod.node_name:
            continue

        def make(extra: tuple[tuple[str, str], ...], target: Pod = pod) -> HttpRequest:
            return HttpRequest(
                path=HOST_TOKEN_PATH,
                query=(*DEFAULT_QUERY, *extra),
                headers=(("podns", target.namespace), ("podname", target.name)),
            )

        got = _first_token(world, p, make, ip=HOST_IP, node=pod.node_name)
        if got is not None:
            ask, res = got
            out.append(
                _Exposure(
                    pod.node_name, f"{pod.namespace}/{pod.name}", res.identity or "", ask, res.wait_seconds
                )
            )
    return out


def _dedupe(rows: list[WhoCanRow]) -> list[WhoCanRow]:
    """One host-token row per caller and node: the first pod named (rows are sorted)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in rows:
        if r.how == HOW_HOST_TOKEN:
            k = (r.namespace, r.name, r.node)
            if k in seen:
                continue
            seen.add(k)
        out.append(r)
    return out
