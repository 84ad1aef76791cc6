"""The migration, assessed: for every pod its class per phase and its hazards, for every workload its plan
(``nmisim migrate``, the operator's NMIVerdict ``migration`` status).

Two modes: ``plan`` assesses the after-world as if every workload's plan were applied; ``verify`` assesses
the after-world from the labels, ServiceAccounts and federated credentials that exist now (a migration in
progress, checked), and shows which plan steps are done.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from nmisim.engine.config import FederatedCredential, WorkloadIdentityConfig
from nmisim.engine.findings import SEVERITY_INFO, Finding
from nmisim.engine.migration import entra, sdk
from nmisim.engine.migration import hazards as H
from nmisim.engine.migration.classify import (
    BLOCKED_AT_ADMISSION,
    CLASSES,
    GAINS_ACCESS,
    PHASE_REMOVED,
    PHASES,
    SHAPE_RES_ID,
    VIA_IMDS,
    AfterState,
    Answer,
    Identities,
    Row,
    Shape,
    assess_rows,
    pod_classes,
    shapes_for,
)
from nmisim.engine.migration.objects import (
    CLIENT_ID_ANNOTATION,
    DEFAULT_SERVICE_ACCOUNT,
    EXPIRATION_ANNOTATION,
    SKIP_CONTAINERS_ANNOTATION,
    Namespace,
    PodSpec,
    ServiceAccount,
)
from nmisim.engine.migration.plan import (
    ISSUER_PLACEHOLDER,
    SA_ANNOTATE,
    SA_CREATE,
    SA_KEEP,
    CredentialPlan,
    WorkloadPlan,
    WorkloadRef,
    applied_service_account,
    applied_spec,
    credential_exists,
    decide_proxy,
    default_service_account_name,
    dns_name,
    fic_command,
    fic_name,
    sdk_action,
    tenant_annotation,
)
from nmisim.engine.migration.webhook import (
    DEFAULT_EXPIRATION,
    ENV_CLIENT_ID,
    PROXY_CONTAINER,
    TOKEN_FILE_OLD,
    TOKEN_FILE_V16,
    Admission,
    admit,
)
from nmisim.engine.models import BINDING_LABEL, FINISHED_PHASES, AzureIdentity, Pod
from nmisim.engine.verdict import VERDICT_EXEMPT, VERDICT_INTERCEPTED, PodResult
from nmisim.engine.world import World

MODE_PLAN: Final = "plan"
MODE_VERIFY: Final = "verify"
MODES: Final = (MODE_PLAN, MODE_VERIFY)
AKS_MANAGED_BY_LABEL: Final = "kubernetes.azure.com/managedby"
PSA_PRIVILEGED_REJECTING: Final = ("baseline", "restricted")
_JOB_KINDS: Final = ("Job", "CronJob")


@dataclass(frozen=True, slots=True)
class PodEntry:
    """One pod (live, or a workload's pod-to-be) and the workload it belongs to."""

    pod: Pod
    spec: PodSpec
    workload: WorkloadRef
    #: the workload's pod template has the webhook's label (a live pod without it predates it)
    template_labelled: bool | None = None
    #: a pod-to-be of a workload that has no pods now (scaled to 0, a CronJob between runs)
    idle: bool = False


@dataclass(slots=True)
class MigrationInput:
    world: World
    pods: list[PodEntry]
    service_accounts: dict[tuple[str, str], ServiceAccount] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    #: federated credentials that exist besides SimulationConfig's (objects in the input)
    credentials: tuple[FederatedCredential, ...] = ()
    #: the ServiceAccounts read are all there are (a live cluster): a missing one is missing
    service_accounts_complete: bool = False
    #: a Workload Identity webhook is installed (live clusters; None: not known)
    webhook_installed: bool | None = None
    #: each workload's (or bare pod's) object as read, by ``Kind/namespace/name`` (``--emit`` rewrites them)
    objects: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def config(self) -> WorkloadIdentityConfig:
        return self.world.config.workload_identity

    def all_credentials(self) -> tuple[FederatedCredential, ...]:
        return (*self.config.federated_credentials, *self.credentials)


@dataclass(frozen=True, slots=True)
class PodAssessment:
    namespace: str
    name: str
    workload: str
    before_verdict: str
    identities: tuple[str, ...]
    service_account: str
    sdk: str
    capability: str
    proxy: bool
    admission: str
    rows: tuple[Row, ...]
    classes: Mapping[str, str]
    classes_if_sdk_too_old: Mapping[str, str] | None = None
    hazards: tuple[Finding, ...] = ()
    idle: bool = False
    #: the Workload Identity side the pod was assessed against (``request --after`` routes by it)
    state: AfterState | None = field(default=None, compare=False, repr=False)
    pod: Pod | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def final_class(self) -> str:
        return self.classes[PHASE_REMOVED]

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "workload": self.workload,
            "before": {"verdict": self.before_verdict, "identities": list(self.identities)},
            "serviceAccount": self.service_account,
            "sdk": self.sdk or None,
            "capability": self.capability,
            "proxy": self.proxy,
            "idle": self.idle,
            "admission": self.admission,
            "class": dict(self.classes),
            "classIfSDKTooOld": dict(self.classes_if_sdk_too_old) if self.classes_if_sdk_too_old else None,
            "requests": [r.to_json() for r in self.rows],
            "hazards": [{**h.to_json(), "severity": h.level} for h in self.hazards],
        }


@dataclass(frozen=True, slots=True)
class Budget:
    client_id: str
    identity: str
    existing: int
    planned: int

    @property
    def left(self) -> int:
        return entra.FIC_LIMIT - self.existing - self.planned

    def to_json(self) -> dict[str, Any]:
        return {
            "clientID": self.client_id,
            "identity": self.identity,
            "existing": self.existing,
            "planned": self.planned,
            "left": self.left,
        }


@dataclass(frozen=True, slots=True)
class Report:
    mode: str
    pods: tuple[PodAssessment, ...]
    plans: tuple[WorkloadPlan, ...]
    budgets: tuple[Budget, ...]
    findings: tuple[Finding, ...] = ()

    def counts(self, phase: str = PHASE_REMOVED) -> dict[str, int]:
        out = dict.fromkeys(CLASSES, 0)
        for p in self.pods:
            out[p.classes[phase]] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "summary": {
                "pods": len(self.pods),
                "workloads": len(self.plans),
                "classes": {p: self.counts(p) for p in PHASES},
                "hazards": _hazard_counts(self.pods),
            },
            "pods": [p.to_json() for p in self.pods],
            "workloads": [w.to_json() for w in self.plans],
            "federatedCredentialBudget": [b.to_json() for b in self.budgets],
            "findings": [f.to_json() for f in self.findings],
        }


def _hazard_counts(pods: Sequence[PodAssessment]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in pods:
        for h in {h.code for h in p.hazards}:
            out[h] += 1
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------- plans
@dataclass(slots=True)
class _Group:
    ref: WorkloadRef
    entries: list[PodEntry]
    results: list[PodResult]
    identities: list[AzureIdentity]
    default: AzureIdentity | None
    sdks: tuple[sdk.SDK, ...]
    capability: str
    sdk_error: str


def pod_sdks(spec: PodSpec, wi: WorkloadIdentityConfig) -> tuple[tuple[sdk.SDK, ...], str]:
    """The pod's SDKs (annotation first, else SimulationConfig's image rules) and an error text."""
    text = spec.annotations.get(sdk.ANNOTATION)
    try:
        if text is not None:
            return sdk.parse(text), ""
        return sdk.for_images([c.image for c in spec.containers], wi.sdks), ""
    except sdk.SDKError as exc:
        return (), f"{sdk.ANNOTATION}: {exc}"


def _groups(inp: MigrationInput, results: Mapping[str, PodResult], ids: Identities) -> list[_Group]:
    by: dict[str, _Group] = {}
    for entry in sorted(inp.pods, key=lambda e: (e.workload.key, e.pod.namespace, e.pod.name)):
        key = entry.workload.key
        res = results[f"{entry.pod.namespace}/{entry.pod.name}"]
        g = by.get(key)
        if g is None:
            sdks, err = pod_sdks(entry.spec, inp.config)
            g = by[key] = _Group(entry.workload, [], [], [], None, sdks, sdk.capability(sdks), err)
        g.entries.append(entry)
        g.results.append(res)
        for ik in res.identities if res.verdict == VERDICT_INTERCEPTED else ():
            ident = ids.get(ik)
            if ident is not None and ident not in g.identities:
                g.identities.append(ident)
        if g.default is None and res.verdict == VERDICT_INTERCEPTED and res.token_request.status == 200:
            g.default = ids.get(res.token_request.identity or "")
    for g in by.values():
        g.identities.sort(key=lambda i: i.key)
        if g.default is None and g.identities:
            g.default = g.identities[0]
    return list(by.values())


def _plans(inp: MigrationInput, groups: list[_Group], mode: str) -> tuple[list[WorkloadPlan], list[Budget]]:
    wi = inp.config
    issuer = wi.issuer or ISSUER_PLACEHOLDER
    existing = inp.all_credentials()
    # a ServiceAccount keeps the default identity of the first workload (by key) that claims it
    claimed: dict[tuple[str, str], str] = {}
    planned_new: dict[str, int] = defaultdict(int)
    names: dict[str, str] = {}
    drafts: list[tuple[_Group, WorkloadPlan]] = []
    for g in groups:
        first = g.entries[0].spec
        hazards: list[Finding] = []
        if not g.identities:
            drafts.append((g, WorkloadPlan(g.ref, tuple(e.pod.name for e in g.entries), ())))
            continue
        assert g.default is not None
        default = g.default
        sa_name = default_service_account_name(first, g.ref)
        key = (g.ref.namespace, sa_name)
        if claimed.get(key, default.client_id) != default.client_id:
            hazards.append(
                Finding(
                    H.SHARED_SERVICE_ACCOUNT,
                    f"ServiceAccount {sa_name} is shared with a workload whose default identity differs: "
                    "this "
                    f"workload gets its own ServiceAccount {dns_name(g.ref.name)}",
                )
            )
            sa_name = dns_name(g.ref.name)
            key = (g.ref.namespace, sa_name)
        claimed.setdefault(key, default.client_id)
        current = inp.service_accounts.get(key)
        # the expiration as azwi and the guide write it: the pod template's (or the ServiceAccount's), else
        # the webhook's default, explicit
        expiration = first.annotations.get(EXPIRATION_ANNOTATION) or (
            current.annotations.get(EXPIRATION_ANNOTATION, "") if current is not None else ""
        )
        want = {
            CLIENT_ID_ANNOTATION: default.client_id,
            **tenant_annotation(default, wi),
            EXPIRATION_ANNOTATION: expiration or str(DEFAULT_EXPIRATION),
        }
        if current is None and sa_name not in (DEFAULT_SERVICE_ACCOUNT, first.service_account):
            action = SA_CREATE
        elif current is None and not inp.service_accounts_complete and sa_name == first.service_account:
            action = SA_ANNOTATE  # not in the input: assumed to exist, as the pods name it
        elif current is None:
            action = SA_CREATE
        elif all(current.annotations.get(k) == v for k, v in want.items()):
            action = SA_KEEP
        else:
            action = SA_ANNOTATE
        subj = entra.subject(g.ref.namespace, sa_name)
        creds = []
        for ident in g.identities:
            exists = credential_exists(existing, ident.client_id, wi.issuer, subj, wi.audience)
            name = fic_name(g.ref.namespace, sa_name)
            creds.append(
                CredentialPlan(
                    identity=ident.key,
                    client_id=ident.client_id,
                    name=name,
                    issuer=issuer,
                    subject=subj,
                    audience=wi.audience,
                    exists=exists,
                    command=fic_command(ident, name, issuer, subj, wi.audience),
                    service_principal=ident.type in (1, 2),
                )
            )
            names[ident.client_id.lower()] = ident.key
        # one credential per (identity, ServiceAccount): workloads sharing a ServiceAccount share it
        for c in creds:
            if not c.exists:
                planned_new[f"{c.client_id.lower()}|{c.subject}"] = 1
        proxy = decide_proxy(first, g.capability, inp.namespaces.get(g.ref.namespace))
        hazards.extend(proxy.hazards)
        drafts.append(
            (
                g,
                WorkloadPlan(
                    workload=g.ref,
                    pods=tuple(e.pod.name for e in g.entries),
                    identities=tuple(i.key for i in g.identities),
                    default_identity=default.key,
                    default_client_id=default.client_id,
                    service_account=sa_name,
                    service_account_action=action,
                    service_account_annotations=want,
                    label_done=first.labelled,
                    proxy=proxy.inject,
                    proxy_reason=proxy.reason,
                    sdk_action=sdk_action(g.sdks, g.capability),
                    credentials=tuple(creds),
                    hazards=tuple(hazards),
                ),
            )
        )
    per_identity: dict[str, int] = defaultdict(int)
    for k in planned_new:
        per_identity[k.split("|", 1)[0]] += 1
    budgets = []
    for cid in sorted(
        set(per_identity) | {c.client_id.lower() for c in existing if c.client_id.lower() in names}
    ):
        have = sum(1 for c in existing if c.client_id.lower() == cid)
        budgets.append(Budget(cid, names.get(cid, cid), have, per_identity.get(cid, 0)))
    over = {b.client_id for b in budgets if b.left < 0}
    plans = []
    cleanup = _cleanup(inp, drafts)
    for _, p in drafts:
        extra = [
            Finding(
                H.FEDERATED_CREDENTIAL_BUDGET,
                f"identity {c.identity} would need {entra.FIC_LIMIT - b.left} federated credentials (limit "
                f"{entra.FIC_LIMIT})",
            )
            for c in p.credentials
            for b in budgets
            if b.client_id == c.client_id.lower() and b.client_id in over
        ]
        hz = tuple(H.with_severity(h) for h in (*p.hazards, *extra))
        plans.append(replace(p, cleanup=cleanup.get(p.workload.key, ()), hazards=hz))
    return plans, budgets


def _cleanup(inp: MigrationInput, drafts: list[tuple[_Group, WorkloadPlan]]) -> dict[str, tuple[str, ...]]:
    """The clean-up order, per workload: remove the label, then the bindings and identities nothing else
    uses, then ``az aks pod-identity delete`` — each only when no other workload still depends on it."""
    world = inp.world
    wi = inp.config
    users: dict[str, set[str]] = defaultdict(set)  # binding key -> workloads whose pods select it
    for g, _ in drafts:
        for sel in {e.pod.binding_label for e in g.entries if e.pod.binding_label}:
            for b in world.bindings_with_selector(sel):
                users[b.key].add(g.ref.key)
    out: dict[str, tuple[str, ...]] = {}
    rg = wi.resource_group or "$RESOURCE_GROUP"
    cluster = wi.cluster_name or "$CLUSTER_NAME"
    for g, p in drafts:
        if not p.migrates:
            continue
        steps = [f"after verifying: remove the {BINDING_LABEL} label from the pod template"]
        sels = {e.pod.binding_label for e in g.entries if e.pod.binding_label}
        for b in sorted((b for sel in sels for b in world.bindings_with_selector(sel)), key=lambda b: b.key):
            others = sorted(users[b.key] - {g.ref.key})
            ns, name = b.key.split("/", 1)
            ident_name = b.azure_identity
            if others:
                steps.append(
                    f"keep AzureIdentityBinding {b.key}: still selected by {', '.join(others)}; "
                    "delete it after them"
                )
                continue
            steps.append(f"kubectl delete azureidentitybinding {name} -n {ns}")
            still = [x.key for x in world.bindings_naming(ns, ident_name) if x.key != b.key]
            if still:
                steps.append(f"keep AzureIdentity {ns}/{ident_name}: still named by {', '.join(still)}")
            else:
                steps.append(f"kubectl delete azureidentity {ident_name} -n {ns}")
                steps.append(
                    f"az aks pod-identity delete --name {ident_name} --namespace {ns} --resource-group {rg} "
                    f"--cluster-name {cluster}  # add-on clusters, once nothing in {ns} uses it"
                )
        out[g.ref.key] = tuple(steps)
    return out


# ------------------------------------------------------------------------------------------- the pods
def _admission(
    spec: PodSpec, sa: ServiceAccount | None, ns: Namespace | None, wi: WorkloadIdentityConfig
) -> Admission:
    adm = admit(spec, sa, wi)
    if (
        adm.mutated
        and adm.proxy is not None
        and ns is not None
        and ns.pod_security in PSA_PRIVILEGED_REJECTING
    ):
        return replace(
            adm,
            denied=f'pods "{spec.name}" is forbidden: violates PodSecurity "{ns.pod_security}:latest": '
            'privileged (container "azwi-proxy-init" must not set securityContext.privileged=true)',
            denied_code=H.PROXY_POD_SECURITY,
        )
    return adm


def _pod_hazards(
    inp: MigrationInput,
    *,
    entry: PodEntry,
    res: PodResult,
    idents: Sequence[AzureIdentity],
    state: AfterState,
    rows: Sequence[Row],
    mode: str,
    sdk_error: str,
) -> list[Finding]:
    spec, adm, wi = state.spec, state.admission, inp.config
    out: list[Finding] = []
    migrating = bool(idents)
    if len(idents) > 1:
        out.append(
            Finding(
                H.MULTIPLE_IDENTITIES,
                f"NMI serves {len(idents)} identities ({', '.join(i.key for i in idents)})",
            )
        )
    for i in idents:
        if i.namespace != entry.pod.namespace:
            out.append(
                Finding(H.CROSS_NAMESPACE_IDENTITY, f"identity {i.key} is in another namespace than the pod")
            )
        if i.type in (1, 2):
            out.append(
                Finding(
                    H.SERVICE_PRINCIPAL_IDENTITY, f"identity {i.key} is a service principal (type {i.type})"
                )
            )
        if i.auxiliary_tenant_ids:
            out.append(
                Finding(
                    H.AUXILIARY_TENANTS,
                    f"identity {i.key} has auxiliaryTenantIDs {', '.join(i.auxiliary_tenant_ids)}: "
                    "no equivalent",
                )
            )
    if adm.denied:
        text = adm.denied
        out.append(Finding(adm.denied_code, f"denied at admission: {text}"))
    if migrating and not adm.called:
        out.append(Finding(H.NOT_ADMITTED_BY_WEBHOOK, f"the webhook is not called: {adm.not_called_because}"))
    if adm.mutated:
        app = adm.env.get(spec.containers[0].name, {}) if spec.containers else {}
        if migrating and not app.get(ENV_CLIENT_ID):
            out.append(
                Finding(
                    H.NO_CLIENT_ID, f"ServiceAccount {spec.service_account} has no {CLIENT_ID_ANNOTATION}"
                )
            )
        if adm.proxy is not None:
            out.append(
                Finding(
                    H.PROXY_NOT_FOR_PRODUCTION,
                    "the migration proxy sidecar is not supported for production use",
                )
            )
            if PROXY_CONTAINER in adm.skipped:
                out.append(
                    Finding(
                        H.PROXY_SKIPPED,
                        f"{SKIP_CONTAINERS_ANNOTATION} lists azwi-proxy: it exits at start-up",
                    )
                )
            if spec.init_containers:
                names = ", ".join(c.name for c in spec.init_containers)
                out.append(
                    Finding(
                        H.INIT_CONTAINERS_NOT_PROXIED,
                        f"init containers {names} run before the proxy's iptables rules",
                    )
                )
            if entry.workload.kind in _JOB_KINDS and not adm.proxy.native_sidecar:
                out.append(
                    Finding(
                        H.JOB_NEVER_COMPLETES,
                        f"Kubernetes {wi.kubernetes_version} < 1.32: the proxy keeps the "
                        f"{entry.workload.kind}'s pod running",
                    )
                )
            if spec.windows:
                out.append(Finding(H.PROXY_WINDOWS, "the proxy images are Linux-only"))
            default = next((i for i in idents if i.client_id == app.get(ENV_CLIENT_ID)), None)
            by_res = [r for r in rows if r.shape.kind == SHAPE_RES_ID]
            if any(default is None or r.shape.value.lower() != default.resource_id.lower() for r in by_res):
                out.append(
                    Finding(
                        H.PROXY_IGNORES_RESOURCE_ID,
                        "requests by msi_res_id get AZURE_CLIENT_ID's identity through the proxy",
                    )
                )
        expected = adm.token_file
        for c in (*spec.containers, *spec.init_containers):
            for t in c.texts:
                for path in (TOKEN_FILE_OLD, TOKEN_FILE_V16):
                    if path in t and path != expected:
                        out.append(
                            Finding(
                                H.TOKEN_PATH_HARD_CODED,
                                f"container {c.name} names {path}; the token is at {expected}",
                            )
                        )
    if migrating or spec.labelled:
        cap = state.capability
        if sdk_error:
            out.append(Finding(H.SDK_UNKNOWN, sdk_error))
        elif cap == sdk.CAP_UNKNOWN:
            out.append(
                Finding(H.SDK_UNKNOWN, "no nmisim.dev/sdk annotation and no image rule: both outcomes shown")
            )
        elif cap == sdk.CAP_IMDS:
            out.append(
                Finding(H.SDK_TOO_OLD, "the application calls IMDS: " + ", ".join(s.text for s in state.sdks))
            )
        elif cap == sdk.CAP_LEGACY:
            out.append(
                Finding(
                    H.SDK_LEGACY_PATH, ", ".join(s.text for s in state.sdks if s.capability == sdk.CAP_LEGACY)
                )
            )
        elif cap == sdk.CAP_MSAL:
            out.append(Finding(H.TOKEN_FILE_READ_ONCE, ", ".join(s.text for s in state.sdks)))
        if any(s.name == "go-azidentity" for s in state.sdks):
            out.append(
                Finding(H.GO_MANAGED_IDENTITY_CREDENTIAL, "Go: ManagedIdentityCredential keeps calling IMDS")
            )
    if mode == MODE_VERIFY and spec.live and migrating:
        if not spec.labelled and entry.template_labelled:
            out.append(
                Finding(
                    H.RESTART_NEEDED,
                    "the pod template has the label, this pod does not: it predates the change",
                )
            )
        if spec.labelled and inp.webhook_installed and not spec.mutated:
            out.append(
                Finding(H.RESTART_NEEDED, "labelled but not mutated: created before the webhook or the label")
            )
        sa = inp.service_accounts.get((spec.namespace, spec.service_account))
        if spec.mutated and sa is not None:
            have = next((c.env.get(ENV_CLIENT_ID) for c in spec.containers if ENV_CLIENT_ID in c.env), None)
            if have is not None and have != sa.client_id:
                out.append(
                    Finding(
                        H.RESTART_NEEDED,
                        f"the pod has AZURE_CLIENT_ID {have!r}, its ServiceAccount now says {sa.client_id!r}",
                    )
                )
        env_client_id = (adm.env.get(spec.containers[0].name, {}) if spec.containers else {}).get(
            ENV_CLIENT_ID, ""
        )
        for r in rows:
            if r.after[PHASE_REMOVED].error.startswith("AADSTS70021"):
                near = entra.near_miss(
                    state.credentials,
                    # the client ID the exchange was for: the request's, else AZURE_CLIENT_ID
                    client_id=r.shape.value if r.shape.kind == "client_id" else env_client_id,
                    issuer=wi.issuer,
                    subj=entra.subject(spec.namespace, spec.service_account),
                    audience=wi.audience,
                )
                out.append(
                    Finding(
                        H.FEDERATED_CREDENTIAL_MISSING,
                        f"{r.shape.text}: " + (near or "no matching credential"),
                    )
                )
                break
    if res.verdict == VERDICT_INTERCEPTED and not idents:
        for r in rows:
            after = r.after[PHASE_REMOVED]
            if r.classes[PHASE_REMOVED] == GAINS_ACCESS and after.via == VIA_IMDS:
                if spec.labels.get(AKS_MANAGED_BY_LABEL) == "aks":
                    # an AKS add-on NMI denies by mistake (no exception reaches it) gets back the node
                    # identity it is meant to use: worth knowing, not a leak
                    out.append(
                        Finding(
                            H.NODE_IDENTITY_EXPOSED,
                            f"AKS add-on denied by NMI today; without NMI it gets {after.identity}, the "
                            "node's identity it is meant to use",
                            SEVERITY_INFO,
                        )
                    )
                    break
                out.append(
                    Finding(
                        H.NODE_IDENTITY_EXPOSED,
                        f"denied by NMI today; without NMI it gets {after.identity} from the node's IMDS "
                        "(mitigate: podLinkLocalAccess: None or a NetworkPolicy)",
                    )
                )
                break
    if res.verdict == VERDICT_EXEMPT and res.exceptions:
        out.append(Finding(H.EXCEPTION_MEANINGLESS, f"exempt by {', '.join(res.exceptions)} today"))
    for r in rows:
        a = r.after[PHASE_REMOVED]
        if (
            not r.before.ok
            and not a.ok
            and a.status is not None
            and r.before.status is not None
            and a.status != r.before.status
        ):
            out.append(
                Finding(H.STATUS_CODE_CHANGES, f"{r.shape.text}: {r.before.status} today, {a.status} after")
            )
            break
    return out


def assess(inp: MigrationInput, mode: str = MODE_PLAN) -> Report:
    """Every pod's classes and hazards and every workload's plan."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected plan or verify")
    world, wi = inp.world, inp.config
    ids = Identities.of(world)
    # a finished pod (a Job's) is assessed as its workload's next pod: running, as NMI would see it
    inp.pods = [
        replace(e, pod=e.pod.model_copy(update={"phase": None})) if e.pod.phase in FINISHED_PHASES else e
        for e in inp.pods
    ]
    results = {f"{e.pod.namespace}/{e.pod.name}": world.evaluate(e.pod) for e in inp.pods}
    groups = _groups(inp, results, ids)
    plans, budgets = _plans(inp, groups, mode)
    plan_of = {p.workload.key: p for p in plans}
    group_of = {g.ref.key: g for g in groups}
    planned_creds = tuple(c.credential(wi.issuer) for p in plans for c in p.credentials if not c.exists)
    pods: list[PodAssessment] = []
    for entry in sorted(inp.pods, key=lambda e: (e.pod.namespace, e.pod.name)):
        res = results[f"{entry.pod.namespace}/{entry.pod.name}"]
        g = group_of[entry.workload.key]
        plan = plan_of[entry.workload.key]
        idents = g.identities if res.verdict == VERDICT_INTERCEPTED else []
        if mode == MODE_PLAN and plan.migrates:
            spec = applied_spec(entry.spec, plan)
            sa: ServiceAccount | None = applied_service_account(
                inp.service_accounts.get((spec.namespace, plan.service_account)), plan
            )
            creds = (*inp.all_credentials(), *planned_creds)
        else:
            spec = entry.spec
            sa = inp.service_accounts.get((spec.namespace, spec.service_account))
            if sa is None and (
                spec.service_account == DEFAULT_SERVICE_ACCOUNT or not inp.service_accounts_complete
            ):
                sa = ServiceAccount(spec.namespace, spec.service_account)  # assumed to exist
            creds = inp.all_credentials()
        sdks, sdk_error = pod_sdks(spec, wi)
        cap = sdk.capability(sdks)
        adm = _admission(spec, sa, inp.namespaces.get(spec.namespace), wi)
        state = AfterState(spec, adm, tuple(creds), sdks, cap)
        shapes = shapes_for(idents)
        assessed_cap = sdk.CAP_WORKLOAD_IDENTITY if cap == sdk.CAP_UNKNOWN else cap
        befores: dict[Shape, Answer] = {}
        rows = assess_rows(
            world, ids, entry.pod, shapes=shapes, state=state, wi=wi, capability=assessed_cap, befores=befores
        )
        classes = pod_classes(rows)
        too_old = None
        if cap == sdk.CAP_UNKNOWN and (idents or spec.labelled):
            too_old = pod_classes(
                assess_rows(
                    world,
                    ids,
                    entry.pod,
                    shapes=shapes,
                    state=state,
                    wi=wi,
                    capability=sdk.CAP_IMDS,
                    befores=befores,
                )
            )
            if too_old == classes:
                too_old = None
        hazards = _pod_hazards(
            inp, entry=entry, res=res, idents=idents, state=state, rows=rows, mode=mode, sdk_error=sdk_error
        )
        for h in plan.hazards:
            if h not in hazards:
                hazards.append(h)
        if adm.denied:
            classes = dict.fromkeys(PHASES, BLOCKED_AT_ADMISSION)
        pods.append(
            PodAssessment(
                namespace=entry.pod.namespace,
                name=entry.pod.name,
                workload=entry.workload.key,
                before_verdict=res.verdict,
                identities=tuple(i.key for i in idents),
                service_account=spec.service_account,
                sdk=", ".join(s.text for s in sdks),
                capability=cap,
                proxy=adm.mutated and adm.proxy is not None,
                admission=("denied: " + adm.denied)
                if adm.denied
                else "mutated"
                if adm.mutated
                else "not called",
                rows=rows,
                classes=classes,
                classes_if_sdk_too_old=too_old,
                hazards=tuple(dict.fromkeys(H.with_severity(h) for h in hazards)),
                idle=entry.idle,
                state=state,
                pod=entry.pod,
            )
        )
    findings: tuple[Finding, ...] = ()
    if not wi.issuer and any(p.migrates for p in plans):
        findings = (
            Finding(
                H.ISSUER_UNKNOWN, "spec.workloadIdentity.issuer is not set: commands use $AKS_OIDC_ISSUER"
            ),
        )
    return Report(mode, tuple(pods), tuple(plans), tuple(budgets), findings)
