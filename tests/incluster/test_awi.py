"""After the migration, for real: Azure Workload Identity v1.6.0's own webhook and proxy on the real node,
nmisim's simulated Entra, and real SDKs in real pods, each case compared with what ``nmisim request
--after`` (and ``nmisim migrate``) predicted for the same pod.

``hack/awi-up.sh`` installs the webhook from upstream's ``deploy/azure-wi-webhook.yaml`` (built by
``hack/awi.sh``) and starts ``nmisim entra`` on the node's bridge (10.89.0.1:443). Pods reach it as
``login.microsoftonline.com`` through a ``hostAliases`` entry of their own: the webhook injects
``AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/`` (AzurePublicCloud) and the clients image trusts
the simulated Entra's CA. Every pod here is admitted (or refused) by the real webhook; nothing copies its
mutation. NMI is ``nmisim serve`` (manifests/nmi), as in test_agent.py; with ``--nmi-removed`` it plays
the node's IMDS once NMI is gone, so no pod ever reaches the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.engine.migration.webhook import TOKEN_FILE_V16
from tests.incluster.test_agent import (  # noqa: F401 (fixture)
    CLIENTS_IMAGE,
    agent,
    agent_pod,
    apply_list,
    curl,
    exec_in,
    identity_and_binding,
    replace_simulation_spec,
    resource_id,
    wait_for_agent,
)
from tests.realnode import NODE_LABEL, TOLERATION, require_real_node
from tests.support import ROOT, Cluster, eventually, parse_metrics

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.incluster]

NMISIM = str(Path(sys.executable).parent / "nmisim")
AWI_UP = ROOT / "hack" / "awi-up.sh"
ISSUER = "https://kubernetes.default.svc"  # hack/cluster.sh: --service-account-issuer
USE = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
PROXY_ANNOTATION = "azure.workload.identity/inject-proxy-sidecar"
EXPIRATION_ANNOTATION = "azure.workload.identity/service-account-token-expiration"
SDK_ANNOTATION = "nmisim.dev/sdk"
NEW_SDK = "python-azure-identity==1.27.0"
OLD_SDK = "python-azure-identity==1.6.1"
# three identities of aad-pod-identity: the ServiceAccount's (federated), a second one federated to the same
# ServiceAccount, and a third without a federated credential
APP, SECOND, NO_FIC = (f"5a1e0000-0000-4000-8000-{n:012d}" for n in (1, 2, 3))
NS = "awi-e2e"


def awi_env() -> dict[str, str]:
    out = subprocess.run([str(AWI_UP), "env"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def awi(cluster: Cluster) -> Iterator[dict[str, str]]:
    """The webhook installed and the simulated Entra running (hack/awi-up.sh); removed afterwards."""
    require_real_node(cluster)
    up = subprocess.run([str(AWI_UP), "up"], capture_output=True, text=True, timeout=600, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield awi_env()
    finally:
        subprocess.run([str(AWI_UP), "down"], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def wi(installed: Cluster, awi: dict[str, str], agent: None) -> Iterator[str]:  # noqa: F811
    """Namespace NS with three aad-pod-identity identities bound by label, SimulationConfig/default naming
    this cluster's issuer and tenant and two federated credentials (what ``nmisim migrate --emit`` records
    and the simulated Entra reads), and ServiceAccount ``app`` annotated with the first identity."""
    cluster = installed
    cluster.kubectl("create", "namespace", NS, check=False)
    before = cluster.get_json("simulationconfig", "default")["spec"]
    subject = f"system:serviceaccount:{NS}:app"
    spec = json.loads(json.dumps(before))
    spec["workloadIdentity"] = {
        "issuer": ISSUER,
        "tenantID": awi["AWI_TENANT_ID"],
        "federatedCredentials": [
            {"clientID": APP, "name": "app", "issuer": ISSUER, "subject": subject},
            {"clientID": SECOND, "name": "second", "issuer": ISSUER, "subject": subject},
        ],
    }
    replace_simulation_spec(cluster, spec)
    items = [
        *identity_and_binding("app", APP, "app"),
        *identity_and_binding("second", SECOND, "second"),
        *identity_and_binding("nofic", NO_FIC, "nofic"),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "app", "annotations": {CLIENT_ID_ANNOTATION: APP}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "plain"}},
    ]
    apply_list(cluster, NS, items)
    # the simulated Entra re-reads its directory every 2 s (hack/awi-up.sh: --reload 2)
    eventually(
        lambda: "2 federated credentials" in Path(awi["ENTRA_LOG"]).read_text(),
        timeout=30,
        what="nmisim entra to read the two federated credentials",
    )
    try:
        yield NS
    finally:
        replace_simulation_spec(cluster, before, check=False)
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def wi_pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    service_account: str = "app",
    host_network: bool = False,
    entra: str = "10.89.0.1",
) -> dict[str, Any]:
    """A clients-image pod on the real node that waits to be exec'd into; login.microsoftonline.com is
    the simulated Entra (hostAliases, the pod's own /etc/hosts)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": service_account,
            "hostNetwork": host_network,
            "nodeSelector": NODE_LABEL,
            "tolerations": [TOLERATION],
            "hostAliases": [{"ip": entra, "hostnames": ["login.microsoftonline.com"]}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": CLIENTS_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
                }
            ],
        },
    }


def create(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)


def running(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the pod, wait until all its containers are ready; the pod as the API server holds it."""
    proc = create(cluster, namespace, manifest)
    assert proc.returncode == 0, proc.stderr
    name = manifest["metadata"]["name"]
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=120s")
    pod: dict[str, Any] = cluster.get_json("pod", name, "-n", namespace)
    return pod


def env_of(pod: dict[str, Any], container: str = "main") -> dict[str, str]:
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def azpy(cluster: Cluster, namespace: str, pod: str, *argv: str) -> dict[str, Any]:
    proc = exec_in(cluster, namespace, pod, *argv, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def predicted(namespace: str, pod: str, *argv: str, phase: str = "parallel") -> dict[str, Any]:
    """``nmisim request --after --verify``: the answer as the migration stands, in ``phase``."""
    proc = subprocess.run(
        [
            NMISIM,
            "request",
            "--cluster",
            "--pod",
            f"{namespace}/{pod}",
            "-o",
            "json",
            "--after",
            "--verify",
            "--phase",
            phase,
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def predicted_identity(after: dict[str, Any]) -> str | None:
    """The client ID the predicted token was issued to (None: no token)."""
    if after.get("status") != 200:
        return None
    return str(after["identity"]).lower()


def entra_metrics(awi: dict[str, str]) -> dict[str, float]:
    with urllib.request.urlopen(awi["ENTRA_METRICS"], timeout=5) as r:
        return parse_metrics(r.read().decode())


# ------------------------------------------------------------------------------------------------ cases
def test_a_migrated_pod_gets_its_identitys_token_from_every_sdk(
    cluster: Cluster, wi: str, awi: dict[str, str]
) -> None:
    pod = running(
        cluster,
        wi,
        wi_pod(
            "migrated", labels={USE: "true", "aadpodidbinding": "app"}, annotations={SDK_ANNOTATION: NEW_SDK}
        ),
    )
    env = env_of(pod)  # the real webhook's mutation
    assert env["AZURE_CLIENT_ID"] == APP and env["AZURE_TENANT_ID"] == awi["AWI_TENANT_ID"]
    assert env["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.com/"
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE_V16  # the engine's model of v1.6.0
    want = predicted(wi, "migrated")["after"]
    assert (want["status"], predicted_identity(want), want["servedBy"]) == (200, APP, "entra"), want
    assert any(TOKEN_FILE_V16 in line for line in want["explanation"]), want
    for argv in (("azpy", "wi"), ("azpy", "dac"), ("azgo", "-wi"), ("azgo", "-dac")):
        got = azpy(cluster, wi, "migrated", *argv)
        assert got["ok"], (argv, got)
        claims = got["claims"]
        assert claims["appid"] == APP and claims["tid"] == awi["AWI_TENANT_ID"], (argv, claims)
        assert "simulated" in claims["nmisim"], claims
    issued = sum(
        v
        for k, v in entra_metrics(awi).items()
        if k.startswith("nmisim_entra_token_requests_total{") and 'outcome="issued"' in k
    )
    assert issued >= 4, issued


def test_a_second_identity_by_client_id_with_and_without_its_credential(
    cluster: Cluster, wi: str, awi: dict[str, str]
) -> None:
    running(cluster, wi, wi_pod("second", labels={USE: "true"}, annotations={SDK_ANNOTATION: NEW_SDK}))
    for cid, status in ((SECOND, 200), (NO_FIC, 400)):
        want = predicted(wi, "second", "--query", f"client_id={cid}")["after"]
        assert want["status"] == status, want
        for argv in (("azpy", "wi", "--client-id", cid), ("azgo", "-wi", "-client-id", cid)):
            got = azpy(cluster, wi, "second", *argv)
            if status == 200:
                assert got["ok"] and got["claims"]["appid"] == cid == predicted_identity(want), (argv, got)
            else:
                assert not got["ok"] and got["aadsts"] == 70021, (argv, got)
                assert "AADSTS70021" in want["body"], want


def test_an_unlabelled_pod_is_not_mutated_and_still_meets_nmi(cluster: Cluster, wi: str) -> None:
    pod = running(cluster, wi, wi_pod("unlabelled", labels={"aadpodidbinding": "app"}))
    assert "AZURE_FEDERATED_TOKEN_FILE" not in env_of(pod)
    assert not any(v["name"] == "azure-identity-token" for v in pod["spec"].get("volumes", []))
    out = predicted(wi, "unlabelled")
    want = out["after"]
    assert want["status"] == 200 and want["route"] == out["today"]["route"], out
    got = curl(cluster, wi, "unlabelled")
    assert got["status"] == 200, got
    assert json.loads(got["body"])["access_token"] == json.loads(want["body"])["access_token"]
    sdk = azpy(cluster, wi, "unlabelled", "azpy", "mi")
    assert sdk["ok"] and sdk["token"] == json.loads(want["body"])["access_token"], sdk


def test_an_old_sdk_gets_its_token_through_the_real_proxy(cluster: Cluster, wi: str) -> None:
    pod = running(
        cluster,
        wi,
        wi_pod("old", labels={USE: "true"}, annotations={PROXY_ANNOTATION: "true", SDK_ANNOTATION: OLD_SDK}),
    )
    # v1.6.0 on Kubernetes >= 1.29: the proxy is a native sidecar (an init container that keeps running),
    # and azwi-proxy-init is appended after it
    inits = [(c["name"], c.get("restartPolicy")) for c in pod["spec"]["initContainers"]]
    assert inits == [("azwi-proxy", "Always"), ("azwi-proxy-init", None)], inits
    assert [c["name"] for c in pod["spec"]["containers"]] == ["main"]
    want = predicted(wi, "old")["after"]
    assert (want["status"], predicted_identity(want), want["servedBy"]) == (200, APP, "azwi-proxy"), want
    got = azpy(cluster, wi, "old", "azpy-old", "mi")
    assert got["ok"] and got["sdk"] == "azure-identity 1.6.1" and got["claims"]["appid"] == APP, got
    # a request by resource ID: the proxy ignores msi_res_id and answers the ServiceAccount's identity
    rid = resource_id("second")
    want = predicted(wi, "old", "--query", f"msi_res_id={rid}")["after"]
    got = azpy(cluster, wi, "old", "azpy", "imds", "--msi-res-id", rid)
    assert got["ok"] and got["claims"]["appid"] == APP == predicted_identity(want), (got, want)
    # the proxy's own 400s, as Go's http.Error writes them
    for argv, query in (
        (["--no-default-query", "--query", "api-version=2018-02-01"], "api-version=2018-02-01"),
    ):
        want = predicted(wi, "old", *argv)["after"]
        got = curl(cluster, wi, "old", f"/metadata/identity/oauth2/token?{query}")
        assert (
            (got["status"], got["body"])
            == (want["status"], want["body"])
            == (
                400,
                "The resource parameter is required.\n",
            )
        ), (got, want)


def test_the_proxy_without_a_client_id_answers_400(cluster: Cluster, wi: str) -> None:
    running(
        cluster,
        wi,
        wi_pod(
            "noclient", labels={USE: "true"}, annotations={PROXY_ANNOTATION: "true"}, service_account="plain"
        ),
    )
    want = predicted(wi, "noclient")["after"]
    got = curl(cluster, wi, "noclient")
    assert (got["status"], got["body"]) == (want["status"], want["body"]), (got, want)
    assert got["status"] == 400 and "AZURE_CLIENT_ID" in got["body"]


REFUSED = {
    "hostnet-proxy": ({PROXY_ANNOTATION: "true"}, True, "hostNetwork"),
    "short-expiry": ({EXPIRATION_ANNOTATION: "600"}, False, "expiration"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_webhook_refuses_at_admission_as_predicted(cluster: Cluster, wi: str, name: str) -> None:
    annotations, host_network, text = REFUSED[name]
    manifest = wi_pod(name, labels={USE: "true"}, annotations=annotations, host_network=host_network)
    proc = create(cluster, wi, manifest)
    assert proc.returncode != 0 and "admission webhook" in proc.stderr, proc.stderr
    assert text in proc.stderr, proc.stderr
    # the prediction reads the pod from files: the API server never stored it
    plan = subprocess.run(
        [NMISIM, "migrate", "-f", "-", "--verify", "-o", "json", "--pods"],
        input=json.dumps({**manifest, "metadata": {**manifest["metadata"], "namespace": wi}}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert plan.returncode in (0, 3), plan.stderr
    pod = json.loads(plan.stdout)["pods"][0]
    assert pod["class"]["removed"] == "blocked-at-admission", pod
    denied = pod["admission"].removeprefix("denied: ")
    webhook_text = proc.stderr.split("denied the request: ", 1)[-1].strip()
    assert denied == webhook_text, (denied, webhook_text)


def set_agent_args(cluster: Cluster, daemonset: str, args: list[str]) -> None:
    """The agent container's arguments in its DaemonSet (whose controller then replaces the agent pod)."""
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args}]
    cluster.kubectl(
        "patch", "daemonset", daemonset, "-n", "nmisim-agent", "--type=json", "-p", json.dumps(patch)
    )


def test_after_nmi_is_removed_a_denied_pod_reaches_the_nodes_identities_through_the_imds_model(
    cluster: Cluster, wi: str
) -> None:
    running(cluster, wi, wi_pod("denied", service_account="plain"))
    spec = cluster.get_json("simulationconfig", "default")["spec"]
    imds = {**spec.get("imds", {}), "systemAssigned": True}
    replace_simulation_spec(cluster, {**spec, "imds": imds})
    want = predicted(wi, "denied", phase="removed")
    assert want["today"]["status"] in (403, 404) and want["after"]["status"] == 200, want
    ds = cluster.get_json("daemonset", "-n", "nmisim-agent")["items"][0]
    args = ds["spec"]["template"]["spec"]["containers"][0].get("args", [])
    name = ds["metadata"]["name"]
    old_pod = agent_pod(cluster)
    set_agent_args(cluster, name, [*args, "--nmi-removed"])
    try:
        eventually(
            lambda: (
                (p := agent_pod(cluster)) not in ("", old_pod)
                and "NMI removed" in cluster.kubectl("logs", "-n", "nmisim-agent", p, check=False).stdout
            ),
            timeout=120,
            what="the agent restarted with --nmi-removed",
        )
        got = eventually(
            lambda: (a := curl(cluster, wi, "denied")).get("status") == 200 and a,
            timeout=60,
            what="the IMDS model's answer",
        )
        assert json.loads(got["body"])["access_token"] == json.loads(want["after"]["body"])["access_token"]
    finally:
        set_agent_args(cluster, name, args)
        replace_simulation_spec(cluster, spec)
        # NMI back before the next test asks it (a fresh-clone run met the closed port mid-restart)
        wait_for_agent(cluster)
        eventually(
            lambda: (
                "NMI removed"
                not in cluster.kubectl("logs", "-n", "nmisim-agent", agent_pod(cluster), check=False).stdout
            ),
            timeout=60,
            what="the agent restarted without --nmi-removed",
        )


# ------------------------------------------------------------------ azwi podidentity detect vs nmisim
# Two workloads as teams run them under NMI, each bound to its own identity: one with an SDK too old for
# workload identity (asks IMDS), one with a current SDK (WorkloadIdentityCredential once migrated).
COMPARED = {
    "old-sdk": (OLD_SDK, ("azpy-old", "mi"), f"5a1e0000-0000-4000-8000-{11:012d}"),
    "new-sdk": (NEW_SDK, ("azpy", "wi"), f"5a1e0000-0000-4000-8000-{12:012d}"),
}


def compared_objects(namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for name, (sdk_text, _, cid) in COMPARED.items():
        items += identity_and_binding(name, cid, name)
        template = wi_pod(
            name, labels={"app": name, "aadpodidbinding": name}, annotations={SDK_ANNOTATION: sdk_text}
        )
        del template["spec"]["serviceAccountName"]  # the default ServiceAccount, as most NMI workloads
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": template["metadata"], "spec": template["spec"]},
                },
            }
        )
    return items


def newest_pod(cluster: Cluster, namespace: str, app: str, after: set[str]) -> dict[str, Any]:
    """The workload's pod created after ``after`` (its names then), once its application container runs."""

    def started() -> dict[str, Any] | None:
        for p in cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")["items"]:
            if p["metadata"]["name"] in after or p["metadata"].get("deletionTimestamp"):
                continue
            main = [s for s in p["status"].get("containerStatuses", []) if s["name"] == "main"]
            if main and main[0].get("state", {}).get("running"):
                return dict(p)
        return None

    pod: dict[str, Any] = eventually(started, timeout=180, what=f"a new pod of {namespace}/{app} running")
    return pod


def pod_names(cluster: Cluster, namespace: str, app: str) -> set[str]:
    return {
        p["metadata"]["name"] for p in cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")["items"]
    }


def outcome(cluster: Cluster, namespace: str, pod: str, argv: tuple[str, ...]) -> str:
    """The client ID the application's own request got a token for, else why not (one line)."""
    proc = exec_in(cluster, namespace, pod, *argv, "--timeout", "20", "--retries", "0", timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no token: {proc.stderr.strip()[-120:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got.get("ok"):
        return str(got.get("claims", {}).get("appid") or got.get("token", "")[:40]).lower()
    return f"no token: {got.get('error')}: {str(got.get('message', ''))[:120]}"


def settled_outcome(cluster: Cluster, namespace: str, pod: str, argv: tuple[str, ...], wait: bool) -> str:
    """:func:`outcome`; with ``wait``, the first token within 90 s (a sidecar may still be starting)."""
    if not wait:
        return outcome(cluster, namespace, pod, argv)
    last: list[str] = []

    def token() -> str | None:
        last[:] = [outcome(cluster, namespace, pod, argv)]
        return None if last[0].startswith("no token") else last[0]

    try:
        got: str = eventually(token, timeout=90, what=f"a token in {namespace}/{pod}")
    except AssertionError:
        return last[0] if last else "no token"
    return got


def proxy_said(cluster: Cluster, namespace: str, pod: str) -> str:
    """The ``error`` of the last line ``azwi-proxy`` logged (this run's, else the previous run's)."""

    def said() -> str | None:
        for extra in ((), ("--previous",)):
            log = cluster.kubectl("logs", pod, "-n", namespace, "-c", "azwi-proxy", *extra, check=False)
            lines = log.stdout.strip().splitlines()
            if lines:
                try:
                    return str(json.loads(lines[-1]).get("error") or lines[-1])
                except ValueError:
                    return lines[-1][-100:]
        return None

    got: str = eventually(said, timeout=60, what=f"azwi-proxy's log in {namespace}/{pod}")
    return got


def nmi_identity(cluster: Cluster, namespace: str, pod: str) -> str:
    """The identity NMI gives the pod today: the simulated token names its client ID."""
    got = curl(cluster, namespace, pod)
    assert got.get("status") == 200, got
    token = str(json.loads(got["body"])["access_token"])  # FAKE_TOKEN_PREFIX.<client ID>
    return token.rpartition(".")[2].lower()


def test_azwi_podidentity_detect_and_nmisim_migrate_emit_side_by_side(
    cluster: Cluster, wi: str, awi: dict[str, str], tmp_path: Path
) -> None:
    """Each tool's output applied to its own copy of the same workloads; per pod, does the application end
    with the identity NMI gave it? The table goes to .cluster/awi-comparison.md (docs/migration.md)."""
    spaces = {"azwi": f"{NS}-azwi", "nmisim": f"{NS}-nmisim"}
    rows: dict[str, dict[str, str]] = {name: {} for name in COMPARED}
    try:
        for ns in spaces.values():
            cluster.kubectl("create", "namespace", ns, check=False)
            apply_list(cluster, ns, compared_objects(ns))
            for name in COMPARED:
                cluster.kubectl(
                    "rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=120s", timeout=150
                )
                pod = newest_pod(cluster, ns, name, set())["metadata"]["name"]
                rows[name]["nmi"] = nmi_identity(cluster, ns, pod)
                assert rows[name]["nmi"] == COMPARED[name][2]
        before = {tool: {n: pod_names(cluster, ns, n) for n in COMPARED} for tool, ns in spaces.items()}

        # azwi podidentity detect: its files applied as its "Next steps" say, with the federated credential
        # it tells the user to create (recorded for the simulated Entra as az would create it)
        out = tmp_path / "azwi"
        ns = spaces["azwi"]
        proc = subprocess.run(
            [
                f"{awi['AWI_BIN']}/azwi",
                "podidentity",
                "detect",
                "--namespace",
                ns,
                "--output-dir",
                str(out),
                "--tenant-id",
                awi["AWI_TENANT_ID"],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={
                "KUBECONFIG": str(Path(cluster.kubeconfig).resolve()),
                "PATH": "/usr/bin:/bin",
                "HOME": str(tmp_path),
            },
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        files = sorted(out.iterdir())
        assert files, proc.stdout + proc.stderr
        credentials = []
        for f in files:
            for doc in yaml.safe_load_all(f.read_text()):
                if doc and doc.get("kind") == "ServiceAccount":
                    cid = doc["metadata"]["annotations"][CLIENT_ID_ANNOTATION]
                    subject = f"system:serviceaccount:{ns}:{doc['metadata']['name']}"
                    credentials.append(
                        {
                            "clientID": cid,
                            "name": doc["metadata"]["name"],
                            "issuer": ISSUER,
                            "subject": subject,
                        }
                    )
        assert len(credentials) == len(COMPARED), files
        spec = cluster.get_json("simulationconfig", "default")["spec"]
        spec["workloadIdentity"]["federatedCredentials"] += credentials
        replace_simulation_spec(cluster, spec)
        applied = cluster.kubectl("apply", "-n", ns, "-f", str(out), check=False)
        assert applied.returncode == 0, applied.stderr

        # nmisim migrate --emit: its apply.sh, as docs/migration.md says
        emit = tmp_path / "emit"
        ns = spaces["nmisim"]
        run = subprocess.run(
            [NMISIM, "migrate", "--cluster", "-n", ns, "--emit", str(emit)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        planned = json.loads(
            subprocess.run(
                [NMISIM, "migrate", "--cluster", "-n", ns, "-o", "json", "--pods"],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout
        )
        applied_sh = subprocess.run(
            ["sh", str(emit / "apply.sh")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=emit,
            env={
                "PATH": f"{Path(cluster.kubectl_bin).parent}:/usr/bin:/bin",
                "KUBECONFIG": str(Path(cluster.kubeconfig).resolve()),
            },
        )
        assert applied_sh.returncode == 0, applied_sh.stdout + applied_sh.stderr

        for tool, ns in spaces.items():
            for name, (_, argv, _) in COMPARED.items():
                pod = newest_pod(cluster, ns, name, before[tool][name])["metadata"]["name"]
                rows[name][tool] = settled_outcome(cluster, ns, pod, argv, wait=tool == "nmisim")
                if tool == "azwi":  # the hand-added proxy: not mutated, so no AZURE_TENANT_ID
                    rows[name]["proxy"] = proxy_said(cluster, ns, pod)
        predicted_class = {p["workload"].split("/")[-1]: p["class"]["removed"] for p in planned["pods"]}
    finally:
        for ns in spaces.values():
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    lines = [
        "| workload | SDK | NMI gave | after `azwi podidentity detect` | its `azwi-proxy` logged "
        "| after `nmisim migrate --emit` | nmisim predicted |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (sdk_text, _, _) in COMPARED.items():
        r = rows[name]
        lines.append(
            f"| {name} | `{sdk_text}` | `{r['nmi']}` | {r['azwi']} | `{r.get('proxy', '')}` "
            f"| `{r['nmisim']}` | {predicted_class[name]} |"
        )
    table = "\n".join(lines) + "\n"
    (ROOT / ".cluster").mkdir(exist_ok=True)
    (Path(str(cluster.kubeconfig)).parent / "awi-comparison.md").write_text(table)
    print(table)
    for name, r in rows.items():
        assert r["nmisim"] == r["nmi"], table  # nmisim's plan keeps every identity NMI gave
        assert predicted_class[name] == "same-identity", table
