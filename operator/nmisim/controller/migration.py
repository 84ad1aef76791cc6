"""The migration part of the operator's store: what the Azure Workload Identity migration engine
(:mod:`nmisim.engine.migration`) reads besides the World — each pod's :class:`PodSpec` (parsed once, at
intake), the ServiceAccounts and Namespaces (watched read-only) — and each pod's ``status.migration``.

The engine assesses a workload as a whole (its default identity and ServiceAccount come from all its
pods), in ``plan`` mode, as ``nmisim migrate`` does. The operator groups pods by what a pod alone tells of
its workload (:meth:`PodSpec.workload`: a ReplicaSet ``<deployment>-<pod-template-hash>`` is its
Deployment; it does not watch ReplicaSets) and assesses one workload at a time, so conflicts *between*
workloads — two workloads sharing a ServiceAccount with different default identities
(``SharedServiceAccount``), the federated-credential budget of an identity several workloads use — are
only seen by ``nmisim migrate``, which assesses the cluster at once.

An assessment costs about ten times a verdict (a few requests per pod, today and in two phases after), so
only *dirty* workloads are assessed: one whose pods, pod specs or kept results changed, whose
ServiceAccount or Namespace changed, or, for a change of an identity object, whose pods' results name the
identity concerned; every workload for a SimulationConfig change. :meth:`Migrations.assess` assesses them
(once per batch of events) and says which pods' ``status.migration`` changed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from nmisim.engine.migration.assess import MODE_PLAN, MigrationInput, PodAssessment, PodEntry, assess
from nmisim.engine.migration.classify import CLASSES, PHASES
from nmisim.engine.migration.objects import (
    PSA_ENFORCE_LABEL,
    Namespace,
    PodSpec,
    ServiceAccount,
)
from nmisim.engine.migration.plan import WorkloadRef
from nmisim.engine.models import Pod
from nmisim.engine.verdict import VERDICT_INTERCEPTED, PodResult
from nmisim.engine.world import World

log = logging.getLogger(__name__)

Key = tuple[str, str]
ResultOf = Callable[[Key], PodResult | None]
Addr = tuple[str, str]

#: the only ServiceAccount annotations and Namespace labels the engine reads: the rest is not kept, and a
#: change to it (kubectl's last-applied-configuration, a token Secret's name) requeues nothing
SA_ANNOTATION_PREFIX: Final = "azure.workload.identity/"
NAMESPACE_LABELS: Final = (PSA_ENFORCE_LABEL,)
_MAX_HAZARDS: Final = 32  # crds/nmiverdicts.nmisim.dev.yaml


def service_account(body: Mapping[str, Any]) -> ServiceAccount:
    """A ServiceAccount with only the annotations the webhook reads. ModelError for a malformed one."""
    sa = ServiceAccount.from_k8s(body)
    kept = {k: v for k, v in sa.annotations.items() if k.startswith(SA_ANNOTATION_PREFIX)}
    return ServiceAccount(sa.namespace, sa.name, kept)


def namespace(body: Mapping[str, Any]) -> Namespace:
    """A Namespace with only its Pod Security enforce label. ModelError for a malformed one."""
    ns = Namespace.from_k8s(body)
    return Namespace(ns.name, {k: v for k, v in ns.labels.items() if k in NAMESPACE_LABELS})


def migration_status(a: PodAssessment) -> dict[str, Any]:
    """``status.migration`` of an NMIVerdict. ``classIfSDKTooOld`` is null when the SDK is known (a merge
    patch then removes it)."""
    return {
        "class": {p: a.classes[p] for p in PHASES},
        "classIfSDKTooOld": {p: a.classes_if_sdk_too_old[p] for p in PHASES}
        if a.classes_if_sdk_too_old
        else None,
        "hazards": sorted({h.code for h in a.hazards})[:_MAX_HAZARDS],
        "serviceAccount": a.service_account,
        "proxy": a.proxy,
    }


def class_counts(statuses: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Pods per class in each phase (every class, zeros included), as SimulationConfig's status says."""
    counts: dict[str, Counter[str]] = {p: Counter() for p in PHASES}
    for s in statuses:
        for p in PHASES:
            counts[p][s["class"][p]] += 1
    return {p: {c: counts[p][c] for c in CLASSES} for p in PHASES}


Signature = tuple[tuple[str, ...], tuple[str, ...], PodSpec | None]


def _signature(keys: Iterable[Key], specs: Mapping[Key, PodSpec], results: ResultOf) -> Signature:
    """What the engine takes from a workload's pods as a whole (assess.py ``_groups``): the identities NMI
    gives its intercepted pods, the identities their default token requests get in pod order (the first
    that exists is the workload's default), and the first pod's spec (its ServiceAccount, SDKs, proxy)."""
    identities: set[str] = set()
    defaults: dict[str, None] = {}
    for key in sorted(keys):
        r = results(key)
        if r is None or r.verdict != VERDICT_INTERCEPTED:
            continue
        identities.update(r.identities)
        if r.token_request.status == 200 and r.token_request.identity:
            defaults.setdefault(r.token_request.identity, None)
    first = specs.get(min(keys)) if keys else None
    return tuple(sorted(identities)), tuple(defaults), first


def _representatives(keys: Iterable[Key], results: ResultOf) -> set[Key]:
    """Pods whose results give the engine the same workload-wide view as all of them: the first pod, the
    first pod naming each identity, the first pod whose default request gets each identity."""
    out: set[Key] = set()
    seen: set[tuple[str, str]] = set()
    ordered = sorted(keys)
    if ordered:
        out.add(ordered[0])
    for key in ordered:
        r = results(key)
        if r is None or r.verdict != VERDICT_INTERCEPTED:
            continue
        marks = [("id", i) for i in r.identities]
        if r.token_request.status == 200 and r.token_request.identity:
            marks.append(("default", r.token_request.identity))
        for m in marks:
            if m not in seen:
                seen.add(m)
                out.add(key)
    return out


class Migrations:
    """Pod specs, ServiceAccounts, Namespaces, the workload index, and each pod's migration status.

    A workload is *dirty* as a whole (every pod is assessed again: its ServiceAccount, Namespace, the
    configuration or an identity it uses changed) or for some of its pods (their own inputs changed). For
    the latter, when what the engine takes from the workload as a whole (:func:`_signature`) is as at the
    last assessment, only those pods are assessed, beside the few that give the engine the same view of
    the workload (:func:`_representatives`): a rolling update of a 1,000-pod Deployment assesses each new
    pod once, not the Deployment a thousand times."""

    def __init__(self) -> None:
        self.service_accounts: dict[Key, ServiceAccount] = {}
        self.namespaces: dict[str, Namespace] = {}
        self._specs: dict[Key, PodSpec] = {}
        self._workload_of: dict[Key, WorkloadRef] = {}
        self._pods_of: dict[WorkloadRef, set[Key]] = {}
        self._refs_in: dict[str, set[WorkloadRef]] = {}  # the workloads of each namespace
        self._status: dict[Key, dict[str, Any]] = {}
        self._signature: dict[WorkloadRef, Signature] = {}
        self._dirty: dict[WorkloadRef, set[Key] | None] = {}  # None: every pod
        self._dropped: set[Key] = set()  # statuses dropped since the last assessment
        self._addr: dict[Key, Addr] = {}  # where each pod is: (node, pod IP)
        # the ServiceAccounts each pod runs as or is planned to, and the pods of each
        self._sas_of: dict[Key, frozenset[Key]] = {}
        self._sa_users: dict[Key, set[Key]] = {}
        self._at: dict[Addr, set[Key]] = {}
        #: pods assessed since start, representatives included (the tests count them)
        self.assessed = 0

    # --- what is kept ---------------------------------------------------------------------------------

    def spec(self, key: Key) -> PodSpec | None:
        return self._specs.get(key)

    def status(self, key: Key) -> dict[str, Any] | None:
        """The pod's ``status.migration``; None when it has none (no spec, or not assessed yet)."""
        return self._status.get(key)

    def statuses(self) -> Iterator[dict[str, Any]]:
        return iter(self._status.values())

    def set_spec(self, key: Key, spec: PodSpec | None) -> bool:
        """Keep (or, None: drop) a pod's spec; whether it changed. A change marks the pod, and the
        workload it left."""
        old = self._specs.get(key)
        if old == spec:
            return False
        if spec is None:
            self.forget(key)
            return True
        ref = WorkloadRef(*spec.workload())
        if self._workload_of.get(key) != ref:
            self._leave(key)
            self._workload_of[key] = ref
            self._pods_of.setdefault(ref, set()).add(key)
            self._refs_in.setdefault(ref.namespace, set()).add(ref)
        self._specs[key] = spec
        self._index(key)
        self.mark(key)
        return True

    def set_service_account(self, key: Key, sa: ServiceAccount | None) -> bool:
        """Keep (or, None: drop) a ServiceAccount; whether it changed. A change marks the workloads whose
        pods run as it or whose plan names it."""
        if self.service_accounts.get(key) == sa:
            return False
        if sa is None:
            del self.service_accounts[key]
        else:
            self.service_accounts[key] = sa
        for pod in self._sa_users.get(key, ()):
            ref = self._workload_of.get(pod)
            if ref is not None:
                self._dirty[ref] = None
        return True

    def _index(self, key: Key) -> None:
        """Index the ServiceAccounts the pod runs as (its spec) or is planned to (its status)."""
        spec, status = self._specs.get(key), self._status.get(key)
        names = set()
        if spec is not None:
            names.add((key[0], spec.service_account))
        if status is not None:
            names.add((key[0], str(status["serviceAccount"])))
        new, old = frozenset(names), self._sas_of.get(key, frozenset())
        if new == old:
            return
        for sa in old - new:
            users = self._sa_users[sa]
            users.discard(key)
            if not users:
                del self._sa_users[sa]
        for sa in new - old:
            self._sa_users.setdefault(sa, set()).add(key)
        if new:
            self._sas_of[key] = new
        else:
            self._sas_of.pop(key, None)

    def set_namespace(self, name: str, ns: Namespace | None) -> bool:
        """Keep (or, None: drop) a Namespace; whether it changed. A change marks its workloads."""
        if self.namespaces.get(name) == ns:
            return False
        if ns is None:
            del self.namespaces[name]
        else:
            self.namespaces[name] = ns
        for ref in self._refs_in.get(name, ()):
            self._dirty[ref] = None
        return True

    def forget(self, key: Key) -> None:
        """The pod is gone, or its spec could not be read: no migration status."""
        self._leave(key)
        self._specs.pop(key, None)
        if self._status.pop(key, None) is not None:
            self._dropped.add(key)
        self._index(key)

    def _leave(self, key: Key) -> None:
        ref = self._workload_of.pop(key, None)
        if ref is None:
            return
        pods = self._pods_of.get(ref)
        if pods is None:
            return
        pods.discard(key)
        dirty = self._dirty.get(ref, set())
        if dirty is not None:
            dirty.discard(key)
            self._dirty[ref] = dirty  # the others' view of the workload may change without this pod
        if not pods:
            del self._pods_of[ref]
            self._dirty.pop(ref, None)
            self._signature.pop(ref, None)
            refs = self._refs_in[ref.namespace]
            refs.discard(ref)
            if not refs:
                del self._refs_in[ref.namespace]

    # --- what makes a workload dirty ------------------------------------------------------------------

    def mark(self, key: Key) -> None:
        """The pod's own inputs changed (its model, spec or kept result, an object NMI serves it with):
        assess it again, and every other pod at its address (what NMI answers a request from an address
        depends on every Pending/Running pod there)."""
        addr = self._addr.get(key)
        self._mark_pods(self._at.get(addr, ()) if addr is not None else (key,))

    def _mark_pods(self, keys: Iterable[Key]) -> None:
        for k in keys:
            ref = self._workload_of.get(k)
            if ref is None:
                continue
            dirty = self._dirty.setdefault(ref, set())
            if dirty is not None:
                dirty.add(k)

    def located(self, key: Key, addr: Addr | None) -> None:
        """The pod changed (or, None: went) and is at ``addr``. A request from an address is answered
        for whichever Pending/Running pods NMI finds there, so every other pod at the address the pod
        left or is at is assessed again (a pod finished, or a hostNetwork pod came to its node IP)."""
        old = self._addr.pop(key, None)
        if old is not None:
            at = self._at[old]
            at.discard(key)
            if not at:
                del self._at[old]
        if addr is not None and addr[1]:
            self._addr[key] = addr
            self._at.setdefault(addr, set()).add(key)
        # every pod at either address, once (marking each through mark() would walk its address again for
        # each: cubic in the pods sharing a node IP, the hostNetwork pods of a 50,000-pod cluster)
        for a in {old, addr}:
            if a is not None:
                self._mark_pods(self._at.get(a, ()))

    def mark_workload_of(self, key: Key) -> None:
        """Assess every pod of the pod's workload again (and the pods at its address)."""
        self.mark(key)
        ref = self._workload_of.get(key)
        if ref is not None:
            self._dirty[ref] = None

    def mark_all(self) -> None:
        self._dirty = dict.fromkeys(self._pods_of)

    def dirty(self, key: Key) -> bool:
        """Whether the pod's migration status waits for an assessment."""
        ref = self._workload_of.get(key)
        if ref is None or ref not in self._dirty:
            return False
        pods = self._dirty[ref]
        return pods is None or key in pods

    @property
    def pending(self) -> int:
        """Workloads waiting for an assessment."""
        return len(self._dirty)

    # --- assessing ------------------------------------------------------------------------------------

    def assess(self, world: World, results: ResultOf, budget: int | None = None) -> set[Key]:
        """Assess the dirty workloads (until about ``budget`` pods are assessed, when given); the pods
        whose ``status.migration`` changed (or went)."""
        changed, self._dropped = self._dropped, set()
        spent = 0
        while self._dirty and (budget is None or spent < budget):
            ref, dirty = self._dirty.popitem()
            keys = self._pods_of.get(ref, set())
            signature = _signature(keys, self._specs, results)
            if dirty is not None and not dirty:
                if self._signature.get(ref) == signature:
                    continue  # a pod left; the others' view of the workload is the same
                dirty = None
            if dirty is None or self._signature.get(ref) != signature:
                todo = set(keys)
            else:
                todo = dirty | _representatives(keys, results)
            self._signature[ref] = signature
            wanted = keys if dirty is None or todo == keys else dirty
            fresh = self._assess(world, ref, todo)
            spent += len(todo)
            for key in wanted:
                new = fresh.get(key)
                if self._status.get(key) != new:
                    changed.add(key)
                    if new is None:
                        self._status.pop(key, None)
                    else:
                        self._status[key] = new
                    self._index(key)
        return changed

    def _assess(self, world: World, ref: WorkloadRef, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
        entries = []
        for key in keys:
            pod: Pod | None = world.get_pod(*key)
            if pod is not None:
                entries.append(PodEntry(pod, self._specs[key], ref))
        if not entries:
            return {}
        self.assessed += len(entries)
        inp = MigrationInput(
            world,
            entries,
            service_accounts=self.service_accounts,
            namespaces=self.namespaces,
            service_accounts_complete=True,
        )
        try:
            report = assess(inp, MODE_PLAN)
        except Exception:  # an engine bug must not stop the verdicts: no migration status
            log.exception("migration of %s not assessed", ref.key)
            return {}
        return {(a.namespace, a.name): migration_status(a) for a in report.pods}
