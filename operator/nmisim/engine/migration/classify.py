"""Per pod: what each request gets today from NMI and after the migration, in each phase, and its class
(workload-identity.md "What a migration simulator would need to model" §12, §13, §16).

Request shapes: the request naming no identity (``default``), and for each identity NMI gives the pod one by
``client_id`` and one by ``msi_res_id``. Phases: ``parallel`` (Workload Identity installed, NMI still
there) and ``removed`` (NMI gone). Where the request goes after the migration:

- the webhook denied the pod → nothing runs (``blocked-at-admission``);
- the application exchanges the projected token itself (an SDK with workload identity, or MSAL) and the
  webhook injected the variables → Entra, for the explicit client ID or ``AZURE_CLIENT_ID`` (a resource
  ID cannot be named; Go's ManagedIdentityCredential is the exception, a hazard);
- the proxy sidecar is in the pod → the proxy (client_id or ``AZURE_CLIENT_ID``; msi_res_id ignored);
- otherwise → IMDS's address: NMI while it is there (today's answer), the node's IMDS once it is gone (or
  nothing with AKS ``podLinkLocalAccess: None``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlencode

from nmisim.engine.config import POD_LINK_LOCAL_NONE, FederatedCredential, WorkloadIdentityConfig
from nmisim.engine.http import DEFAULT_HEADERS, HttpRequest
from nmisim.engine.imds import SYSTEM_ASSIGNED, TOKEN_PATH, imds_token
from nmisim.engine.migration import entra, sdk
from nmisim.engine.migration import proxy as proxy_sidecar
from nmisim.engine.migration.objects import PodSpec
from nmisim.engine.migration.webhook import (
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    ENV_TOKEN_FILE,
    PROXY_CONTAINER,
    PROXY_UID,
    Admission,
)
from nmisim.engine.models import AzureIdentity, Pod
from nmisim.engine.routes import simulate_request
from nmisim.engine.world import World

PHASE_PARALLEL: Final = "parallel"
PHASE_REMOVED: Final = "removed"
PHASES: Final = (PHASE_PARALLEL, PHASE_REMOVED)

SAME_IDENTITY: Final = "same-identity"
DIFFERENT_IDENTITY: Final = "different-identity"
LOSES_ACCESS: Final = "loses-access"
GAINS_ACCESS: Final = "gains-access"
BLOCKED_AT_ADMISSION: Final = "blocked-at-admission"
UNAFFECTED: Final = "unaffected"
#: worst first: a pod's class is its worst request's
CLASSES: Final = (
    BLOCKED_AT_ADMISSION,
    LOSES_ACCESS,
    DIFFERENT_IDENTITY,
    GAINS_ACCESS,
    SAME_IDENTITY,
    UNAFFECTED,
)

SHAPE_DEFAULT: Final = "default"
SHAPE_CLIENT_ID: Final = "client_id"
SHAPE_RES_ID: Final = "msi_res_id"

VIA_NMI: Final = "nmi"
VIA_IMDS: Final = "imds"
VIA_WORKLOAD_IDENTITY: Final = "workload-identity"
VIA_PROXY: Final = "proxy"
VIA_NOTHING: Final = "none"
RESOURCE: Final = "https://management.azure.com/"


def worst(classes: Sequence[str]) -> str:
    return min(classes, key=CLASSES.index) if classes else UNAFFECTED


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str
    value: str = ""

    @property
    def text(self) -> str:
        return self.kind if self.kind == SHAPE_DEFAULT else f"{self.kind}={self.value}"

    def request(self) -> HttpRequest:
        return _shape_request(self.kind, self.value)


@lru_cache(maxsize=4096)
def _shape_request(kind: str, value: str) -> HttpRequest:
    """The token request of one shape (memoised: a pure function of the shape, asked for by every pod)."""
    query: list[tuple[str, str]] = [("api-version", "2018-02-01"), ("resource", RESOURCE)]
    if kind != SHAPE_DEFAULT:
        query.append((kind, value))
    return HttpRequest(path=TOKEN_PATH, query=tuple(query), headers=DEFAULT_HEADERS, raw=urlencode(query))


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's outcome: a token for ``identity`` (a client ID, lower case, or a resource ID or
    ``system-assigned`` when no client ID is known), or an error."""

    via: str
    status: int | None
    identity: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def to_json(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "status": self.status,
            "identity": self.identity or None,
            "error": self.error or None,
        }

    @property
    def text(self) -> str:
        if self.ok:
            return f"{self.status} {self.identity} ({self.via})"
        if self.status is None:
            return f"{self.error} ({self.via})"
        return f"{self.status} {self.error} ({self.via})"


@dataclass(frozen=True, slots=True)
class Row:
    shape: Shape
    before: Answer
    after: Mapping[str, Answer]
    classes: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.shape.text,
            "before": self.before.to_json(),
            "after": {p: a.to_json() for p, a in self.after.items()},
            "class": dict(self.classes),
        }


@dataclass(frozen=True, slots=True)
class AfterState:
    """The Workload Identity side one pod is assessed against (as planned, or as it exists)."""

    spec: PodSpec
    admission: Admission
    credentials: tuple[FederatedCredential, ...]
    sdks: tuple[sdk.SDK, ...]
    capability: str


class Identities:
    """Client IDs, resource IDs and AzureIdentity keys of the world, to compare answers across routes.
    :meth:`of` builds it once per identity generation (the operator assesses one workload at a time, and
    a pod change does not change it)."""

    _cache: weakref.WeakKeyDictionary[World, tuple[int, Identities]] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, world: World) -> Identities:
        hit = cls._cache.get(world)
        if hit is not None and hit[0] == world.identity_generation:
            return hit[1]
        ids = cls(world)
        cls._cache[world] = (world.identity_generation, ids)
        return ids

    def __init__(self, world: World) -> None:
        self._by_key: dict[str, AzureIdentity] = {i.key: i for i in world.identities()}
        self._res_to_client: dict[str, str] = {}
        for i in world.identities():
            if i.client_id and i.resource_id:
                self._res_to_client.setdefault(i.resource_id.lower(), i.client_id.lower())
        vm = world.config.imds
        for ua in (*vm.user_assigned, *(u for ov in vm.nodes.values() for u in (ov.user_assigned or ()))):
            if ua.client_id and ua.resource_id:
                self._res_to_client.setdefault(ua.resource_id.lower(), ua.client_id.lower())

    def get(self, key: str) -> AzureIdentity | None:
        return self._by_key.get(key)

    def principal(self, who: str | None) -> str:
        """An answer's identity as one comparable string."""
        if not who:
            return ""
        ident = self._by_key.get(who)
        if ident is not None:
            return (ident.client_id or ident.resource_id).lower()
        if who == SYSTEM_ASSIGNED:
            return who
        low = who.lower()
        return self._res_to_client.get(low, low)

    def name(self, principal: str) -> str:
        """``ns/name (clientID)`` when an AzureIdentity has that client ID."""
        for key, ident in self._by_key.items():
            if ident.client_id.lower() == principal:
                return key
        return principal


def shapes_for(identities: Sequence[AzureIdentity]) -> tuple[Shape, ...]:
    out = [Shape(SHAPE_DEFAULT)]
    for ident in identities:
        if ident.client_id:
            out.append(Shape(SHAPE_CLIENT_ID, ident.client_id))
    for ident in identities:
        if ident.type == 0 and ident.resource_id:
            out.append(Shape(SHAPE_RES_ID, ident.resource_id))
    return tuple(dict.fromkeys(out))


def before_answer(world: World, ids: Identities, pod: Pod, shape: Shape) -> Answer:
    """NMI's answer today, the pod found by its own IP as its verdict assumes (one pod's result does not
    depend on another pod sharing its IP)."""
    res = simulate_request(world, shape.request(), pod=pod, assume_found=True)
    via = VIA_NMI if res.served_by == "nmi" else VIA_IMDS
    if res.status == 200:
        return Answer(via, 200, ids.principal(res.identity))
    return Answer(via, res.status, error=res.error or "")


def _imds_after(
    world: World,
    ids: Identities,
    pod: Pod,
    shape: Shape,
    *,
    phase: str,
    wi: WorkloadIdentityConfig,
    before: Answer | None = None,
) -> Answer:
    if phase == PHASE_PARALLEL:  # NMI still answers: today's answer
        return before if before is not None else before_answer(world, ids, pod, shape)
    if wi.pod_link_local_access == POD_LINK_LOCAL_NONE and not pod.host_network:
        return Answer(VIA_NOTHING, None, error="169.254.169.254 unreachable (podLinkLocalAccess: None)")
    vm = world.config.imds.vm_for(pod.node_name)
    ans = imds_token(
        vm,
        resource=RESOURCE,
        client_id=shape.value if shape.kind == SHAPE_CLIENT_ID else "",
        res_id=shape.value if shape.kind == SHAPE_RES_ID else "",
    )
    if ans.ok:
        return Answer(VIA_IMDS, 200, ids.principal(ans.identity))
    return Answer(VIA_IMDS, ans.status, error=ans.error or "")


def _env(admission: Admission, container: str) -> Mapping[str, str]:
    return admission.env.get(container, {})


def _app_env(state: AfterState) -> Mapping[str, str]:
    """The variables the application's (first) container sees."""
    first = state.spec.containers[0].name if state.spec.containers else ""
    return _env(state.admission, first)


def exchange_error(state: AfterState, wi: WorkloadIdentityConfig, client_id: str) -> str:
    """Entra's answer to the pod's projected token exchanged for ``client_id``: the error ("" if issued)."""
    ex = entra.exchange(
        state.credentials,
        client_id=client_id,
        issuer=wi.issuer,
        namespace=state.spec.namespace,
        service_account=state.spec.service_account,
        audience=state.admission.audience or wi.audience,
    )
    return ex.error


def after_answer(
    world: World,
    ids: Identities,
    pod: Pod,
    shape: Shape,
    *,
    phase: str,
    state: AfterState,
    wi: WorkloadIdentityConfig,
    capability: str,
    before: Answer | None = None,
) -> Answer:
    adm = state.admission
    if adm.denied:
        return Answer(VIA_NOTHING, None, error=f"admission webhook {adm.denied}")
    env = _app_env(state)
    exchanging = (
        adm.mutated
        and sdk.exchanges_token(capability)
        and bool(env.get(ENV_TOKEN_FILE))
        and bool(env.get(ENV_TENANT_ID))
    )
    if exchanging:
        client_id = shape.value if shape.kind == SHAPE_CLIENT_ID else env.get(ENV_CLIENT_ID, "")
        if client_id:
            problem = exchange_error(state, wi, client_id)
            if problem:
                return Answer(VIA_WORKLOAD_IDENTITY, 400, error=problem)
            return Answer(VIA_WORKLOAD_IDENTITY, 200, client_id.lower())
        # no client ID: DefaultAzureCredential's workload identity is unavailable, ManagedIdentity calls IMDS
    # the proxy answers whatever azwi-proxy-init redirects, even when skip-containers lists azwi-proxy:
    # then it has no AZURE_TENANT_ID and exits, and nothing answers (workload-identity.md rule 10)
    if adm.mutated and adm.proxy is not None and not _runs_as_proxy_uid(state):
        penv = _env(adm, PROXY_CONTAINER)
        ans = proxy_sidecar.handle(
            shape.request(),
            env_client_id=penv.get(ENV_CLIENT_ID, ""),
            env_tenant_id=penv.get(ENV_TENANT_ID, ""),
            exchange=lambda cid: exchange_error(state, wi, cid),
        )
        if ans.status == 200:
            return Answer(VIA_PROXY, 200, ans.identity.lower())
        return Answer(VIA_PROXY, ans.status, error=ans.error)
    return _imds_after(world, ids, pod, shape, phase=phase, wi=wi, before=before)


def _runs_as_proxy_uid(state: AfterState) -> bool:
    """The application's container runs as the proxy's uid 1501: azwi-proxy-init's ``-m owner --uid-owner
    1501 -j ACCEPT`` lets its traffic through unredirected (init/init-iptables.sh, rule 9)."""
    spec = state.spec
    if not spec.containers:
        return False
    uid = spec.containers[0].run_as_user
    if uid is None:
        uid = spec.run_as_user
    return uid == PROXY_UID


def row_class(before: Answer, after: Answer) -> str:
    if after.via == VIA_NOTHING and after.error.startswith("admission webhook"):
        return BLOCKED_AT_ADMISSION
    if before.ok and after.ok:
        if before.identity != after.identity:
            return DIFFERENT_IDENTITY
        return UNAFFECTED if before.via == after.via else SAME_IDENTITY
    if before.ok:
        return LOSES_ACCESS
    if after.ok:
        return GAINS_ACCESS
    return UNAFFECTED


def assess_rows(
    world: World,
    ids: Identities,
    pod: Pod,
    *,
    shapes: Sequence[Shape],
    state: AfterState,
    wi: WorkloadIdentityConfig,
    capability: str,
    befores: dict[Shape, Answer] | None = None,
) -> tuple[Row, ...]:
    """One row per shape. ``befores`` memoises NMI's answers today across calls for the same pod (the
    ``classIfSDKTooOld`` pass asks the same questions)."""
    rows = []
    known = befores if befores is not None else {}
    for shape in shapes:
        before = known.get(shape)
        if before is None:
            before = known[shape] = before_answer(world, ids, pod, shape)
        after = {
            p: after_answer(
                world, ids, pod, shape, phase=p, state=state, wi=wi, capability=capability, before=before
            )
            for p in PHASES
        }
        rows.append(Row(shape, before, after, {p: row_class(before, a) for p, a in after.items()}))
    return tuple(rows)


def pod_classes(rows: Sequence[Row]) -> dict[str, str]:
    return {p: worst([r.classes[p] for r in rows]) for p in PHASES}
