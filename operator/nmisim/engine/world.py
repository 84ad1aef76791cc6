"""The world: every object NMI can see plus the SimulationConfig, indexed for fast per-pod evaluation.

``World.evaluate(pod)`` is a pure function of the world's state. Its cost depends on the pod's own labels,
bindings and assigned identities, never on the total number of exceptions or bindings (all lookups are
through indexes kept up to date by ``upsert``/``remove``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from nmisim.engine import findings as F
from nmisim.engine.config import SimulationConfig
from nmisim.engine.exceptions import ExceptionIndex
from nmisim.engine.findings import Finding
from nmisim.engine.fold import equal_fold, fold
from nmisim.engine.http import SERVED_BY_NMI, TARGET_IMDS, TARGET_NMI, HttpRequest, RequestResult, json_number
from nmisim.engine.identities import (
    AssignedEntry,
    MicOutcome,
    Selection,
    entries_from_assigned,
    select_managed,
    select_standard,
    simulate_mic,
)
from nmisim.engine.imds import ERR_IDENTITY_NOT_FOUND
from nmisim.engine.models import (
    ASSIGNED_ASSIGNED,
    ASSIGNED_CREATED,
    BINDING_LABEL,
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Model,
    Pod,
    PodIdentityException,
    placeholder_in,
)
from nmisim.engine.nearmiss import NearMissIndex, is_near_miss
from nmisim.engine.objects import ObjectFindings, object_findings
from nmisim.engine.objecttexts import (
    capitalised_binding,
    capitalised_identity,
    invalid_resource_id,
    invalid_resource_id_cause,
    missing_identity,
    missing_identity_cause,
    placeholder_identity,
)
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
FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})
LOOKUP_PHASES: Final = frozenset({"Pending", "Running"})
AKS_MANAGED_LABEL: Final = "kubernetes.azure.com/managedby"
KUBE_SYSTEM: Final = "kube-system"
DEFAULT_REQUEST: Final = HttpRequest()


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
        #: distinct selectors by one-deletion neighbourhood, built on the first "did you mean" question and
        #: kept up to date by upsert/remove from then on
        self._near_selectors: NearMissIndex | None = None
        self._assigned: dict[Key, AzureAssignedIdentity] = {}
        self._assigned_by_pod: dict[Key, set[Key]] = {}
        #: bumped by every change (objects or configuration): an answer computed at one generation holds
        #: until the next, the engine being a pure function of the world (the agent caches by it)
        self.generation = 0

    # ----------------------------------------------------------------- state
    @property
    def config(self) -> SimulationConfig:
        return self._config

    def set_config(self, config: SimulationConfig) -> None:
        self._config = config
        self.generation += 1

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
        elif isinstance(obj, AzureIdentityBinding):
            self._bindings[key] = obj
            if self._near_selectors is not None and obj.selector not in self._bindings_by_selector:
                self._near_selectors.add(obj.selector)
            _add(self._bindings_by_selector, obj.selector, key)
            _add(self._bindings_by_folded_selector, fold(obj.selector), key)
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
            return self._identities.pop(key, None) is not None
        if kind == KIND_BINDING:
            b = self._bindings.pop(key, None)
            if b is not None:
                _discard(self._bindings_by_selector, b.selector, key)
                if self._near_selectors is not None and b.selector not in self._bindings_by_selector:
                    self._near_selectors.remove(b.selector)
                _discard(self._bindings_by_folded_selector, fold(b.selector), key)
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

    # ------------------------------------------------- what routes.Cluster needs
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
            return self._managed_bindings(pod)
        return self._bindings_for(pod.binding_label) if pod.binding_label else []

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

    def _bindings_for(self, selector: str) -> list[AzureIdentityBinding]:
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
            pod, self._bindings_for(pod.binding_label), self.get_identity, self._config.nmi
        )
        elsewhere = bool(nmi_node) and bool(pod.node_name) and pod.node_name != nmi_node
        info.entries = [] if elsewhere else info.mic.entries
        return info

    def near_selectors(self, value: str) -> list[str]:
        """Binding selectors one typo away from ``value`` (:mod:`nmisim.engine.nearmiss`), sorted."""
        if self._near_selectors is None:
            self._near_selectors = NearMissIndex(self._bindings_by_selector)
        return self._near_selectors.near(value)

    def _managed_bindings(self, pod: Pod) -> list[AzureIdentityBinding]:
        return [b for b in self._bindings_for(pod.binding_label) if b.namespace == pod.namespace]

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
        for b in self._managed_bindings(pod):
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
        out: list[Finding] = []
        identities: tuple[str, ...] = ()
        token = TokenRequestOutcome()
        if verdict != VERDICT_INACTIVE:
            scope = _PodScope(self, pod, excs, mic)
            res = simulate_request(scope, DEFAULT_REQUEST, pod=pod, assume_found=True)
            token = TokenRequestOutcome(res.status, res.served_by, res.identity, res.error, res.wait_seconds)
            self._capitalised_exception_findings(pod, out)
            if verdict == VERDICT_BYPASS:
                self._bypass_findings(scope, res, out)
            elif verdict == VERDICT_EXEMPT:
                self._exempt_findings(pod, excs, mic, res, out)
            else:
                identities = self._intercepted_findings(scope, res, out)
        result = PodResult(
            namespace=pod.namespace,
            name=pod.name,
            verdict=verdict,
            exceptions=excs,
            mic_shortcut=mic,
            identities=identities,
            token_request=token,
            findings=tuple(sorted(set(out))),
        )
        if trace:
            result = replace(result, trace=decision_trace(self, pod, result))
        return result

    # --------------------------------------------------------------- findings
    def _capitalised_exception_findings(self, pod: Pod, out: list[Finding]) -> None:
        for name in self._exc_ignored_index.match(pod.namespace, pod.labels):
            out.append(
                Finding(
                    F.CAPITALISED_FIELDS,
                    f"AzurePodIdentityException {pod.namespace}/{name} uses spec.PodLabels, ignored since "
                    "aad-pod-identity v1.6.0: rename it to spec.podLabels",
                )
            )

    def _bypass_findings(self, scope: _PodScope, res: RequestResult, out: list[Finding]) -> None:
        out.append(
            Finding(
                F.HOST_NETWORK_BYPASS,
                "hostNetwork pod: NMI never sees its IMDS traffic and it "
                "can use any identity on the node's VM; "
                "drop hostNetwork if it must be restricted to its binding",
            )
        )
        exposed = self._node_ip_identity(scope)
        if exposed is not None:
            out.append(exposed)
        if res.status != 200:
            out.append(
                Finding(
                    F.BYPASS_POD_IMDS_ERROR,
                    f"default token request fails at IMDS ({res.status}: {_imds_error(res.body)}); "
                    "send client_id or fix spec.imds for the node",
                )
            )

    def _node_ip_identity(self, scope: _PodScope) -> Finding | None:
        """A hostNetwork pod NMI would serve a pod identity: NMI's lookup by IP ignores hostNetwork
        (``pkg/k8s/client.go`` ``getPodList``, nmi-semantics §8.4), so a caller of NMI's own port from the
        node IP is taken for this pod whenever it is the only Pending/Running pod with that IP. Its own
        IMDS traffic never reaches NMI, so the binding serves only other processes on the node."""
        pod = scope.pod
        if not pod.pod_ip or not pod.node_name or (pod.phase is not None and pod.phase not in LOOKUP_PHASES):
            return None
        solo = simulate_request(scope, DEFAULT_REQUEST, pod=pod, assume_found=True, target=TARGET_NMI)
        if solo.status != 200 or solo.served_by != SERVED_BY_NMI:
            return None
        where = f"IP {pod.pod_ip} on node {pod.node_name}"
        fix = (
            "remove its aadpodidbinding label (the pod's own IMDS requests go to IMDS directly, so the "
            "binding serves only other processes on the node)"
        )
        sharing = self.pods_at(pod.node_name, pod.pod_ip)
        if any(p.name != pod.name or p.namespace != pod.namespace for p in sharing):
            return Finding(
                F.HOST_NETWORK_IDENTITY_EXPOSED,
                f"NMI looks callers of its own port up by IP and ignores hostNetwork: other Pending/Running "
                f"pods share {where}, so such callers get 500 'failed to match pod IP' today, but once this "
                f"pod is alone there any process on the node reaching NMI's port from that IP gets identity "
                f"{solo.identity}; {fix}",
            )
        return Finding(
            F.HOST_NETWORK_IDENTITY_EXPOSED,
            f"NMI looks callers of its own port up by IP and ignores hostNetwork: this pod is the only "
            f"Pending/Running pod with {where}, so any process on the node reaching NMI's port from that IP "
            f"(NMI listening beyond 127.0.0.1, or a client binding the node IP) gets identity "
            f"{solo.identity}; {fix}",
        )

    def _exempt_findings(
        self, pod: Pod, excs: tuple[str, ...], mic: bool, res: RequestResult, out: list[Finding]
    ) -> None:
        if pod.binding_label and excs:
            out.append(
                Finding(
                    F.EXEMPT_POD_HAS_BINDING,
                    f"pod is exempt through AzurePodIdentityException {pod.namespace}/{excs[0]}, so NMI "
                    f"ignores its aadpodidbinding={pod.binding_label} label; "
                    "remove the label or the matching exception",
                )
            )
        elif pod.binding_label:
            # isMIC (nmi-semantics §2 step 6): no exception is involved, so none can be removed
            out.append(
                Finding(
                    F.EXEMPT_POD_HAS_BINDING,
                    f"pod is exempt through NMI's MIC shortcut (namespace {pod.namespace} is --MICNamespace "
                    f"and its ReplicaSet {pod.owner_replicaset} starts with 'mic'), so NMI ignores its "
                    f"aadpodidbinding={pod.binding_label} label; if it is not MIC, rename its Deployment so "
                    "the ReplicaSet name does not start with 'mic', or run it outside that namespace "
                    "(NMI's --MICNamespace, spec.nmi.micNamespace)",
                )
            )
        if res.status != 200:
            out.append(
                Finding(
                    F.EXEMPT_POD_IMDS_ERROR,
                    f"exempt pod's default token request gets {res.status}: IMDS said "
                    f"'{_imds_error(res.error or '')}' because NMI forwards no identity; pass client_id",
                )
            )

    def _intercepted_findings(
        self, scope: _PodScope, res: RequestResult, out: list[Finding]
    ) -> tuple[str, ...]:
        """Findings of an intercepted pod. A problem that belongs to one object (a binding naming a missing
        identity, an identity's bad resourceID, capitalised fields, ...) is reported once in
        :func:`nmisim.engine.objects.object_findings`; the pod repeats it only when its own default token
        request fails (``failed``), where it is the reason."""
        cfg = self._config
        pod = scope.pod
        sel = scope.default_selection()
        failed = res.status != 200
        identities = tuple(i.key for i in sel.candidates)
        if equal_fold(pod.labels.get(AKS_MANAGED_LABEL, ""), "aks"):
            out.append(_aks_addon_not_exempt(pod.namespace))
        if len(identities) > 1:
            out.append(
                Finding(
                    F.AMBIGUOUS_IDENTITY,
                    f"{len(identities)} identities match ({', '.join(identities)}) and NMI picks one at "
                    "random when no client_id is sent; send client_id or keep one binding per selector",
                )
            )
        for ident in sel.candidates:
            if ident.namespace != pod.namespace:
                out.append(
                    Finding(
                        F.CROSS_NAMESPACE_BINDING,
                        f"pod uses AzureIdentity {ident.key} from another namespace; set forceNamespaced or "
                        "annotate the identity aadpodidentity.k8s.io/Behavior: namespaced to forbid this",
                    )
                )
            if ident.type not in (0, 1, 2):
                out.append(
                    Finding(
                        F.UNSUPPORTED_IDENTITY_TYPE,
                        f"AzureIdentity {ident.key} has spec.type {ident.type}; NMI answers 503 'unsupported "
                        "identity type': use 0 (user-assigned MSI), 1 (SP secret) or 2 (SP certificate)",
                    )
                )
            if failed and ident.ignored_fields:
                out.append(capitalised_identity(ident))
            if failed and (placeholder_in(ident.client_id) or placeholder_in(ident.resource_id)):
                out.append(placeholder_identity(ident))
        causes: list[str] = []
        if cfg.managed:
            self._managed_findings(pod, failed, out, causes)
        else:
            self._standard_findings(pod, scope.standard_info(), failed, out, causes)
        label = pod.binding_label
        exact = bool(label) and bool(self._bindings_by_selector.get(label))
        if label:
            for k in sorted(self._bindings_by_ignored_selector.get(label, ())):
                b = self._bindings[k]
                if failed:
                    out.append(capitalised_binding(b))
                causes.append(f"AzureIdentityBinding {b.key} has the selector under spec.Selector (ignored)")
            if not exact:
                for k in sorted(self._bindings_by_folded_selector.get(fold(label), ())):
                    b = self._bindings[k]
                    if cfg.managed and b.namespace != pod.namespace:
                        continue
                    out.append(
                        Finding(
                            F.SELECTOR_CASE_MISMATCH,
                            f"AzureIdentityBinding {b.key} has selector '{b.selector}' but the pod's "
                            f"aadpodidbinding is '{label}'; selectors compare case-sensitively",
                        )
                    )
                    causes.append(f"AzureIdentityBinding {b.key} has selector '{b.selector}' (case differs)")
                self._near_miss_findings(pod, out, causes)
        else:
            self._label_key_findings(pod, out, causes)
        if sel.identity is None and res.status in (404, 503) and res.azure_identity is None:
            if causes:
                hint = "; ".join(causes)
            elif not label and not (cfg.managed and self._bindings_by_selector.get("")):
                hint = (
                    "label the pod aadpodidbinding=<selector> or exempt it with an AzurePodIdentityException"
                )
            elif exact and cfg.managed:
                hint = f"no AzureIdentityBinding in namespace {pod.namespace} has selector '{label}'"
            else:
                hint = f"create an AzureIdentityBinding with selector '{label}' and its AzureIdentity"
            wait = f" after {json_number(res.wait_seconds)} s" if res.wait_seconds else ""
            # a pod nobody labelled for an identity is told how NMI treats it (info); one that asks for an
            # identity and gets none is an error (the table's)
            out.append(
                Finding(
                    F.NO_IDENTITY,
                    f"token requests fail with {res.status}{wait}: no identity; {hint}",
                    "" if label else F.SEVERITY_INFO,
                )
            )
        if (
            cfg.managed
            and res.azure_identity is not None
            and res.status == 403
            and ERR_IDENTITY_NOT_FOUND in (res.error or "")
            and not placeholder_in(res.azure_identity.client_id)
        ):
            ident = res.azure_identity
            out.append(
                Finding(
                    F.IDENTITY_NOT_ON_NODE,
                    f"AzureIdentity {ident.key} (clientID {ident.client_id}) is not on node "
                    f"{pod.node_name or '(unscheduled)'}'s VM in spec.imds: managed mode needs "
                    "'az vmss identity assign'",
                )
            )
        return identities

    def _near_miss_findings(self, pod: Pod, out: list[Finding], causes: list[str]) -> None:
        """The pod's ``aadpodidbinding`` value equals no selector but is one typo away from some."""
        label = pod.binding_label
        for selector in self.near_selectors(label):
            bs = [
                b
                for b in self._bindings_for(selector)
                if not self._config.managed or b.namespace == pod.namespace
            ]
            if not bs:
                continue
            names = ", ".join(b.key for b in bs)
            out.append(
                Finding(
                    F.SELECTOR_NEAR_MISS,
                    f"no AzureIdentityBinding has selector '{label}'; did you mean '{selector}' "
                    f"(AzureIdentityBinding {names})? selectors compare exactly: fix the pod's "
                    "aadpodidbinding label or the binding's spec.selector",
                )
            )
            causes.append(f"no AzureIdentityBinding has selector '{label}' (did you mean '{selector}'?)")

    def _label_key_findings(self, pod: Pod, out: list[Finding], causes: list[str]) -> None:
        """A label key that means ``aadpodidbinding`` but is not it (NMI and MIC read the exact key)."""
        for key in sorted(pod.labels):
            if key == BINDING_LABEL or not (
                equal_fold(key, BINDING_LABEL) or is_near_miss(key, BINDING_LABEL)
            ):
                continue
            value = pod.labels[key]
            bound = self._bindings_for(value) if value else []
            tail = f" (AzureIdentityBinding {bound[0].key} has selector '{value}')" if bound else ""
            out.append(
                Finding(
                    F.SELECTOR_NEAR_MISS,
                    f"label '{key}: {value}' is not aadpodidbinding{tail}: MIC and NMI read only the exact "
                    f"key, so this pod has no binding; rename the label to {BINDING_LABEL}",
                )
            )
            causes.append(f"its label '{key}' is not {BINDING_LABEL}: rename it")

    def _managed_findings(self, pod: Pod, failed: bool, out: list[Finding], causes: list[str]) -> None:
        for b in self._managed_bindings(pod):
            if self.get_identity(pod.namespace, b.azure_identity) is None:
                if failed:
                    out.append(missing_identity(b))
                causes.append(missing_identity_cause(b))
            if b.selector == "" and not pod.binding_label:
                out.append(
                    Finding(
                        F.EMPTY_SELECTOR_BINDING,
                        f"AzureIdentityBinding {b.key} has an empty selector "
                        "and matches every pod without an "
                        "aadpodidbinding label in managed mode; set spec.selector",
                    )
                )

    def _standard_findings(
        self, pod: Pod, info: _StandardInfo, failed: bool, out: list[Finding], causes: list[str]
    ) -> None:
        if info.mic is not None:
            for b in info.mic.missing_identity:
                if failed:
                    out.append(missing_identity(b))
                causes.append(missing_identity_cause(b))
            for b, ident in info.mic.namespaced_skipped:
                out.append(
                    Finding(
                        F.NAMESPACED_BINDING_IGNORED,
                        f"AzureIdentityBinding {b.key} -> AzureIdentity "
                        f"{ident.key} is ignored: namespaced mode "
                        f"needs identity, binding and pod all in namespace {pod.namespace}",
                    )
                )
                causes.append(f"AzureIdentityBinding {b.key} -> {ident.key} is ignored in namespaced mode")
            for b, ident in info.mic.invalid_resource_id:
                if failed:
                    out.append(invalid_resource_id(ident, b))
                causes.append(invalid_resource_id_cause(ident, b))
            for b, ident in info.mic.placeholder:
                if failed:
                    out.append(placeholder_identity(ident))
                causes.append(
                    f"AzureIdentity {ident.key} (via {b.key}) has a placeholder in spec.resourceID, so "
                    "Azure refuses MIC's VM update and its AzureAssignedIdentity stays Created"
                )
            for b, ident in info.mic.name_collisions:
                out.append(
                    Finding(
                        F.ASSIGNED_IDENTITY_NAME_COLLISION,
                        f"AzureIdentity {ident.key} (via {b.key}) has the same "
                        "name as an earlier identity; MIC's "
                        "assigned-identity name collides and only the first is assigned: rename one",
                    )
                )
        for a in info.hidden:
            out.append(
                Finding(
                    F.ASSIGNED_IDENTITY_OTHER_NODE,
                    f"AzureAssignedIdentity {a.namespace}/{a.name} is "
                    f"labelled nodename={a.node_label or ''} but "
                    f"the pod runs on {pod.node_name}; NMI there cannot see it",
                )
            )
            causes.append(f"AzureAssignedIdentity {a.namespace}/{a.name} is labelled for another node")
        visible = [a for a in info.aai if a not in info.hidden]
        if any(a.status == ASSIGNED_CREATED for a in visible) and not any(
            a.status in (ASSIGNED_ASSIGNED, "") for a in visible
        ):
            stuck = ", ".join(f"{a.namespace}/{a.name}" for a in visible if a.status == ASSIGNED_CREATED)
            n = self._config.nmi
            wait = (
                n.retry_attempts_for_created + n.retry_attempts_for_assigned
            ) * n.find_identity_retry_interval_seconds
            out.append(
                Finding(
                    F.ASSIGNED_IDENTITY_STUCK_CREATED,
                    f"AzureAssignedIdentity {stuck} is stuck in Created: requests wait {wait} s then 404; "
                    "check MIC logs for the VM/VMSS identity assignment error",
                )
            )
            causes.append(f"AzureAssignedIdentity {stuck} is stuck in Created")


class _PodScope:
    """The world as one :meth:`World.evaluate` call sees it (a :class:`nmisim.engine.routes.Cluster`).

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


def _aks_addon_not_exempt(namespace: str) -> Finding:
    """An intercepted pod labelled ``kubernetes.azure.com/managedby: aks`` (nmi-semantics §5, §6.1).

    Upstream's ``aks-addon-exception`` lives in ``kube-system`` and NMI looks for exceptions only in the
    pod's own namespace, so add-ons elsewhere (e.g. ``gatekeeper-system``) need their own exception.
    """
    if namespace == KUBE_SYSTEM:
        return Finding(
            F.AKS_ADDON_NOT_EXEMPT,
            "AKS add-on pod (kubernetes.azure.com/managedby=aks) is intercepted: create aks-addon-exception "
            "in kube-system with podLabels {kubernetes.azure.com/managedby: aks}",
        )
    return Finding(
        F.AKS_ADDON_NOT_EXEMPT,
        f"AKS add-on pod (kubernetes.azure.com/managedby=aks) in namespace {namespace} is intercepted: NMI "
        "only honours exceptions in the pod's own namespace, so kube-system's aks-addon-exception does not "
        f"cover it; create an AzurePodIdentityException in {namespace} with podLabels "
        "{kubernetes.azure.com/managedby: aks}",
    )


def _imds_error(text: str) -> str:
    for marker in ('"error_description":"', 'error_description": "'):
        i = text.find(marker)
        if i >= 0:
            rest = text[i + len(marker) :]
            return rest.split('"', 1)[0]
    return text.strip()


def load(objs: Iterable[Model], config: SimulationConfig | None = None) -> World:
    """A world holding ``objs`` (later objects replace earlier ones with the same kind/namespace/name)."""
    w = World(config)
    for obj in objs:
        w.upsert(obj)
    return w
