"""The inputs of ``nmisim migrate``: pods with their specs and workloads, ServiceAccounts, namespaces and
federated credentials, from files (``Loaded``) or a live cluster (engine: :mod:`nmisim.engine.migration`).

Federated credentials in the input are Azure Service Operator's ``FederatedIdentityCredential``
(``managedidentity.azure.com``): ``spec.owner.name`` names the user-assigned identity; nmisim finds its
client ID from an ASO ``UserAssignedIdentity`` in the input (``status.clientId``) or from the AzureIdentity
whose resourceID ends in ``/userAssignedIdentities/<owner>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from nmisim.engine.config import FederatedCredential
from nmisim.engine.migration.assess import MigrationInput, PodEntry
from nmisim.engine.migration.objects import USE_LABEL, Namespace, PodSpec, ServiceAccount
from nmisim.engine.migration.plan import WorkloadRef
from nmisim.engine.models import KIND_POD, AzureIdentity, ModelError, Pod
from nmisim.engine.workloads import expand, is_workload
from nmisim.engine.world import World
from nmisim.sources.files import Loaded

ASO_GROUP: Final = "managedidentity.azure.com"
KIND_FIC: Final = "FederatedIdentityCredential"
KIND_ASO_IDENTITY: Final = "UserAssignedIdentity"
WEBHOOK_CONFIGURATIONS: Final = ("azure-wi-webhook-mutating-webhook-configuration",)
WEBHOOK_NAME: Final = "mutation.azure-workload-identity.io"

Warn = Callable[[str], None]


def _kind(obj: Mapping[str, Any], kind: str, group: str | None = None) -> bool:
    if obj.get("kind") != kind:
        return False
    return group is None or str(obj.get("apiVersion", "")).split("/")[0] == group


def credentials_from(
    objs: Iterable[Mapping[str, Any]], identities: Iterable[AzureIdentity]
) -> tuple[FederatedCredential, ...]:
    """ASO FederatedIdentityCredentials in ``objs``, with their identity's client ID."""
    objs = list(objs)
    aso: dict[str, str] = {}
    for o in objs:
        if _kind(o, KIND_ASO_IDENTITY, ASO_GROUP):
            md, st, sp = o.get("metadata") or {}, o.get("status") or {}, o.get("spec") or {}
            cid = st.get("clientId") if isinstance(st, Mapping) else None
            if isinstance(cid, str) and cid:
                aso[str(md.get("name", ""))] = cid
                if isinstance(sp, Mapping) and sp.get("azureName"):
                    aso[str(sp["azureName"])] = cid
    by_res = {
        i.resource_id.rsplit("/", 1)[-1].lower(): i.client_id
        for i in identities
        if i.resource_id and i.client_id
    }
    out = []
    for o in objs:
        if not _kind(o, KIND_FIC, ASO_GROUP):
            continue
        spec = o.get("spec") or {}
        md = o.get("metadata") or {}
        if not isinstance(spec, Mapping):
            continue
        owner = spec.get("owner") or {}
        oname = str(owner.get("name", "")) if isinstance(owner, Mapping) else ""
        cid = aso.get(oname) or by_res.get(oname.lower(), "")
        if not cid:
            continue
        aud = spec.get("audiences")
        out.append(
            FederatedCredential(
                client_id=cid,
                name=str(spec.get("azureName") or md.get("name", "")),
                issuer=str(spec.get("issuer", "")),
                subject=str(spec.get("subject", "")),
                audiences=tuple(str(a) for a in aud)
                if isinstance(aud, list)
                else ("api://AzureADTokenExchange",),
            )
        )
    return tuple(out)


def _template_labelled(obj: Mapping[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {}) if isinstance(spec, Mapping) else {}
    tpl = (spec.get("template") or {}) if isinstance(spec, Mapping) else {}
    labels = ((tpl.get("metadata") or {}).get("labels") or {}) if isinstance(tpl, Mapping) else {}
    return isinstance(labels, Mapping) and labels.get(USE_LABEL) == "true"


def _scaled_to_one(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The workload with one replica (a Job: one completion), for its pod-to-be."""
    spec = dict(obj.get("spec") or {})
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        spec["replicas"] = 1
    elif kind == "Job":
        spec["parallelism"] = spec["completions"] = 1
    elif kind == "CronJob":
        jt = dict(spec.get("jobTemplate") or {})
        jspec = dict(jt.get("spec") or {})
        jspec["parallelism"] = jspec["completions"] = 1
        jt["spec"] = jspec
        spec["jobTemplate"] = jt
    return {**obj, "spec": spec}


def idle_workloads(
    world: World, objs: Iterable[Mapping[str, Any]], busy: set[str], warn: Warn
) -> list[PodEntry]:
    """Workloads without pods (scaled to 0, a CronJob between runs): one pod-to-be each from the template,
    added to ``world`` so that NMI's answer today is known (``azwi podidentity detect`` misses them)."""
    out = []
    for obj in objs:
        if not is_workload(obj) or obj.get("kind") == "PodTemplate":
            continue
        md = obj.get("metadata") or {}
        refs = md.get("ownerReferences") or []
        if any(isinstance(r, Mapping) and r.get("controller") is True for r in refs):
            continue  # not top-level: its owner is the workload
        key = f"{obj.get('kind')}/{md.get('namespace') or 'default'}/{md.get('name')}"
        if key in busy:
            continue
        try:
            wl = expand(_scaled_to_one(obj))
            if not wl.pods:
                continue
            pod_obj = wl.pods[0]
            pod = Pod.from_k8s(pod_obj)
            spec = PodSpec.from_k8s(pod_obj)
        except ModelError as exc:
            warn(f"{key}: {exc}")
            continue
        world.upsert(pod)
        out.append(PodEntry(pod, spec, WorkloadRef.parse(key), _template_labelled(obj), idle=True))
    return out


def from_files(world: World, loaded: Loaded, warn: Warn) -> MigrationInput:
    """The migration's input from files: pods and pods-to-be, ServiceAccounts, Namespaces, FICs."""
    raw_pods: dict[tuple[str, str], Mapping[str, Any]] = {}
    template_labelled: dict[str, bool] = {}
    for wl in loaded.workloads:
        for pod_obj in wl.pods:
            md = pod_obj.get("metadata") or {}
            raw_pods[(str(md.get("namespace")), str(md.get("name")))] = pod_obj
    sas: dict[tuple[str, str], ServiceAccount] = {}
    namespaces: dict[str, Namespace] = {}
    objs = [obj for _, obj in loaded.raw]
    for origin, obj in loaded.raw:
        try:
            if _kind(obj, KIND_POD):
                p = Pod.from_k8s(obj)
                raw_pods[(p.namespace, p.name)] = obj
            elif _kind(obj, "ServiceAccount"):
                sa = ServiceAccount.from_k8s(obj)
                sas[(sa.namespace, sa.name)] = sa
            elif _kind(obj, "Namespace"):
                ns = Namespace.from_k8s(obj)
                namespaces[ns.name] = ns
        except ModelError as exc:
            warn(f"{origin}: {exc}")
    for wl in loaded.workloads:
        src = next(
            (
                o
                for _, o in loaded.raw
                if o.get("kind") == wl.kind and (o.get("metadata") or {}).get("name") == wl.name
            ),
            None,
        )
        template_labelled[wl.key] = _template_labelled(src) if src is not None else False
    objects: dict[str, Mapping[str, Any]] = {}
    for _, obj in loaded.raw:
        md = obj.get("metadata") or {}
        if isinstance(md, Mapping) and isinstance(obj.get("kind"), str):
            objects[f"{obj['kind']}/{md.get('namespace') or 'default'}/{md.get('name')}"] = obj
    entries = []
    for pod in world.pods():
        raw = raw_pods.get((pod.namespace, pod.name))
        if raw is None:
            continue
        key = loaded.pod_workload.get((pod.namespace, pod.name), f"Pod/{pod.namespace}/{pod.name}")
        try:
            spec = PodSpec.from_k8s(raw)
        except ModelError as exc:
            warn(f"pod {pod.namespace}/{pod.name}: {exc}")
            continue
        ref = WorkloadRef.parse(key)
        entries.append(PodEntry(pod, spec, ref, template_labelled.get(key)))
    entries += idle_workloads(world, objs, {e.workload.key for e in entries}, warn)
    return MigrationInput(
        world=world,
        pods=entries,
        service_accounts=sas,
        namespaces=namespaces,
        credentials=credentials_from(objs, world.identities()),
        objects=objects,
    )


def top_owner(
    obj: Mapping[str, Any], owners: Mapping[tuple[str, str, str], Mapping[str, Any]]
) -> tuple[str, str, str]:
    """The top-level controller of a live pod: (kind, namespace, name), following controller owner
    references through the objects read; an owner not read (a CRD's controller) ends the walk there."""
    md = obj.get("metadata") or {}
    ns = str(md.get("namespace", ""))
    kind, name = KIND_POD, str(md.get("name", ""))
    seen = set()
    cur: Mapping[str, Any] | None = obj
    while cur is not None:
        refs = (cur.get("metadata") or {}).get("ownerReferences") or []
        ctrl = next((r for r in refs if isinstance(r, Mapping) and r.get("controller") is True), None)
        if ctrl is None:
            break
        kind, name = str(ctrl.get("kind", "")), str(ctrl.get("name", ""))
        if (kind, name) in seen or kind == "Node":
            break
        seen.add((kind, name))
        cur = owners.get((kind, ns, name))
    return kind, ns, name


def from_live(
    world: World,
    *,
    pods: Iterable[Mapping[str, Any]],
    owners: Iterable[Mapping[str, Any]],
    service_accounts: Iterable[Mapping[str, Any]],
    namespaces: Iterable[Mapping[str, Any]],
    others: Iterable[Mapping[str, Any]],
    webhook_installed: bool,
    warn: Warn,
) -> MigrationInput:
    by_owner: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for o in owners:
        md = o.get("metadata") or {}
        by_owner[(str(o.get("kind")), str(md.get("namespace", "")), str(md.get("name", "")))] = o
    objects: dict[str, Mapping[str, Any]] = {f"{k}/{ns}/{n}": o for (k, ns, n), o in by_owner.items()}
    entries = []
    for obj in pods:
        md = obj.get("metadata") or {}
        pod = world.get_pod(str(md.get("namespace", "")), str(md.get("name", "")))
        if pod is None:
            continue
        try:
            spec = PodSpec.from_k8s(obj)
        except ModelError as exc:
            warn(f"pod {pod.namespace}/{pod.name}: {exc}")
            continue
        kind, ns, name = top_owner(obj, by_owner)
        if kind == KIND_POD:
            objects[f"{kind}/{ns}/{name}"] = obj
        top = by_owner.get((kind, ns, name))
        entries.append(
            PodEntry(pod, spec, WorkloadRef(kind, ns, name), _template_labelled(top) if top else None)
        )
    entries += idle_workloads(world, by_owner.values(), {e.workload.key for e in entries}, warn)
    sas = {}
    for o in service_accounts:
        try:
            sa = ServiceAccount.from_k8s(o)
            sas[(sa.namespace, sa.name)] = sa
        except ModelError as exc:
            warn(f"ServiceAccount: {exc}")
    nss = {}
    for o in namespaces:
        try:
            ns_obj = Namespace.from_k8s(o)
            nss[ns_obj.name] = ns_obj
        except ModelError as exc:
            warn(f"Namespace: {exc}")
    return MigrationInput(
        world=world,
        pods=entries,
        service_accounts=sas,
        namespaces=nss,
        credentials=credentials_from(others, world.identities()),
        service_accounts_complete=True,
        webhook_installed=webhook_installed,
        objects=objects,
    )


def iter_kinds(objs: Iterable[Mapping[str, Any]], kind: str) -> Iterator[Mapping[str, Any]]:
    return (o for o in objs if o.get("kind") == kind)
