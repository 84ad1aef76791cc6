"""The Workload Identity webhook as v1.6.0 admits a pod (workload-identity.md §1, §2.1; the closing list's
rules 2-5 and 9). Every row cites the upstream file it comes from: ``deploy/azure-wi-webhook.yaml``,
``pkg/webhook/webhook.go`` (``Handle``, in order), ``pkg/webhook/consts.go``,
``docs/book/src/known-issues.md``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from migration_support import USE, container, pod_obj

from nmisim.engine.config import ConfigError, WorkloadIdentityConfig, parse_workload_identity
from nmisim.engine.migration.objects import PodSpec, ServiceAccount
from nmisim.engine.migration.webhook import (
    AUTHORITY_HOST,
    PROXY_CONTAINER,
    PROXY_INIT_CONTAINER,
    TOKEN_FILE_OLD,
    TOKEN_FILE_V16,
    Admission,
    admit,
    token_file,
    volume_name,
)

CID = "aaaaaaaa-0000-0000-0000-000000000001"
CFG_TENANT = "cccccccc-0000-0000-0000-00000000000c"
SA_TENANT = "dddddddd-0000-0000-0000-00000000000d"
PROXY = "azure.workload.identity/inject-proxy-sidecar"
PORT = "azure.workload.identity/proxy-sidecar-port"
EXP = "azure.workload.identity/service-account-token-expiration"
SKIP = "azure.workload.identity/skip-containers"
CLIENT = "azure.workload.identity/client-id"
TENANT = "azure.workload.identity/tenant-id"


def wi(**spec: Any) -> WorkloadIdentityConfig:
    """spec.workloadIdentity as SimulationConfig parses it."""
    return parse_workload_identity({"tenantID": CFG_TENANT, **spec})


def spec_of(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ns: str = "ns1",
    **kw: Any,
) -> PodSpec:
    return PodSpec.from_k8s(
        pod_obj("app-0", ns, labels=USE if labels is None else labels, annotations=annotations, **kw)
    )


def sa(annotations: dict[str, str] | None = None, ns: str = "ns1", name: str = "default") -> ServiceAccount:
    return ServiceAccount(ns, name, {CLIENT: CID} if annotations is None else annotations)


def run(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    sa_annotations: dict[str, str] | None = None,
    config: WorkloadIdentityConfig | None = None,
    ns: str = "ns1",
    **kw: Any,
) -> Admission:
    return admit(
        spec_of(labels=labels, annotations=annotations, ns=ns, **kw), sa(sa_annotations, ns), config or wi()
    )


# ------------------------------------------------------------------------------ rule 2: which pods reach it
@pytest.mark.parametrize(
    ("labels", "called"),
    [
        pytest.param(
            {"azure.workload.identity/use": "true"}, True, id="objectSelector matchLabels exactly true"
        ),
        pytest.param({"azure.workload.identity/use": "True"}, False, id="objectSelector: True is not true"),
        pytest.param({"azure.workload.identity/use": "TRUE"}, False, id="objectSelector: TRUE is not true"),
        pytest.param({"azure.workload.identity/use": "yes"}, False, id="objectSelector: yes"),
        pytest.param({"azure.workload.identity/use": ""}, False, id="objectSelector: empty value"),
        pytest.param({}, False, id="objectSelector: no label"),
        pytest.param({"azure.workload.identity/use-proxy": "true"}, False, id="objectSelector: another key"),
    ],
)
def test_webhook_called_only_for_label_exactly_true(labels: dict[str, str], called: bool) -> None:
    """deploy/azure-wi-webhook.yaml objectSelector.matchLabels azure.workload.identity/use: "true"."""
    adm = run(labels=labels)
    assert adm.called is called
    assert adm.mutated is called
    if not called:
        assert adm.not_called_because
        assert not adm.env, "a pod the webhook never sees gets nothing injected"
    else:
        assert adm.not_called_because == ""


def test_service_account_label_does_not_select_the_pod() -> None:
    """v1.0.0-alpha.0 (#695/#720): the SA's label no longer counts, only the pod's."""
    spec = spec_of(labels={})
    adm = admit(
        spec, ServiceAccount("ns1", "default", {CLIENT: CID, "azure.workload.identity/use": "true"}), wi()
    )
    assert not adm.called


@pytest.mark.parametrize(
    ("platform", "ns", "called"),
    [
        pytest.param(
            "aks", "kube-system", False, id="known-issues.md #525 AKS Admissions Enforcer kube-system"
        ),
        pytest.param(
            "oss", "kube-system", True, id="deploy/azure-wi-webhook.yaml no namespaceSelector (oss)"
        ),
        pytest.param("aks", "ns1", True, id="AKS ordinary namespace"),
        pytest.param("oss", "ns1", True, id="oss ordinary namespace"),
    ],
)
def test_namespace_exclusion_by_platform(platform: str, ns: str, called: bool) -> None:
    adm = run(ns=ns, config=wi(platform=platform))
    assert adm.called is called
    if not called:
        assert "kube-system" in adm.not_called_because


def test_platform_is_validated() -> None:
    with pytest.raises(ConfigError, match="platform"):
        parse_workload_identity({"platform": "gke"})


# --------------------------------------------------------------------------------- rule 3: denials
def test_missing_service_account_is_denied() -> None:
    """pkg/webhook/webhook.go Handle step 2: client.Get then reader.Get; NotFound → Errored(400)."""
    spec = spec_of(sa="api-sa")
    adm = admit(spec, None, wi())
    assert adm.called and not adm.admitted
    assert adm.denied == 'serviceaccounts "api-sa" not found'


def test_missing_service_account_without_label_is_not_the_webhooks_business() -> None:
    adm = admit(spec_of(labels={}, sa="api-sa"), None, wi())
    assert adm.admitted and not adm.called


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("true", id="webhook.go shouldInjectProxySidecar: true"),
        pytest.param("false", id="webhook.go shouldInjectProxySidecar: presence only, false injects"),
        pytest.param("", id="webhook.go shouldInjectProxySidecar: presence only, empty injects"),
        pytest.param("no", id="webhook.go shouldInjectProxySidecar: presence only, no injects"),
    ],
)
def test_proxy_annotation_presence_only(value: str) -> None:
    adm = run(annotations={PROXY: value})
    assert adm.mutated
    assert adm.proxy is not None
    assert adm.proxy.port == 8000  # consts.go DefaultProxySidecarPort
    assert PROXY_CONTAINER in adm.env and PROXY_INIT_CONTAINER in adm.env


def test_no_proxy_annotation_no_proxy() -> None:
    adm = run(annotations={PORT: "9000"})
    assert adm.proxy is None
    assert set(adm.env) == {"app"}


@pytest.mark.parametrize(
    ("annotations", "denied"),
    [
        pytest.param(
            {PROXY: "true"},
            "hostNetwork is set to true, cannot inject proxy sidecar",
            id="webhook.go Handle step 3 hostNetwork (#1090)",
        ),
        pytest.param(
            {PROXY: "false"},
            "hostNetwork is set to true, cannot inject proxy sidecar",
            id="webhook.go Handle step 3 hostNetwork, annotation false",
        ),
        pytest.param({}, "", id="hostNetwork without the proxy annotation is admitted"),
    ],
)
def test_host_network_with_proxy_is_denied(annotations: dict[str, str], denied: str) -> None:
    adm = run(annotations=annotations, host_network=True)
    assert adm.called
    assert adm.denied == denied


@pytest.mark.parametrize(
    ("port", "denied", "parsed"),
    [
        pytest.param("9000", "", 9000, id="webhook.go getProxyPort ParseInt(s,10,32) 9000"),
        pytest.param("99999", "", 99999, id="webhook.go getProxyPort: no 1-65535 range check"),
        pytest.param("0", "", 0, id="webhook.go getProxyPort: 0 parses"),
        pytest.param("+80", "", 80, id="webhook.go getProxyPort: Go ParseInt takes a sign"),
        pytest.param(
            "abc",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "abc": invalid syntax',
            None,
            id="webhook.go getProxyPort errors.Wrap abc",
        ),
        pytest.param(
            "8000 ",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "8000 ": invalid syntax',
            None,
            id="webhook.go getProxyPort trailing space",
        ),
        pytest.param(
            "8_000",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "8_000": invalid syntax',
            None,
            id="webhook.go getProxyPort base 10 takes no underscores",
        ),
        pytest.param(
            "80.5",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "80.5": invalid syntax',
            None,
            id="webhook.go getProxyPort not an integer",
        ),
        pytest.param(
            "2147483648",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "2147483648": value out of range',
            None,
            id="webhook.go getProxyPort bitSize 32 out of range",
        ),
        pytest.param(
            "",
            'failed to parse proxy sidecar port: strconv.ParseInt: parsing "": invalid syntax',
            None,
            id="webhook.go getProxyPort annotation present but empty is parsed",
        ),
    ],
)
def test_proxy_port(port: str, denied: str, parsed: int | None) -> None:
    adm = run(annotations={PROXY: "true", PORT: port})
    assert adm.denied == denied
    if parsed is not None:
        assert adm.proxy is not None and adm.proxy.port == parsed


def test_bad_proxy_port_without_proxy_annotation_is_not_read() -> None:
    """webhook.go: getProxyPort is called only when shouldInjectProxySidecar."""
    assert run(annotations={PORT: "abc"}).admitted


@pytest.mark.parametrize(
    ("kubernetes", "webhook", "native"),
    [
        pytest.param("1.32", "v1.6.0", True, id="webhook.go serverVersionGTE 1.32 + v1.5.0 #1442"),
        pytest.param("1.33.2", "v1.5.0", True, id="webhook.go native sidecar at v1.5.0"),
        pytest.param("1.31", "v1.6.0", False, id="webhook.go API server 1.31: regular container (#1108)"),
        pytest.param("1.32", "v1.4.1", False, id="v1.4.1 predates native sidecars (#1442)"),
        pytest.param("1.30", "v1.4.1", False, id="old both"),
    ],
)
def test_native_sidecar_needs_kubernetes_132_and_webhook_150(
    kubernetes: str, webhook: str, native: bool
) -> None:
    adm = run(annotations={PROXY: "true"}, config=wi(kubernetesVersion=kubernetes, webhookVersion=webhook))
    assert adm.proxy is not None
    assert adm.proxy.native_sidecar is native


# ---------------------------------------------------------------------- rule 3/4: token expiration
DENY = "token expiration {} not valid. Expected value to be between 3600 and 86400"


@pytest.mark.parametrize(
    ("pod_value", "sa_value", "seconds", "denied"),
    [
        pytest.param(None, None, 3600, "", id="webhook.go getServiceAccountTokenExpiration default 3600"),
        pytest.param(None, "7200", 7200, "", id="webhook.go getServiceAccountTokenExpiration SA annotation"),
        pytest.param("5000", "7200", 5000, "", id="webhook.go getServiceAccountTokenExpiration pod wins"),
        pytest.param(
            "", "7200", 7200, "", id="webhook.go getServiceAccountTokenExpiration empty pod value: SA"
        ),
        pytest.param("", "", 3600, "", id="webhook.go both empty: default"),
        pytest.param("3600", None, 3600, "", id="validServiceAccountTokenExpiry lower bound inclusive"),
        pytest.param("86400", None, 86400, "", id="validServiceAccountTokenExpiry upper bound inclusive"),
        pytest.param("3599", None, 0, DENY.format(3599), id="validServiceAccountTokenExpiry 3599"),
        pytest.param("86401", None, 0, DENY.format(86401), id="validServiceAccountTokenExpiry 86401"),
        pytest.param(None, "600", 0, DENY.format(600), id="validServiceAccountTokenExpiry SA 600"),
        pytest.param("7200", "600", 7200, "", id="webhook.go the pod's valid value hides the SA's bad one"),
        pytest.param("-1", None, 0, DENY.format(-1), id="validServiceAccountTokenExpiry negative"),
        pytest.param(
            "1h",
            None,
            0,
            'strconv.ParseInt: parsing "1h": invalid syntax',
            id="webhook.go ParseInt 1h (#693)",
        ),
        pytest.param(
            None,
            "3600s",
            0,
            'strconv.ParseInt: parsing "3600s": invalid syntax',
            id="webhook.go ParseInt SA 3600s",
        ),
        pytest.param(
            "99999999999999999999",
            None,
            0,
            'strconv.ParseInt: parsing "99999999999999999999": value out of range',
            id="webhook.go ParseInt(s,10,64) out of range",
        ),
        pytest.param(
            " 3600",
            None,
            0,
            'strconv.ParseInt: parsing " 3600": invalid syntax',
            id="webhook.go ParseInt space",
        ),
    ],
)
def test_token_expiration(pod_value: str | None, sa_value: str | None, seconds: int, denied: str) -> None:
    annotations = {} if pod_value is None else {EXP: pod_value}
    sa_ann = {CLIENT: CID, **({} if sa_value is None else {EXP: sa_value})}
    adm = run(annotations=annotations, sa_annotations=sa_ann)
    assert adm.denied == denied
    assert adm.expiration_seconds == seconds
    if denied:
        assert not adm.env, "a denied pod is not created"


def test_expiration_is_checked_after_the_proxy() -> None:
    """webhook.go Handle: the proxy (step 3) is checked before the expiration (step 4)."""
    adm = run(annotations={PROXY: "true", PORT: "x", EXP: "1h"})
    assert adm.denied.startswith("failed to parse proxy sidecar port")


# -------------------------------------------------------------------------- rule 4: what is injected
@pytest.mark.parametrize(
    ("sa_annotations", "client", "tenant"),
    [
        pytest.param({CLIENT: CID}, CID, CFG_TENANT, id="webhook.go getClientID; getTenantID config default"),
        pytest.param(
            {CLIENT: CID, TENANT: SA_TENANT}, CID, SA_TENANT, id="webhook.go getTenantID annotation"
        ),
        pytest.param(
            {CLIENT: CID, TENANT: ""}, CID, None, id="webhook.go getTenantID key present, empty wins"
        ),
        pytest.param({}, None, CFG_TENANT, id="webhook.go getClientID empty: omitted (#1593)"),
    ],
)
def test_client_and_tenant(sa_annotations: dict[str, str], client: str | None, tenant: str | None) -> None:
    env = run(sa_annotations=sa_annotations).env["app"]
    assert env.get("AZURE_CLIENT_ID") == client
    assert env.get("AZURE_TENANT_ID") == tenant
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE_V16
    assert env["AZURE_AUTHORITY_HOST"] == AUTHORITY_HOST == "https://login.microsoftonline.com/"


@pytest.mark.parametrize(
    ("version", "empty_injected"),
    [
        pytest.param("v1.6.0", False, id="webhook.go addEnvironmentVariables len(value)>0 v1.6.0"),
        pytest.param("v1.5.1", False, id="#1593 omit empty from v1.5.1"),
        pytest.param("v1.5.0", True, id="#1593 before v1.5.1 empty values injected"),
        pytest.param("v1.0.0", True, id="v1.0.0 empty values injected"),
    ],
)
def test_empty_values_by_version(version: str, empty_injected: bool) -> None:
    env = run(sa_annotations={TENANT: ""}, config=wi(webhookVersion=version)).env["app"]
    if empty_injected:
        assert env["AZURE_CLIENT_ID"] == ""
        assert env["AZURE_TENANT_ID"] == ""
    else:
        assert "AZURE_CLIENT_ID" not in env
        assert "AZURE_TENANT_ID" not in env


def test_env_never_overwritten() -> None:
    """webhook.go addEnvironmentVariables: only names the container lacks, whatever their value."""
    c = container(
        env=[
            {"name": "AZURE_CLIENT_ID", "value": "mine"},
            {"name": "AZURE_TENANT_ID", "value": ""},
            {
                "name": "AZURE_FEDERATED_TOKEN_FILE",
                "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}},
            },
        ]
    )
    env = run(containers=[c]).env["app"]
    assert env["AZURE_CLIENT_ID"] == "mine"
    assert env["AZURE_TENANT_ID"] == "", "an empty user value is present: not replaced by the tenant"
    assert "AZURE_FEDERATED_TOKEN_FILE" not in env, "valueFrom is present: the webhook does not add its own"
    assert env["AZURE_AUTHORITY_HOST"] == AUTHORITY_HOST


@pytest.mark.parametrize(
    ("version", "path"),
    [
        pytest.param(
            "v1.6.0", "/var/run/secrets/azure/wi/token/azure-identity-token", id="#1720 v1.6.0 path"
        ),
        pytest.param(
            "v1.5.1", "/var/run/secrets/azure/tokens/azure-identity-token", id="consts.go v1.5.1 path"
        ),
        pytest.param(
            "v1.0.0", "/var/run/secrets/azure/tokens/azure-identity-token", id="consts.go v1.0.0 path"
        ),
        pytest.param("1.7.2", "/var/run/secrets/azure/wi/token/azure-identity-token", id="later than v1.6.0"),
    ],
)
def test_token_path_by_version(version: str, path: str) -> None:
    assert token_file(version) == path
    adm = run(config=wi(webhookVersion=version))
    assert adm.token_file == path
    assert adm.env["app"]["AZURE_FEDERATED_TOKEN_FILE"] == path
    assert {TOKEN_FILE_OLD, TOKEN_FILE_V16} >= {path}


@pytest.mark.parametrize(
    "pod_name",
    [
        pytest.param("app-0", id="webhook.go buildVolumeName metadata.name"),
        pytest.param("web-7d9f8c6b5- (prefix)", id="webhook.go Handle podName generateName + (prefix)"),
        pytest.param("x" * 300, id="webhook.go volumeHash long name"),
    ],
)
def test_volume_name(pod_name: str) -> None:
    name = volume_name(pod_name, "v1.6.0")
    prefix = "azure-workload-identity-reserved-"
    assert len(name) == 63
    assert name.startswith(prefix)
    assert hashlib.sha256(pod_name.encode()).hexdigest().startswith(name[len(prefix) :])
    assert volume_name(pod_name, "v1.5.1") == "azure-identity-token"


def test_volume_names_differ_by_pod_name() -> None:
    assert volume_name("a", "v1.6.0") != volume_name("b", "v1.6.0")


@pytest.mark.parametrize(
    ("value", "skipped"),
    [
        pytest.param("sidecar", {"sidecar"}, id="webhook.go getSkipContainers one"),
        pytest.param(
            " sidecar ; init-db;", {"sidecar", "init-db"}, id="webhook.go getSkipContainers split ; trimmed"
        ),
        pytest.param("sidecar,init-db", set(), id="webhook.go getSkipContainers comma is not a separator"),
        pytest.param("", set(), id="webhook.go getSkipContainers empty"),
    ],
)
def test_skip_containers(value: str, skipped: set[str]) -> None:
    containers = [container("app"), container("sidecar")]
    adm = run(annotations={SKIP: value}, containers=containers, init_containers=[container("init-db")])
    assert set(adm.skipped) & {"app", "sidecar", "init-db"} == skipped
    for name in ("app", "sidecar", "init-db"):
        if name in skipped:
            assert adm.env[name] == {}, f"{name} is skipped"
        else:
            assert adm.env[name]["AZURE_CLIENT_ID"] == CID


def test_injected_into_proxy_containers_too() -> None:
    """webhook.go Handle: mutateContainers runs after the proxy containers are added (step 8)."""
    adm = run(annotations={PROXY: "true"})
    for name in (PROXY_CONTAINER, PROXY_INIT_CONTAINER):
        assert adm.env[name]["AZURE_CLIENT_ID"] == CID
        assert adm.env[name]["AZURE_TENANT_ID"] == CFG_TENANT
        assert adm.env[name]["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE_V16


def test_skipping_the_proxy_leaves_it_without_tenant() -> None:
    """§2.3: skip-containers can name azwi-proxy: it gets no AZURE_TENANT_ID (and exits)."""
    adm = run(annotations={PROXY: "true", SKIP: "azwi-proxy"})
    assert "AZURE_TENANT_ID" not in adm.env[PROXY_CONTAINER]
    assert adm.env["app"]["AZURE_TENANT_ID"] == CFG_TENANT


def test_existing_proxy_container_is_not_added_twice() -> None:
    """webhook.go injectProxySidecarContainer: skipped if a container named azwi-proxy exists."""
    adm = run(
        annotations={PROXY: "true"}, containers=[container("app"), container(PROXY_CONTAINER, "mine:1")]
    )
    assert list(adm.env).count(PROXY_CONTAINER) == 1
    assert adm.env[PROXY_CONTAINER]["AZURE_CLIENT_ID"] == CID


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"webhookVersion": "latest"}, "webhookVersion", id="config.py webhookVersion"),
        pytest.param({"kubernetesVersion": "one"}, "kubernetesVersion", id="config.py kubernetesVersion"),
        pytest.param(
            {"podLinkLocalAccess": "none"}, "podLinkLocalAccess", id="AgentPoolPodLinkLocalAccess enum"
        ),
        pytest.param({"federatedCredentials": [{"issuer": "x"}]}, "clientID", id="config.py FIC clientID"),
        pytest.param({"sdks": [{"image": "x"}]}, "sdks", id="config.py sdks rule"),
        pytest.param({"issuerURL": "x"}, "issuerURL", id="config.py unknown field"),
    ],
)
def test_config_rejects(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_workload_identity(spec)


def test_config_defaults() -> None:
    """§1.3: v1.6.0, audience api://AzureADTokenExchange; FIC audiences default to it."""
    c = parse_workload_identity(
        {
            "issuer": "https://i/",
            "federatedCredentials": [{"clientID": CID, "issuer": "https://i/", "subject": "s"}],
        }
    )
    assert c.webhook_version == "v1.6.0"
    assert c.audience == "api://AzureADTokenExchange"
    assert c.federated_credentials[0].audiences == ("api://AzureADTokenExchange",)
    assert c.issuer == "https://i/", "the trailing slash is kept"
