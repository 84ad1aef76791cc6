"""The world: every object NMI can see plus the SimulationConfig, indexed for fast per-pod evaluation.

``World.evaluate(pod)`` is a pure function of the world's state. Its cost depends on the pod's own labels,
bindings and assigned identities, never on the total number of exceptions or bindings (all lookups are
through indexes kept up to date by ``upsert``/``remove``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from nmisim.engine.config import SimulationConfig
from nmisim.engine.exceptions import ExceptionIndex
from nmisim.engine.findings import Finding
from nmisim.engine.fold import equal_fold, fold
from nmisim.engine.http import (
    DEFAULT_REQUEST,
    TARGET_IMDS,
    HttpRequest,
    RequestResult,
)
from nmisim.engine.identities import (
    AssignedEntry,
    MicOutcome,
    Selection,
    entries_from_assigned,
    select_managed,
    select_standard,
    simulate_mic,
)
from nmisim.engine.models import (
    FINISHED_PHASES,
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    LOOKUP_PHASES,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Model,
    Pod,
    PodIdentityException,
)
from nmisim.engine.nearmiss import NearMissIndex
from nmisim.engine.objects import ObjectFindings, object_findings
from nmisim.engine.podfindings import pod_findings
from nmisim.engine.routes import simulate_request
from nmisim.engine.trace import decision_trace
from nmisim.engine.verdict import (
    VERDICT_BYPASS,
    VERDICT_EXEMPT,
    VERDICT_INACTIVE,
    VERDICT_INTERCEPTED,
    PodResult,
    TokenRequestOutcome,
)

Key = tuple[str, str]


@dataclass(slots=True)
class _StandardInfo:
    entries: list[AssignedEntry] = field(default_factory=list)
    mic: MicOutcome | None = None
    hidden: list[AzureAssignedIdentity] = field(default_factory=list)
    aai: list[AzureAssignedIdentity] = field(default_factory=list)


def _add(index: dict[Key, set[Key]] | dict[str, set[Key]], k: object, v: Key) -> None:
    index.setdefault(k, set()).add(v)  # type: ignore[arg-type]


def _discard(index: dict[Key, set[Key]] | dict[str, set[Key]], k: object, v: Key) -> None:
    s = index.get(k)  # type: ignore[call-overload]
    if s is not None:
        s.discard(v)
        if not s:
            del index[k]  # type: ignore[arg-type]


class World:
    """All pods and aad-pod-identity objects, plus the SimulationConfig."""

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self._config = config if config is not None else SimulationConfig.default()
        self._pods: dict[Key, Pod] = {}
        self._pods_by_addr: dict[Key, set[Key]] = {}
        self._exceptions: dict[Key, PodIdentityException] = {}
        self._exc_index = ExceptionIndex()
        self._exc_ignored_index = ExceptionIndex(ignored=True)
        self._identities: dict[Key, AzureIdentity] = {}
        self._bindings: dict[Key, AzureIdentityBinding] = {}
        self._bindings_by_selector: dict[str, set[Key]] = {}
        self._bindings_by_folded_selector: dict[str, set[Key]] = {}
        self._bindings_by_ignored_selector: dict[str, set[Key]] = {}
        self._bindings_by_identity: dict[Key, set[Key]] = {}  # (namespace, azureIdentity) -> bindings
        #: distinct selectors by one-deletion neighbourhood, built on the first "did you mean" question and
        #: kept up to date by upsert/remove from then on
        self._near_selectors: NearMissIndex | None = None
        self._assigned: dict[Key, AzureAssignedIdentity] = {}
        self._assigned_by_pod: dict[Key, set[Key]] = {}
        #: bumped by every change (objects or configuration): an answer computed at one generation holds
        #: until the next, the engine being a pure function of the world (the agent caches by it)
        self.generation = 0
        #: bumped by a change to an AzureIdentity or the configuration only (what depends on identities
        #: alone is kept across the pod changes that bump ``generation``)
        self.identity_generation = 0

    # ----------------------------------------------------------------- state
    @property
    def config(self) -> SimulationConfig:
        return self._config

    def set_config(self, config: SimulationConfig) -> None:
        self._config = config
        self.generation += 1
        self.identity_generation += 1

    def upsert(self, obj: Model) -> None:
        """Add or replace an object, keyed by (kind, namespace, name)."""
        self.remove(obj.kind, obj.namespace, obj.name)
        self.generation += 1
        key = (obj.namespace, obj.name)
        if isinstance(obj, Pod):
            self._pods[key] = obj
            if obj.pod_ip:
                _add(self._pods_by_addr, (obj.node_name, obj.pod_ip), key)
        elif isinstance(obj, PodIdentityException):
            self._exceptions[key] = obj
            self._exc_index.add(obj)
            self._exc_ignored_index.add(obj)
        elif isinstance(obj, AzureIdentity):
            self._identities[key] = obj
            self.identity_generation += 1
        elif isinstance(obj, AzureIdentityBinding):
            self._bindings[key] = obj
            if self._near_selectors is not None and obj.selector not in self._bindings_by_selector:
                self._near_selectors.add(obj.selector)
            _add(self._bindings_by_selector, obj.selector, key)
            _add(self._bindings_by_folded_selector, fold(obj.selector), key)
            _add(self._bindings_by_identity, (obj.namespace, obj.azure_identity), key)
            if obj.ignored_selector is not None:
                _add(self._bindings_by_ignored_selector, obj.ignored_selector, key)
        elif isinstance(obj, AzureAssignedIdentity):
            self._assigned[key] = obj
            _add(self._assigned_by_pod, (obj.pod_namespace, obj.pod), key)
        else:  # pragma: no cover - the Model union is exhaustive
            raise TypeError(f"cannot store {type(obj).__name__}")

    def remove(self, kind: str, namespace: str, name: str) -> bool:
        """Remove an object by Kubernetes kind, namespace and name; True if it existed."""
        self.generation += 1
        key = (namespace, name)
        if kind == KIND_POD:
            pod = self._pods.pop(key, None)
            if pod is not None and pod.pod_ip:
                _discard(self._pods_by_addr, (pod.node_name, pod.pod_ip), key)
            return pod is not None
        if kind == KIND_EXCEPTION:
            exc = self._exceptions.pop(key, None)
            self._exc_index.remove(namespace, name)
            self._exc_ignored_index.remove(namespace, name)
            return exc is not None
        if kind == KIND_IDENTITY:
            if self._identities.pop(key, None) is None:
                return False
            self.identity_generation += 1
            return True
        if kind == KIND_BINDING:
            b = self._bindings.pop(key, None)
            if b is not None:
                _discard(self._bindings_by_selector, b.selector, key)
                if self._near_selectors is not None and b.selector not in self._bindings_by_selector:
                    self._near_selectors.remove(b.selector)
                _discard(self._bindings_by_folded_selector, fold(b.selector), key)
                _discard(self._bindings_by_identity, (b.namespace, b.azure_identity), key)
                if b.ignored_selector is not None:
                    _discard(self._bindings_by_ignored_selector, b.ignored_selector, key)
            return b is not None
        if kind == KIND_ASSIGNED:
            a = self._assigned.pop(key, None)
            if a is not None:
                _discard(self._assigned_by_pod, (a.pod_namespace, a.pod), key)
            return a is not None
        return False

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))

    def pods(self) -> Iterator[Pod]:
        return iter(list(self._pods.values()))

    def get_exception(self, namespace: str, name: str) -> PodIdentityException | None:
        return self._exceptions.get((namespace, name))

    def exceptions(self, namespace: str | None = None) -> list[PodIdentityException]:
        """Exceptions (of one namespace, or all), sorted by (namespace, name)."""
        return [
            self._exceptions[k] for k in sorted(self._exceptions) if namespace is None or k[0] == namespace
        ]

    def identities(self) -> list[AzureIdentity]:
        return [self._identities[k] for k in sorted(self._identities)]

    def bindings(self) -> list[AzureIdentityBinding]:
        return [self._bindings[k] for k in sorted(self._bindings)]

    def assigned_identities(self) -> list[AzureAssignedIdentity]:
        return [self._assigned[k] for k in sorted(self._assigned)]

    def __len__(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        """How many objects of each kind the world holds."""
        return {
            KIND_POD: len(self._pods),
            KIND_EXCEPTION: len(self._exceptions),
            KIND_IDENTITY: len(self._identities),
            KIND_BINDING: len(self._bindings),
            KIND_ASSIGNED: len(self._assigned),
        }

    # ------------------------- what routes.Cluster, trace.TraceWorld and podfindings.FindingsWorld read
    def pods_at(self, node: str, ip: str) -> list[Pod]:
        """Pods NMI on ``node`` finds for remote ``ip``: Pending/Running only (nmi-semantics §2)."""
        keys = self._pods_by_addr.get((node, ip), set())
        out = [self._pods[k] for k in sorted(keys)]
        return [p for p in out if p.phase is None or p.phase in LOOKUP_PHASES]

    def matching_exceptions(self, pod: Pod) -> list[str]:
        """Names of the exceptions in the pod's namespace that match it (nmi-semantics §1), sorted."""
        return self._exc_index.match(pod.namespace, pod.labels)

    def mic_owned(self, pod: Pod) -> bool:
        """The ReplicaSet half of NMI's ``isMIC``: the owning ReplicaSet's name matches ``^mic-*`` (i.e.
        starts with ``mic``)."""
        rs = pod.owner_replicaset
        return rs is not None and rs.startswith("mic")

    def is_mic(self, pod: Pod) -> bool:
        """NMI's ``isMIC`` (nmi-semantics §2 step 6): namespace EqualFold ``micNamespace`` and the owning
        ReplicaSet's name matches ``^mic-*`` (:meth:`mic_owned`)."""
        return self.mic_owned(pod) and equal_fold(pod.namespace, self._config.nmi.mic_namespace)

    def candidate_bindings(self, pod: Pod) -> list[AzureIdentityBinding]:
        """The bindings NMI (standard mode: MIC) considers for the pod: its ``aadpodidbinding`` label as
        selector, exactly; in managed mode only those of the pod's namespace."""
        if self._config.managed:
            return self.managed_bindings(pod)
        return self.bindings_with_selector(pod.binding_label) if pod.binding_label else []

    def assigned_for(self, pod: Pod) -> list[AzureAssignedIdentity]:
        """The AzureAssignedIdentities whose ``spec.pod``/``spec.podNamespace`` name this pod."""
        keys = self._assigned_by_pod.get((pod.namespace, pod.name), ())
        return [self._assigned[k] for k in sorted(keys)]

    def get_identity(self, namespace: str, name: str) -> AzureIdentity | None:
        return self._identities.get((namespace, name))

    def get_binding(self, namespace: str, name: str) -> AzureIdentityBinding | None:
        return self._bindings.get((namespace, name))

    def get_assigned(self, namespace: str, name: str) -> AzureAssignedIdentity | None:
        return self._assigned.get((namespace, name))

    def bindings_naming(self, namespace: str, identity: str) -> list[AzureIdentityBinding]:
        """The bindings in ``namespace`` whose ``azureIdentity`` is ``identity`` (sorted by name)."""
        return [self._bindings[k] for k in sorted(self._bindings_by_identity.get((namespace, identity), ()))]

    def bindings_with_selector(self, selector: str) -> list[AzureIdentityBinding]:
        """The bindings whose ``spec.selector`` is exactly ``selector``, sorted by (namespace, name)."""
        return [self._bindings[k] for k in sorted(self._bindings_by_selector.get(selector, ()))]

    def _standard_info(self, pod: Pod, node: str | None = None) -> _StandardInfo:
        """Assigned identities for a pod in standard mode (product.md §3), as NMI on ``node`` (default: the
        pod's own node) sees them.

        Where AzureAssignedIdentity objects exist for the pod (``spec.pod``/``spec.podNamespace``), they
        decide, but only those labelled ``nodename=<node>`` are visible (``--enableScaleFeatures``).
        Otherwise nmisim simulates MIC and every binding match counts as Assigned; MIC labels them with the
        pod's node, so NMI on another node sees none of them (nmi-semantics §8.9).
        """
        info = _StandardInfo()
        nmi_node = pod.node_name if node is None else node
        keys = self._assigned_by_pod.get((pod.namespace, pod.name))
        if keys:
            info.aai = [self._assigned[k] for k in sorted(keys)]
            visible = []
            for a in info.aai:
                if nmi_node and a.node_label != nmi_node:
                    info.hidden.append(a)
                else:
                    visible.append(a)
            info.entries = entries_from_assigned(visible)
            return info
        info.mic = simulate_mic(
            pod, self.bindings_with_selector(pod.binding_label), self.get_identity, self._config.nmi
        )
        elsewhere = bool(nmi_node) and bool(pod.node_name) and pod.node_name != nmi_node
        info.entries = [] if elsewhere else info.mic.entries
        return info

    def near_selectors(self, value: str) -> list[str]:
        """Binding selectors one typo away from ``value`` (:mod:`nmisim.engine.nearmiss`), sorted."""
        if self._near_selectors is None:
            self._near_selectors = NearMissIndex(self._bindings_by_selector)
        return self._near_selectors.near(value)

    def bindings_with_ignored_selector(self, selector: str) -> list[AzureIdentityBinding]:
        """The bindings with ``selector`` under the ignored ``spec.Selector``, sorted."""
        return [self._bindings[k] for k in sorted(self._bindings_by_ignored_selector.get(selector, ()))]

    def bindings_with_folded_selector(self, selector: str) -> list[AzureIdentityBinding]:
        """The bindings whose selector equals ``selector`` ignoring case (Go ``EqualFold``), sorted."""
        return [self._bindings[k] for k in sorted(self._bindings_by_folded_selector.get(fold(selector), ()))]

    def ignored_exceptions(self, pod: Pod) -> list[str]:
        """Names of the pod's namespace's exceptions whose ignored ``spec.PodLabels`` would match it."""
        return self._exc_ignored_index.match(pod.namespace, pod.labels)

    def managed_bindings(self, pod: Pod) -> list[AzureIdentityBinding]:
        """The bindings managed mode considers for the pod: its label as selector, in its namespace."""
        return [b for b in self.bindings_with_selector(pod.binding_label) if b.namespace == pod.namespace]

    def select_identity(
        self, pod: Pod, client_id: str = "", res_id: str = "", node: str | None = None
    ) -> Selection:
        """NMI's ``GetIdentities`` for the configured operation mode, by NMI on ``node`` (default: the
        pod's node; only ``/host/token`` asks about a pod on another node)."""
        if self._config.managed:
            return self._select_managed(pod, client_id, res_id)
        return self._select_standard(self._standard_info(pod, node), pod, client_id, res_id)

    def _select_managed(self, pod: Pod, client_id: str, res_id: str) -> Selection:
        idents = []
        for b in self.managed_bindings(pod):
            ident = self.get_identity(pod.namespace, b.azure_identity)
            if ident is not None:
                idents.append(ident)
        return select_managed(idents, pod, client_id, res_id)

    def _select_standard(self, info: _StandardInfo, pod: Pod, client_id: str, res_id: str) -> Selection:
        return select_standard(info.entries, pod, self._config.nmi, client_id, res_id)

    # ------------------------------------------------------------- evaluation
    def request(
        self,
        request: HttpRequest | None = None,
        *,
        pod: Pod | None = None,
        ip: str | None = None,
        node: str | None = None,
        target: str = TARGET_IMDS,
    ) -> RequestResult:
        """Simulate one HTTP request from ``pod`` or from ``ip`` on ``node`` (product.md §4 ``request``),
        sent to IMDS's address or to NMI's own port (``target``, :func:`simulate_request`)."""
        if pod is None and (ip is None or node is None):
            raise ValueError("request needs a pod, or an ip and a node")
        return simulate_request(self, request or DEFAULT_REQUEST, pod=pod, ip=ip, node=node, target=target)

    def object_findings(self) -> ObjectFindings:
        """Findings about exceptions, bindings and identities, each reported once (:mod:`.objects`)."""
        return object_findings(self)

    def evaluate_all(self) -> list[PodResult]:
        return [self.evaluate(self._pods[k]) for k in sorted(self._pods)]

    def evaluate(self, pod: Pod, *, trace: bool = False) -> PodResult:
        """The verdict of one pod (product.md §2; precedence bypass > inactive > exempt > intercepted).
        With ``trace``, the result carries the decisions behind it (:mod:`nmisim.engine.trace`).

        A pod with no status (``phase is None``) is evaluated as running.
        """
        excs = tuple(self.matching_exceptions(pod))
        mic = self.is_mic(pod)
        if pod.host_network:
            verdict = VERDICT_BYPASS
        elif pod.phase in FINISHED_PHASES:
            verdict = VERDICT_INACTIVE
        elif excs or mic:
            verdict = VERDICT_EXEMPT
        else:
            verdict = VERDICT_INTERCEPTED
        findings: tuple[Finding, ...] = ()
        identities: tuple[str, ...] = ()
        token = TokenRequestOutcome()
        if verdict != VERDICT_INACTIVE:
            scope = _PodScope(self, pod, excs, mic)
            res = simulate_request(scope, DEFAULT_REQUEST, pod=pod, assume_found=True)
            token = TokenRequestOutcome(res.status, res.served_by, res.identity, res.error, res.wait_seconds)
            findings, identities = pod_findings(self, scope, verdict, res)
        result = PodResult(
            namespace=pod.namespace,
            name=pod.name,
            verdict=verdict,
            exceptions=excs,
            mic_shortcut=mic,
            identities=identities,
            token_request=token,
            findings=findings,
        )
        if trace:
            result = replace(result, trace=decision_trace(self, pod, result))
        return result


class _PodScope:
    """The world as one :meth:`World.evaluate` call sees it (a :class:`nmisim.engine.routes.Cluster` and a
    :class:`nmisim.engine.podfindings.PodScope`).

    What the simulated default request (the answer) and the findings both ask about the evaluated pod is
    computed once: its exceptions and ``isMIC`` (already known to ``evaluate``), its standard-mode assigned
    identities, and NMI's identity selection for a request naming no identity on the pod's own node. The
    world does not change during one call, so these hold for exactly as long as the scope lives; any other
    pod or any other question goes to the world itself.
    """

    __slots__ = ("_excs", "_info", "_mic", "_selection", "_world", "config", "pod")

    def __init__(self, world: World, pod: Pod, excs: tuple[str, ...], mic: bool) -> None:
        self._world = world
        self.config: SimulationConfig = world.config
        self.pod = pod
        self._excs = excs
        self._mic = mic
        self._info: _StandardInfo | None = None
        self._selection: Selection | None = None

    def pods_at(self, node: str, ip: str) -> list[Pod]:
        return self._world.pods_at(node, ip)

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self._world.get_pod(namespace, name)

    def matching_exceptions(self, pod: Pod) -> list[str]:
        return list(self._excs) if pod is self.pod else self._world.matching_exceptions(pod)

    def is_mic(self, pod: Pod) -> bool:
        return self._mic if pod is self.pod else self._world.is_mic(pod)

    def standard_info(self) -> _StandardInfo:
        """The pod's assigned identities as NMI on its own node sees them (standard mode)."""
        if self._info is None:
            self._info = self._world._standard_info(self.pod)
        return self._info

    def default_selection(self) -> Selection:
        """``select_identity(pod)``: no client_id, no resource ID, NMI on the pod's own node."""
        if self._selection is None:
            w = self._world
            self._selection = (
                w._select_managed(self.pod, "", "")
                if self.config.managed
                else w._select_standard(self.standard_info(), self.pod, "", "")
            )
        return self._selection

    def select_identity(
        self, pod: Pod, client_id: str = "", res_id: str = "", node: str | None = None
    ) -> Selection:
        if pod is self.pod and not client_id and not res_id and node is None:
            return self.default_selection()
        return self._world.select_identity(pod, client_id, res_id, node)


def load(objs: Iterable[Model], config: SimulationConfig | None = None) -> World:
    """A world holding ``objs`` (later objects replace earlier ones with the same kind/namespace/name)."""
    w = World(config)
    for obj in objs:
        w.upsert(obj)
    return w
