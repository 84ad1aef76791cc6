"""Per pod, the class in each phase and its hazards; per workload, the plan (workload-identity.md, the closing
list "What a migration simulator would need to model", rules 1 and 6-16). Inputs are plain Kubernetes dicts
loaded as ``nmisim.sources.migration.from_files`` loads them (tests/unit/migration_support.py).

Upstream sources cited per test: ``pkg/webhook/webhook.go``, ``pkg/proxy/proxy.go``,
``init/init-iptables.sh``,
``pkg/cmd/podidentity/detect.go``, ``docs/book/src/known-issues.md``, the MS Learn migration guide
(``workload-identity-migrate-from-pod-identity.md``), and issues #408, #525, #693, #773, #1017, #1353, #1720.
"""

from __future__ import annotations

from typing import Any

import pytest
from migration_support import (
    ISSUER,
    USE,
    binding_obj,
    bound_pod,
    codes,
    container,
    exception_obj,
    fic,
    identity_obj,
    make_input,
    ns_obj,
    pod_obj,
    pod_of,
    rid,
    sa_obj,
)

from nmisim.engine.migration import hazards as H
from nmisim.engine.migration.assess import MODE_PLAN, MODE_VERIFY, assess
from nmisim.engine.migration.classify import (
    BLOCKED_AT_ADMISSION,
    DIFFERENT_IDENTITY,
    GAINS_ACCESS,
    LOSES_ACCESS,
    SAME_IDENTITY,
    UNAFFECTED,
    VIA_PROXY,
    VIA_WORKLOAD_IDENTITY,
)
from nmisim.engine.migration.plan import SA_ANNOTATE, SA_CREATE

CA = "aaaaaaaa-0000-0000-0000-00000000000a"
CB = "bbbbbbbb-0000-0000-0000-00000000000b"
VM_CID = "99999999-0000-0000-0000-000000000099"
SDK = "nmisim.dev/sdk"
WI_SDK = {SDK: "python-azure-identity==1.15.0"}
OLD_SDK = {SDK: "python-azure-identity==1.6.0"}
PROXY = "azure.workload.identity/inject-proxy-sidecar"
VM_ONE = {"userAssigned": [{"clientID": VM_CID, "resourceID": rid("node-pool")}]}
BOTH = ("parallel", "removed")


def one_identity(
    ns: str = "ns1", client_id: str = CA, name: str = "id-a", selector: str = "a"
) -> list[dict[str, Any]]:
    return [identity_obj(name, ns, client_id), binding_obj(f"{name}-binding", ns, name, selector)]


def deployment_pod(
    deploy: str, ns: str = "ns1", selector: str = "a", suffix: str = "x1", **kw: Any
) -> dict[str, Any]:
    """A Deployment's pod: owned by ReplicaSet <deploy>-<hash>, labelled pod-template-hash."""
    labels = {"pod-template-hash": "h5", **(kw.pop("labels", None) or {})}
    return bound_pod(
        selector, f"{deploy}-h5-{suffix}", ns, owner=("ReplicaSet", f"{deploy}-h5"), labels=labels, **kw
    )


# ====================================================================================== classes
def test_same_identity_when_the_plan_is_applied() -> None:
    """Rule 16 "same identity"; MS Learn guide path (a): latest SDK, SA annotation + FIC + label."""
    inp = make_input(*one_identity(), deployment_pod("web", annotations=WI_SDK))
    r = assess(inp, MODE_PLAN)
    p = pod_of(r, "ns1/web-h5-x1")
    assert p.identities == ("ns1/id-a",)
    assert dict(p.classes) == dict.fromkeys(BOTH, SAME_IDENTITY)
    for row in p.rows:
        assert row.before.ok and row.before.identity == CA
        for phase in BOTH:
            assert row.after[phase].via == VIA_WORKLOAD_IDENTITY
            assert row.after[phase].identity == CA
    (plan,) = r.plans
    assert plan.workload.key == "Deployment/ns1/web"
    assert plan.service_account == "web" and plan.service_account_action == SA_CREATE
    assert plan.service_account_annotations == {
        "azure.workload.identity/client-id": CA,
        "azure.workload.identity/service-account-token-expiration": "3600",
    }
    (cred,) = plan.credentials
    assert cred.issuer == ISSUER and cred.issuer.endswith("/")
    assert cred.subject == "system:serviceaccount:ns1:web"
    assert cred.audience == "api://AzureADTokenExchange"
    assert not cred.exists
    assert cred.command == (
        "az identity federated-credential create --name ns1-web --identity-name id-a --resource-group rg-1 "
        f"--subscription sub-1 --issuer {ISSUER} --subject system:serviceaccount:ns1:web "
        "--audience api://AzureADTokenExchange"
    )
    assert not plan.proxy
    assert any('azure.workload.identity/use: "true"' in s for s in plan.steps())


def test_loses_access_without_fic() -> None:
    """Rule 6: no matching FIC → AADSTS70021 (troubleshooting.md); verify mode reads what exists."""
    sa = sa_obj("api", annotations={"azure.workload.identity/client-id": CA})
    pod = bound_pod("a", sa="api", labels=USE, annotations=WI_SDK)
    r = assess(make_input(*one_identity(), sa, pod), MODE_VERIFY)
    p = pod_of(r, "ns1/app-0")
    assert dict(p.classes) == dict.fromkeys(BOTH, LOSES_ACCESS)
    default = p.rows[0]
    assert default.after["removed"].error.startswith("AADSTS70021: No matching federated identity record")
    # rule 8: a workload identity failure does not fall back to IMDS (nor to NMI while it is there)
    assert default.after["parallel"].via == VIA_WORKLOAD_IDENTITY
    assert not default.after["parallel"].ok
    assert H.FEDERATED_CREDENTIAL_MISSING in codes(p)


def test_verify_with_the_fic_is_same_identity_and_a_near_miss_is_named() -> None:
    sa = sa_obj("api", annotations={"azure.workload.identity/client-id": CA})
    pod = bound_pod("a", sa="api", labels=USE, annotations=WI_SDK)
    good = make_input(*one_identity(), sa, pod, wi={"federatedCredentials": [fic(CA, "ns1", "api")]})
    assert pod_of(assess(good, MODE_VERIFY), "ns1/app-0").classes["removed"] == SAME_IDENTITY
    slashless = fic(CA, "ns1", "api", issuer=ISSUER.rstrip("/"))
    bad = make_input(*one_identity(), sa, pod, wi={"federatedCredentials": [slashless]})
    p = pod_of(assess(bad, MODE_VERIFY), "ns1/app-0")
    assert p.classes["removed"] == LOSES_ACCESS
    (h,) = [h for h in p.hazards if h.code == H.FEDERATED_CREDENTIAL_MISSING]
    assert "has issuer" in h.message


def two_identities() -> list[dict[str, Any]]:
    return [
        identity_obj("id-a", "ns1", CA),
        identity_obj("id-b", "ns1", CB),
        binding_obj("bind-a", "ns1", "id-a", "a"),
        binding_obj("bind-b", "ns1", "id-b", "a"),
    ]


def test_different_identity_msi_res_id_through_the_sdk() -> None:
    """Rule 10/16: WI cannot name a resource ID; msi_res_id of the non-default identity → default."""
    r = assess(make_input(*two_identities(), deployment_pod("web", annotations=WI_SDK)), MODE_PLAN)
    p = pod_of(r, "ns1/web-h5-x1")
    assert H.MULTIPLE_IDENTITIES in codes(p)
    default_cid = r.plans[0].default_client_id
    other = CB if default_cid == CA else CA
    other_rid = rid("id-b") if other == CB else rid("id-a")
    by = {row.shape.text: row for row in p.rows}
    row = by[f"msi_res_id={other_rid}"]
    assert row.before.identity == other
    assert row.after["removed"].identity == default_cid
    assert row.classes["removed"] == DIFFERENT_IDENTITY
    assert by[f"client_id={other}"].classes["removed"] == SAME_IDENTITY, (
        "an explicit client id + its FIC works"
    )
    assert p.classes["removed"] == DIFFERENT_IDENTITY
    assert {c.client_id for c in r.plans[0].credentials} == {CA, CB}, "#408: every identity needs its FIC"


def test_different_identity_msi_res_id_through_the_proxy() -> None:
    """pkg/proxy/proxy.go parseTokenRequest reads client_id and resource: msi_res_id → AZURE_CLIENT_ID."""
    r = assess(make_input(*two_identities(), deployment_pod("web", annotations=OLD_SDK)), MODE_PLAN)
    p = pod_of(r, "ns1/web-h5-x1")
    assert p.proxy and r.plans[0].proxy
    assert H.PROXY_IGNORES_RESOURCE_ID in codes(p)
    assert H.SDK_TOO_OLD in codes(p)
    diff = [row for row in p.rows if row.classes["removed"] == DIFFERENT_IDENTITY]
    assert [row.shape.kind for row in diff] == ["msi_res_id"]
    assert diff[0].after["removed"].via == VIA_PROXY


@pytest.mark.parametrize(
    ("link", "removed"),
    [
        pytest.param("IMDS", GAINS_ACCESS, id="rule 13 podLinkLocalAccess IMDS: node's single UAMI"),
        pytest.param("None", UNAFFECTED, id="rule 13 AgentPoolPodLinkLocalAccess None: no IMDS"),
    ],
)
def test_gains_access_after_nmi_removal(link: str, removed: str) -> None:
    """A pod NMI denies (no binding) reaches the node's IMDS once NMI is gone (nmi-semantics §7)."""
    inp = make_input(pod_obj("lonely", "ns1"), wi={"podLinkLocalAccess": link}, imds=VM_ONE)
    p = pod_of(assess(inp, MODE_PLAN), "ns1/lonely")
    assert p.before_verdict == "intercepted" and p.identities == ()
    assert p.classes["parallel"] == UNAFFECTED, "NMI still answers while it is installed"
    assert p.classes["removed"] == removed
    if removed == GAINS_ACCESS:
        assert H.NODE_IDENTITY_EXPOSED in codes(p)
        assert p.rows[0].after["removed"].identity == VM_CID
    else:
        assert H.NODE_IDENTITY_EXPOSED not in codes(p)


def test_several_node_identities_no_default_token() -> None:
    """IMDS: several user-assigned identities, no client_id → 400 Multiple user assigned identities exist."""
    vm = {
        "userAssigned": [
            {"clientID": VM_CID, "resourceID": rid("n1")},
            {"clientID": CB, "resourceID": rid("n2")},
        ]
    }
    p = pod_of(assess(make_input(pod_obj("lonely"), imds=vm)), "ns1/lonely")
    assert p.classes["removed"] == UNAFFECTED
    assert "Multiple user assigned identities" in p.rows[0].after["removed"].error


def test_host_network_pod_is_unaffected() -> None:
    """Rule 14: hostNetwork pods bypass NMI today and reach IMDS after."""
    inp = make_input(*one_identity(), bound_pod("a", "hn", host_network=True), imds=VM_ONE)
    p = pod_of(assess(inp, MODE_PLAN), "ns1/hn")
    assert p.before_verdict == "bypass"
    assert dict(p.classes) == dict.fromkeys(BOTH, UNAFFECTED)
    assert p.rows[0].before.ok and p.rows[0].after["removed"].identity == VM_CID


def test_blocked_at_admission_missing_service_account() -> None:
    """pkg/webhook/webhook.go Handle step 2 on a live cluster (ServiceAccounts read are all there are)."""
    pod = bound_pod("a", sa="gone", labels=USE, annotations=WI_SDK)
    inp = make_input(*one_identity(), pod, service_accounts_complete=True)
    p = pod_of(assess(inp, MODE_VERIFY), "ns1/app-0")
    assert dict(p.classes) == dict.fromkeys(BOTH, BLOCKED_AT_ADMISSION)
    assert p.admission == 'denied: serviceaccounts "gone" not found'
    assert H.SERVICE_ACCOUNT_MISSING in codes(p)


@pytest.mark.parametrize(
    ("annotations", "code"),
    [
        pytest.param(
            {"azure.workload.identity/service-account-token-expiration": "1h"},
            H.TOKEN_EXPIRATION_OUT_OF_BOUNDS,
            id="webhook.go ParseInt 1h",
        ),
        pytest.param(
            {"azure.workload.identity/service-account-token-expiration": "100000"},
            H.TOKEN_EXPIRATION_OUT_OF_BOUNDS,
            id="webhook.go 100000 > 86400",
        ),
        pytest.param(
            {PROXY: "true", "azure.workload.identity/proxy-sidecar-port": "http"},
            H.PROXY_PORT_INVALID,
            id="webhook.go getProxyPort",
        ),
    ],
)
def test_blocked_at_admission_by_annotations(annotations: dict[str, str], code: str) -> None:
    pod = bound_pod("a", labels=USE, annotations={**WI_SDK, **annotations})
    p = pod_of(assess(make_input(*one_identity(), pod), MODE_VERIFY), "ns1/app-0")
    assert dict(p.classes) == dict.fromkeys(BOTH, BLOCKED_AT_ADMISSION)
    assert code in codes(p)


def test_proxy_on_host_network_is_blocked() -> None:
    """webhook.go Handle step 3: hostNetwork is set to true, cannot inject proxy sidecar (#1090)."""
    pod = bound_pod("a", "hn", labels=USE, annotations={PROXY: "false"}, host_network=True)
    p = pod_of(assess(make_input(*one_identity(), pod), MODE_VERIFY), "ns1/hn")
    assert p.classes["removed"] == BLOCKED_AT_ADMISSION
    assert p.admission == "denied: hostNetwork is set to true, cannot inject proxy sidecar"
    assert H.PROXY_ON_HOST_NETWORK in codes(p)


@pytest.mark.parametrize(
    ("level", "blocked"),
    [
        pytest.param("baseline", True, id="§2.1 privileged azwi-proxy-init vs PSA baseline"),
        pytest.param("restricted", True, id="§2.1 privileged azwi-proxy-init vs PSA restricted"),
        pytest.param("privileged", False, id="§2.1 PSA privileged admits it"),
    ],
)
def test_proxy_pod_security(level: str, blocked: bool) -> None:
    ns = ns_obj("ns1", {"pod-security.kubernetes.io/enforce": level})
    # verify: the proxy annotation is on the pod → denied by Pod Security
    pod = bound_pod("a", labels=USE, annotations={**OLD_SDK, PROXY: "true"})
    p = pod_of(assess(make_input(*one_identity(), ns, pod), MODE_VERIFY), "ns1/app-0")
    assert (p.classes["removed"] == BLOCKED_AT_ADMISSION) is blocked
    assert (H.PROXY_POD_SECURITY in codes(p)) is blocked
    # plan: the plan does not choose a proxy Pod Security rejects
    r = assess(make_input(*one_identity(), ns, deployment_pod("web", annotations=OLD_SDK)), MODE_PLAN)
    assert r.plans[0].proxy is not blocked
    assert (H.PROXY_POD_SECURITY in {h.code for h in r.plans[0].hazards}) is blocked


# ====================================================================================== hazards
def test_cross_namespace_identity() -> None:
    """detect.go lists one namespace; WI trusts a ServiceAccount in the pod's own namespace."""
    objs = [identity_obj("shared-id", "platform", CA), binding_obj("b", "platform", "shared-id", "a")]
    r = assess(make_input(*objs, deployment_pod("web", annotations=WI_SDK)), MODE_PLAN)
    p = pod_of(r, "ns1/web-h5-x1")
    assert H.CROSS_NAMESPACE_IDENTITY in codes(p)
    assert r.plans[0].credentials[0].subject == "system:serviceaccount:ns1:web"
    assert p.classes["removed"] == SAME_IDENTITY


def test_service_principal_identity() -> None:
    """Rule 7: SP identities (types 1/2) map to app registrations with FICs (az ad app ...)."""
    objs = [
        identity_obj(
            "sp", "ns1", CA, type_=1, resource_id="", tenant_id="eeeeeeee-0000-0000-0000-00000000000e"
        ),
        binding_obj("b", "ns1", "sp", "a"),
    ]
    r = assess(make_input(*objs, deployment_pod("web", annotations=WI_SDK)), MODE_PLAN)
    p = pod_of(r, "ns1/web-h5-x1")
    assert H.SERVICE_PRINCIPAL_IDENTITY in codes(p)
    (cred,) = r.plans[0].credentials
    assert cred.command.startswith(f"az ad app federated-credential create --id {CA} --parameters ")
    assert '"subject": "system:serviceaccount:ns1:web"' in cred.command
    assert r.plans[0].service_account_annotations["azure.workload.identity/tenant-id"] == (
        "eeeeeeee-0000-0000-0000-00000000000e"
    ), "webhook.go getTenantID: the SP's own tenant on its ServiceAccount"


def test_auxiliary_tenants() -> None:
    objs = [identity_obj("id-a", "ns1", CA, aux=["t2"]), binding_obj("b", "ns1", "id-a", "a")]
    p = pod_of(assess(make_input(*objs, deployment_pod("web", annotations=WI_SDK))), "ns1/web-h5-x1")
    assert H.AUXILIARY_TENANTS in codes(p)


def test_shared_service_account_gets_split() -> None:
    """detect.go: two workloads sharing one SA with different identities produce conflicting SA files."""
    objs = [
        identity_obj("id-a", "ns1", CA),
        identity_obj("id-b", "ns1", CB),
        binding_obj("bind-a", "ns1", "id-a", "a"),
        binding_obj("bind-b", "ns1", "id-b", "b"),
        sa_obj("shared"),
        deployment_pod("alpha", selector="a", sa="shared", annotations=WI_SDK),
        deployment_pod("beta", selector="b", sa="shared", annotations=WI_SDK),
    ]
    r = assess(make_input(*objs), MODE_PLAN)
    plans = {p.workload.name: p for p in r.plans}
    assert plans["alpha"].service_account == "shared"
    assert plans["alpha"].service_account_action == SA_ANNOTATE
    assert plans["beta"].service_account == "beta"
    assert plans["beta"].service_account_action == SA_CREATE
    assert H.SHARED_SERVICE_ACCOUNT in {h.code for h in plans["beta"].hazards}
    assert H.SHARED_SERVICE_ACCOUNT not in {h.code for h in plans["alpha"].hazards}
    for pod in r.pods:
        assert pod.classes["removed"] == SAME_IDENTITY, pod.key


def test_same_identity_shared_service_account_is_fine() -> None:
    objs = [
        *one_identity(),
        sa_obj("shared"),
        deployment_pod("alpha", sa="shared", annotations=WI_SDK),
        deployment_pod("beta", sa="shared", annotations=WI_SDK),
    ]
    r = assess(make_input(*objs), MODE_PLAN)
    assert {p.service_account for p in r.plans} == {"shared"}
    assert all(H.SHARED_SERVICE_ACCOUNT not in {h.code for h in p.hazards} for p in r.plans)
    (budget,) = r.budgets
    assert budget.planned == 1, "one FIC per (identity, ServiceAccount): the two workloads share it"


@pytest.mark.parametrize(
    ("existing", "over"),
    [
        pytest.param(19, False, id="federated-identity-credential.md 19 + 1 = 20: at the limit"),
        pytest.param(20, True, id="federated-identity-credential.md 20 + 1 = 21: over"),
    ],
)
def test_fic_budget(existing: int, over: bool) -> None:
    fics = [fic(CA, f"other{i}", "sa") for i in range(existing)]
    r = assess(
        make_input(
            *one_identity(), deployment_pod("web", annotations=WI_SDK), wi={"federatedCredentials": fics}
        )
    )
    (budget,) = r.budgets
    assert (budget.existing, budget.planned) == (existing, 1)
    assert budget.left == 20 - existing - 1
    hazard = [h for h in r.plans[0].hazards if h.code == H.FEDERATED_CREDENTIAL_BUDGET]
    assert bool(hazard) is over
    if over:
        assert hazard[0].message == "identity ns1/id-a would need 21 federated credentials (limit 20)"
        assert H.FEDERATED_CREDENTIAL_BUDGET in codes(pod_of(r, "ns1/web-h5-x1"))


def test_fic_budget_from_many_namespaces() -> None:
    """One identity bound in 21 namespaces: 21 (issuer, ns, SA) tuples, one FIC each."""
    objs: list[dict[str, Any]] = [
        identity_obj("id-a", "platform", CA),
        binding_obj("b", "platform", "id-a", "a"),
    ]
    objs += [deployment_pod("web", f"team{i:02d}", annotations=WI_SDK) for i in range(21)]
    r = assess(make_input(*objs))
    (budget,) = r.budgets
    assert budget.planned == 21 and budget.left == -1
    assert all(H.FEDERATED_CREDENTIAL_BUDGET in {h.code for h in p.hazards} for p in r.plans)


def test_init_containers_not_proxied() -> None:
    """init/init-iptables.sh runs in azwi-proxy-init, appended after the user's init containers."""
    pod = deployment_pod("web", annotations=OLD_SDK, init_containers=[container("fetch-secrets")])
    p = pod_of(assess(make_input(*one_identity(), pod)), "ns1/web-h5-x1")
    assert p.proxy
    assert H.INIT_CONTAINERS_NOT_PROXIED in codes(p)


@pytest.mark.parametrize(
    ("kubernetes", "hangs"),
    [
        pytest.param("1.31", True, id="#773 Job + proxy before 1.32 never completes"),
        pytest.param("1.32", False, id="#1442 native sidecar from 1.32"),
    ],
)
def test_job_never_completes(kubernetes: str, hangs: bool) -> None:
    pod = bound_pod("a", "job-abcde", owner=("Job", "nightly"), annotations=OLD_SDK)
    p = pod_of(
        assess(make_input(*one_identity(), pod, wi={"kubernetesVersion": kubernetes})), "ns1/job-abcde"
    )
    assert p.workload == "Job/ns1/nightly"
    assert p.proxy
    assert (H.JOB_NEVER_COMPLETES in codes(p)) is hangs


def test_sdk_too_old_plan_chooses_proxy_and_keeps_the_identity() -> None:
    """MS Learn guide path (b): older SDK → migration sidecar."""
    r = assess(make_input(*one_identity(), deployment_pod("web", annotations=OLD_SDK)))
    p = pod_of(r, "ns1/web-h5-x1")
    (plan,) = r.plans
    assert plan.proxy and "calls IMDS" in plan.proxy_reason
    assert plan.sdk_action == "upgrade python-azure-identity to 1.13.0+"
    assert H.SDK_TOO_OLD in codes(p) and H.PROXY_NOT_FOR_PRODUCTION in codes(p)
    assert p.rows[0].after["removed"].via == VIA_PROXY
    assert p.classes["removed"] == SAME_IDENTITY


@pytest.mark.parametrize(
    ("sdk", "code"),
    [
        pytest.param(
            "go-azidentity==1.5.0", H.GO_MANAGED_IDENTITY_CREDENTIAL, id="azidentity CHANGELOG 0.12.0"
        ),
        pytest.param("python-msal==1.24.0", H.TOKEN_FILE_READ_ONCE, id="#693 MSAL reads the file once"),
        pytest.param("js-azure-identity==2.1.0", H.SDK_LEGACY_PATH, id="azure-identity-sdk.md working < WI"),
        pytest.param("python-azure-identiy==1.15.0", H.SDK_UNKNOWN, id="unknown package is a finding"),
    ],
)
def test_sdk_hazards(sdk: str, code: str) -> None:
    p = pod_of(
        assess(make_input(*one_identity(), deployment_pod("web", annotations={SDK: sdk}))), "ns1/web-h5-x1"
    )
    assert code in codes(p)
    if code == H.SDK_UNKNOWN:
        (h,) = [h for h in p.hazards if h.code == code]
        assert "did you mean python-azure-identity" in h.message


def test_unknown_sdk_shows_both_outcomes() -> None:
    """Issue 20: unknown SDK → a finding and both outcomes."""
    p = pod_of(assess(make_input(*one_identity(), deployment_pod("web"))), "ns1/web-h5-x1")
    assert H.SDK_UNKNOWN in codes(p)
    assert p.classes["removed"] == SAME_IDENTITY
    assert p.classes_if_sdk_too_old is not None
    assert p.classes_if_sdk_too_old["removed"] == LOSES_ACCESS


@pytest.mark.parametrize(
    ("version", "hard_coded"),
    [
        pytest.param("v1.6.0", True, id="#1720 v1.6.0 moved the path: old path hard-coded"),
        pytest.param("v1.5.1", False, id="consts.go v1.5.1: the old path is right"),
    ],
)
def test_token_path_hard_coded(version: str, hard_coded: bool) -> None:
    c = container(env=[{"name": "TOKEN_PATH", "value": "/var/run/secrets/azure/tokens/azure-identity-token"}])
    pod = bound_pod("a", labels=USE, annotations=WI_SDK, containers=[c])
    p = pod_of(
        assess(make_input(*one_identity(), pod, wi={"webhookVersion": version}), MODE_VERIFY), "ns1/app-0"
    )
    assert (H.TOKEN_PATH_HARD_CODED in codes(p)) is hard_coded


def test_restart_needed_when_the_template_has_the_label() -> None:
    """§1.4: CREATE only; a live pod created before its template got the label keeps its spec."""
    pod = deployment_pod("web", annotations=WI_SDK, uid="u-1")
    inp = make_input(*one_identity(), pod, template_labelled={"Deployment/ns1/web": True})
    p = pod_of(assess(inp, MODE_VERIFY), "ns1/web-h5-x1")
    assert H.RESTART_NEEDED in codes(p)
    assert H.NOT_ADMITTED_BY_WEBHOOK in codes(p)
    p2 = pod_of(assess(make_input(*one_identity(), pod), MODE_VERIFY), "ns1/web-h5-x1")
    assert H.RESTART_NEEDED not in codes(p2)


def test_restart_needed_when_the_pod_predates_the_webhook() -> None:
    pod = bound_pod("a", labels=USE, annotations=WI_SDK, uid="u-2")
    p = pod_of(assess(make_input(*one_identity(), pod, webhook_installed=True), MODE_VERIFY), "ns1/app-0")
    assert H.RESTART_NEEDED in codes(p)


def test_exception_meaningless() -> None:
    """Rule 13: AzurePodIdentityException becomes meaningless without NMI."""
    objs = [exception_obj("skip-me", "ns1", {"app": "agent"}), pod_obj("agent-0", labels={"app": "agent"})]
    p = pod_of(assess(make_input(*objs, imds=VM_ONE)), "ns1/agent-0")
    assert p.before_verdict == "exempt"
    assert H.EXCEPTION_MEANINGLESS in codes(p)
    assert p.classes["removed"] == UNAFFECTED, "it reached IMDS before and after"


@pytest.mark.parametrize(
    ("platform", "reached"),
    [
        pytest.param("aks", False, id="known-issues.md #525 AKS kube-system"),
        pytest.param("oss", True, id="deploy/azure-wi-webhook.yaml oss kube-system"),
    ],
)
def test_kube_system_on_aks(platform: str, reached: bool) -> None:
    objs = [*one_identity("kube-system"), deployment_pod("addon", "kube-system", annotations=WI_SDK)]
    p = pod_of(assess(make_input(*objs, wi={"platform": platform})), "kube-system/addon-h5-x1")
    assert (H.NOT_ADMITTED_BY_WEBHOOK not in codes(p)) is reached
    assert (p.classes["removed"] == SAME_IDENTITY) is reached


# ====================================================================================== clean-up
def test_cleanup_order() -> None:
    """MS Learn guide: remove pod-identity labels, then the mapping, then az aks pod-identity delete."""
    r = assess(make_input(*one_identity(), deployment_pod("web", annotations=WI_SDK)))
    steps = list(r.plans[0].cleanup)
    assert steps[0].startswith("after verifying: remove the aadpodidbinding label")
    assert steps[1] == "kubectl delete azureidentitybinding id-a-binding -n ns1"
    assert steps[2] == "kubectl delete azureidentity id-a -n ns1"
    assert steps[3].startswith("az aks pod-identity delete --name id-a --namespace ns1 ")
    full = r.plans[0].steps()
    assert full.index(steps[0]) > max(i for i, s in enumerate(full) if "federated-credential create" in s)


def test_cleanup_keeps_a_binding_another_workload_selects() -> None:
    objs = [
        *one_identity(),
        deployment_pod("alpha", annotations=WI_SDK),
        deployment_pod("beta", annotations=WI_SDK),
    ]
    plans = {p.workload.name: p for p in assess(make_input(*objs)).plans}
    alpha = list(plans["alpha"].cleanup)
    assert alpha[1] == (
        "keep AzureIdentityBinding ns1/id-a-binding: still selected by Deployment/ns1/beta; "
        "delete it after them"
    )
    assert not any("delete azureidentity " in s or "pod-identity delete" in s for s in alpha)
    assert any("still selected by Deployment/ns1/alpha" in s for s in plans["beta"].cleanup)


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="plan or verify"):
        assess(make_input(), "apply")


# ============================================================================ phases and status codes
def test_parallel_unlabelled_pod_keeps_nmi() -> None:
    """Rule 12: while NMI is installed an unlabelled pod keeps NMI's answers; rule 13: then IMDS's."""
    p = pod_of(
        assess(make_input(*one_identity(), bound_pod("a", annotations=WI_SDK)), MODE_VERIFY), "ns1/app-0"
    )
    assert H.NOT_ADMITTED_BY_WEBHOOK in codes(p)
    assert p.classes["parallel"] == UNAFFECTED
    assert all(row.after["parallel"] == row.before for row in p.rows)
    assert p.classes["removed"] == LOSES_ACCESS, "no node identity: IMDS answers 400"


def test_proxy_pod_never_reaches_nmi_for_tokens() -> None:
    """Rule 12 / init/init-iptables.sh: the pod's own OUTPUT chain sends 169.254.169.254:80 to the proxy."""
    p = pod_of(
        assess(make_input(*one_identity(), deployment_pod("web", annotations=OLD_SDK))), "ns1/web-h5-x1"
    )
    assert p.proxy
    for row in p.rows:
        assert row.after["parallel"].via == VIA_PROXY
        assert row.after["removed"].via == VIA_PROXY


def test_status_code_changes() -> None:
    """Rule 11: NMI's 404 for a pod without an identity becomes IMDS's 400 once NMI is gone."""
    p = pod_of(assess(make_input(pod_obj("lonely"))), "ns1/lonely")
    assert p.rows[0].before.status == 404
    assert p.rows[0].after["removed"].status == 400
    assert H.STATUS_CODE_CHANGES in codes(p)


def test_proxy_skipped_exits() -> None:
    """§2.3 / cmd/proxy/main.go: skip-containers lists azwi-proxy → no AZURE_TENANT_ID → the proxy exits;
    azwi-proxy-init still redirects the pod's IMDS traffic to it, so nothing answers."""
    ann = {**OLD_SDK, PROXY: "true", "azure.workload.identity/skip-containers": "azwi-proxy"}
    sa = sa_obj("default", annotations={"azure.workload.identity/client-id": CA})
    inp = make_input(
        *one_identity(),
        sa,
        bound_pod("a", labels=USE, annotations=ann),
        wi={"federatedCredentials": [fic(CA, "ns1", "default")]},
    )
    p = pod_of(assess(inp, MODE_VERIFY), "ns1/app-0")
    assert H.PROXY_SKIPPED in codes(p)
    for row in p.rows:
        for phase in BOTH:
            assert row.after[phase].via == VIA_PROXY
            assert row.after[phase].error == "setup: failed to create proxy: AZURE_TENANT_ID not set"
    assert dict(p.classes) == dict.fromkeys(BOTH, LOSES_ACCESS)


def test_proxy_without_tenant_exits() -> None:
    """webhook.go getTenantID: an empty tenant-id key wins; v1.6.0 omits the empty value (#1593)."""
    sa = sa_obj(
        "default",
        annotations={"azure.workload.identity/client-id": CA, "azure.workload.identity/tenant-id": ""},
    )
    pod = bound_pod("a", labels=USE, annotations={**OLD_SDK, PROXY: "true"})
    inp = make_input(*one_identity(), sa, pod, wi={"federatedCredentials": [fic(CA, "ns1", "default")]})
    p = pod_of(assess(inp, MODE_VERIFY), "ns1/app-0")
    assert p.rows[0].after["removed"].error == "setup: failed to create proxy: AZURE_TENANT_ID not set"
    assert p.classes["removed"] == LOSES_ACCESS


def test_no_client_id_proxy_answers_400() -> None:
    """#1353: no client-id on the SA → no AZURE_CLIENT_ID → the proxy's 400 for requests without client_id."""
    pod = bound_pod("a", labels=USE, annotations={**OLD_SDK, PROXY: "true"})
    inp = make_input(
        *one_identity(),
        sa_obj("default", annotations={}),
        pod,
        wi={"federatedCredentials": [fic(CA, "ns1", "default")]},
    )
    p = pod_of(assess(inp, MODE_VERIFY), "ns1/app-0")
    assert H.NO_CLIENT_ID in codes(p)
    by = {row.shape.kind: row for row in p.rows}
    default = by["default"].after["removed"]
    assert (default.via, default.status) == (VIA_PROXY, 400)
    assert default.error == "The client_id parameter or AZURE_CLIENT_ID environment variable must be set"
    assert by["client_id"].classes["removed"] == SAME_IDENTITY, "an explicit client_id still works"
    assert by["msi_res_id"].classes["removed"] == LOSES_ACCESS


def test_windows_pod_gets_no_proxy() -> None:
    """#1017: the proxy images are Linux-only."""
    pod = deployment_pod("web", annotations=OLD_SDK, node_selector={"kubernetes.io/os": "windows"})
    r = assess(make_input(*one_identity(), pod))
    assert not r.plans[0].proxy
    assert H.PROXY_WINDOWS in {h.code for h in r.plans[0].hazards}


def test_custom_audience() -> None:
    """§1.3: the webhook's --audience overrides api://AzureADTokenExchange; the FIC's audience follows."""
    inp = make_input(
        *one_identity(), deployment_pod("web", annotations=WI_SDK), wi={"audience": "api://custom"}
    )
    r = assess(inp)
    assert r.plans[0].credentials[0].audience == "api://custom"
    assert r.plans[0].credentials[0].command.endswith("--audience api://custom")
    assert pod_of(r, "ns1/web-h5-x1").classes["removed"] == SAME_IDENTITY


def test_uid_1501_bypasses_the_proxy() -> None:
    """init/init-iptables.sh: AZWI_PROXY_OUTPUT -m owner --uid-owner 1501 -j ACCEPT (rule 9)."""
    app = container(securityContext={"runAsUser": 1501})
    pod = deployment_pod("web", annotations=OLD_SDK, containers=[app])
    p = pod_of(assess(make_input(*one_identity(), pod)), "ns1/web-h5-x1")
    assert p.proxy
    assert p.rows[0].after["parallel"].via != VIA_PROXY
