"""``evaluate --cluster``, ``request --cluster`` and ``explain`` against the real cluster, the kubectl plugin,
failure exit codes, and the demo sample (examples/demo/) checked against its expected.yaml.

The SimulationConfig is pinned with ``--config`` (NMI's defaults) where verdicts are asserted: the cluster's
``SimulationConfig/default`` is shared with the operator's tests, which may change it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, Cluster, eventually

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
NMISIM = str(BIN / "nmisim")
DEMO = ROOT / "examples" / "demo"
DEFAULT_CONFIG = (
    "apiVersion: nmisim.dev/v1alpha1\nkind: SimulationConfig\nmetadata: {name: default}\nspec: {}\n"
)
CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"


def nmisim(
    cluster: Cluster, *args: str, exe: str = NMISIM, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "NO_COLOR": "", **(env or {})}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, env=full_env, check=False
    )


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("azurepodidentityexceptions", "azureidentities", "azureidentitybindings"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.aadpodidentity.k8s.io", "--timeout=60s"
        )


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(DEFAULT_CONFIG)
    return str(path)


def _pod(name: str, labels: dict[str, str], host_network: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "mcr.microsoft.com/demo/app:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def selector_of(namespace: str) -> str:
    return f"app-{namespace}"[:63]


def _running(cluster: Cluster, namespace: str, n: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace)["items"]
        ok = [p for p in items if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return ok if len(ok) == n else []

    pods: list[dict[str, Any]] = eventually(ready, timeout=90, what=f"{n} Running pods in {namespace}")
    return pods


@pytest.fixture
def app_ns(cluster: Cluster, namespace: str, crds: None) -> str:
    """A namespace with an exception, an identity + binding, and four pods (one per outcome).

    The binding's selector is unique to the namespace: standard mode matches bindings across namespaces, and
    earlier tests' namespaces may still be terminating.
    """
    if not cluster.local:
        pytest.skip("needs kwok's fake nodes: the pods' images do not exist, a real kubelet never runs them")
    selector = selector_of(namespace)
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzurePodIdentityException",
            "metadata": {"name": "infra-exception"},
            "spec": {"podLabels": {"role": "infra"}},
        },
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentity",
            "metadata": {"name": "app-identity"},
            "spec": {
                "type": 0,
                "clientID": CLIENT_ID,
                "resourceID": "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/demo/"
                "providers/Microsoft.ManagedIdentity/userAssignedIdentities/app",
            },
        },
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding",
            "metadata": {"name": "app-binding"},
            "spec": {"azureIdentity": "app-identity", "selector": selector},
        },
        _pod("app", {"aadpodidbinding": selector}),
        _pod("infra", {"role": "infra"}),
        _pod("lonely", {"aadpodidbinding": "nothing-matches"}),
        _pod("hostnet", {"k8s-app": "agent"}, host_network=True),
    ]
    cluster.apply(yaml.safe_dump_all(docs), namespace)
    _running(cluster, namespace, 4)
    return namespace


# --------------------------------------------------------------------------------------- evaluate


def test_evaluate_cluster_namespace_json(cluster: Cluster, app_ns: str, config_file: str) -> None:
    proc = nmisim(cluster, "evaluate", "--cluster", "-n", app_ns, "--config", config_file, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["kind"] == "EvaluationResult"
    by = {r["name"]: r for r in doc["results"]}
    assert {r["namespace"] for r in doc["results"]} == {app_ns}
    assert {n: r["verdict"] for n, r in by.items()} == {
        "app": "intercepted",
        "hostnet": "bypass",
        "infra": "exempt",
        "lonely": "intercepted",
    }
    assert by["app"]["tokenRequest"] == {
        "status": 200, "servedBy": "nmi", "identity": f"{app_ns}/app-identity", "error": None,
        "waitSeconds": 0,
    }  # fmt: skip
    assert by["infra"]["exceptions"] == ["infra-exception"]
    assert by["lonely"]["tokenRequest"]["status"] == 404
    assert by["lonely"]["tokenRequest"]["waitSeconds"] == 80
    assert [f["code"] for f in by["lonely"]["findings"]] == ["NoIdentity"]
    assert "HostNetworkBypass" in [f["code"] for f in by["hostnet"]["findings"]]
    summary = {k: doc["summary"][k] for k in ("pods", "intercepted", "exempt", "bypass", "inactive")}
    assert summary == {"pods": 4, "intercepted": 2, "exempt": 1, "bypass": 1, "inactive": 0}
    assert doc["summary"]["workloads"] == 0 and doc["summary"]["gate"]["failed"] is False


def test_evaluate_cluster_table_and_yaml_match_json(cluster: Cluster, app_ns: str, config_file: str) -> None:
    base = ("evaluate", "--cluster", "-n", app_ns, "--config", config_file)
    as_json = json.loads(nmisim(cluster, *base, "-o", "json").stdout)
    as_yaml = nmisim(cluster, *base, "-o", "yaml")
    assert as_yaml.returncode == 0 and yaml.safe_load(as_yaml.stdout) == as_json
    table = nmisim(cluster, *base)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "NAMESPACE", "NAME", "REPLICAS", "VERDICT", "EXCEPTION", "IDENTITY", "TOKEN", "WAIT",
    ]  # fmt: skip
    assert "0 workloads, 4 pods: 2 intercepted, 1 exempt, 1 bypass, 0 inactive" in table.stdout


def test_evaluate_cluster_plus_files(cluster: Cluster, app_ns: str, config_file: str, tmp_path: Path) -> None:
    """-f objects add to the live ones: an unapplied manifest is evaluated with the live binding."""
    manifest = _pod("planned", {"aadpodidbinding": selector_of(app_ns)})
    manifest["metadata"]["namespace"] = app_ns
    path = tmp_path / "planned.yaml"
    path.write_text(yaml.safe_dump(manifest))
    proc = nmisim(
        cluster, "evaluate", "--cluster", "-n", app_ns, "-f", str(path), "--config", config_file, "-o", "json"
    )
    assert proc.returncode == 0, proc.stderr
    by = {r["name"]: r for r in json.loads(proc.stdout)["results"]}
    assert by["planned"]["verdict"] == "intercepted"
    assert by["planned"]["tokenRequest"]["identity"] == f"{app_ns}/app-identity"
    assert len(by) == 5


def test_request_cluster(cluster: Cluster, app_ns: str, config_file: str) -> None:
    proc = nmisim(
        cluster, "request", "--cluster", "--config", config_file, "--pod", f"{app_ns}/app",
        "--query", f"client_id={CLIENT_ID}", "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["route"], doc["status"], doc["identity"]) == ("token", 200, f"{app_ns}/app-identity")
    missing = nmisim(cluster, "request", "--cluster", "--pod", f"{app_ns}/nope")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"nmisim: error: --pod {app_ns}/nope: no such pod in the cluster or the input"
    )


# ---------------------------------------------------------------------------------------- explain


def test_explain_text(cluster: Cluster, app_ns: str, config_file: str) -> None:
    proc = nmisim(cluster, "explain", "pod/app", "-n", app_ns, "--config", config_file)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert lines[0] == f"{app_ns}/app: INTERCEPTED — NMI serves tokens for {app_ns}/app-identity"
    assert "  HTTP status  200" in out
    assert f"  identity     {app_ns}/app-identity" in out
    assert f"NMI finds Pod {app_ns}/app by IP" in out  # the real lookup by IP, among the node's pods
    assert f"AzureIdentityBinding {app_ns}/app-binding (selector '{selector_of(app_ns)}')" in out
    assert "Findings (0)" in out
    assert lines[-1] == (
        f"  nmisim request --cluster --config {config_file} --pod {app_ns}/app --query client_id={CLIENT_ID}"
    )
    assert "\033[" not in out  # not a terminal: no colour


def test_explain_denied_and_exempt(cluster: Cluster, app_ns: str, config_file: str) -> None:
    lonely = nmisim(cluster, "explain", "lonely", "-n", app_ns, "--config", config_file)
    assert lonely.returncode == 0, lonely.stderr
    assert lonely.stdout.splitlines()[0] == (
        f"{app_ns}/lonely: INTERCEPTED — NMI denies token requests (404 after 80 s): no identity"
    )
    assert "80 s (NMI keeps the caller waiting 80 s first)" in lonely.stdout
    assert "- NoIdentity: " in lonely.stdout
    infra = nmisim(cluster, "explain", "pods/infra", "-n", app_ns, "--config", config_file)
    assert infra.stdout.startswith(f"{app_ns}/infra: EXEMPT by infra-exception — NMI forwards")
    assert (
        f"AzurePodIdentityException {app_ns}/infra-exception (matched podLabels: role=infra)" in infra.stdout
    )


def test_explain_takes_nmis_flags_as_request_does(cluster: Cluster, app_ns: str, config_file: str) -> None:
    """NMI's flags change explain's answer as they change request's: a pod without an identity gets 503
    with Retry-After after 2 retries 1 s apart under --set-retry-after-header, and the request explain
    suggests, run as printed, answers the same."""
    flags = (
        "--retry-attempts-for-created=2",
        "--find-identity-retry-interval=1",
        "--set-retry-after-header=true",
    )
    base = ("explain", "lonely", "-n", app_ns, "--config", config_file)
    plain = json.loads(nmisim(cluster, *base, "-o", "json").stdout)
    proc = nmisim(cluster, *base, *flags, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert plain["request"]["status"] == 404
    assert doc["request"]["status"] == 503
    text = nmisim(cluster, *base, *flags).stdout
    assert f"(configuration: --config {config_file} with {' '.join(flags)})" in text
    suggested = shlex.split(text.splitlines()[-1])
    assert suggested[:2] == ["nmisim", "request"] and set(flags) <= set(suggested)
    answer = nmisim(cluster, *suggested[1:], "-o", "json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["status"] == 503


def test_explain_json_and_yaml(cluster: Cluster, app_ns: str, config_file: str) -> None:
    proc = nmisim(cluster, "explain", "pod/app", "-n", app_ns, "--config", config_file, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["pod", "result", "request", "decisions"]
    assert doc["pod"] == f"{app_ns}/app"
    assert any(d["rule"] == "binding" for d in doc["decisions"]), doc["decisions"]
    assert doc["result"]["verdict"] == "intercepted"
    assert doc["request"]["status"] == 200 and doc["request"]["route"] == "token"
    assert doc["request"]["explanation"][0].startswith(f"request from Pod {app_ns}/app")
    evaluated = json.loads(
        nmisim(cluster, "evaluate", "--cluster", "-n", app_ns, "--config", config_file, "-o", "json").stdout
    )
    app = next(r for r in evaluated["results"] if r["name"] == "app")
    # evaluate's report adds where a result comes from and each finding's severity and gate state
    report_only = ("workload", "source")
    app = {k: v for k, v in app.items() if k not in report_only}
    app["findings"] = [{"code": f["code"], "message": f["message"]} for f in app["findings"]]
    assert doc["result"] == app
    as_yaml = nmisim(cluster, "explain", "pod/app", "-n", app_ns, "--config", config_file, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == doc


def test_explain_namespace_from_kubeconfig_context(
    cluster: Cluster, app_ns: str, config_file: str, tmp_path: Path
) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(cluster.kubeconfig.read_text())
    cluster.kubectl("config", "set-context", "--current", f"--namespace={app_ns}", "--kubeconfig", str(kc))
    proc = nmisim(cluster, "explain", "app", "--config", config_file, env={"KUBECONFIG": str(kc)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{app_ns}/app: INTERCEPTED")
    proc = nmisim(cluster, "explain", "app", "--kubeconfig", str(kc), "--config", config_file, "-o", "json")
    assert json.loads(proc.stdout)["pod"] == f"{app_ns}/app"


def test_kubectl_plugin(cluster: Cluster, app_ns: str, config_file: str) -> None:
    kubectl = str(BIN / "kubectl")
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    plugins = nmisim(cluster, "plugin", "list", exe=kubectl, env=env)
    assert "kubectl-nmisim" in plugins.stdout, plugins.stdout + plugins.stderr
    proc = nmisim(
        cluster, "nmisim", "explain", "pod/app", "-n", app_ns, "--config", config_file, exe=kubectl, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{app_ns}/app: INTERCEPTED — NMI serves tokens for {app_ns}/app-identity")
    assert proc.stdout.splitlines()[-1].startswith(
        f"  kubectl nmisim request --cluster --config {config_file} --pod {app_ns}/app"
    )
    missing = nmisim(cluster, "nmisim", "explain", "pod/nope", "-n", app_ns, exe=kubectl, env=env)
    assert missing.returncode == 2


def test_explain_pod_not_found_exit_2(cluster: Cluster, namespace: str) -> None:
    proc = nmisim(cluster, "explain", "pod/does-not-exist", "-n", namespace)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nmisim: error: pod {namespace}/does-not-exist not found")


def test_unreachable_cluster_exit_1(cluster: Cluster, tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    for args in (
        ("evaluate", "--cluster"),
        ("explain", "pod/x", "-n", "y"),
        ("request", "--cluster", "--pod", "a/b"),
    ):
        start = time.monotonic()
        proc = nmisim(cluster, *args, "--kubeconfig", str(kc))
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stdout == ""
        # one line; why in the socket's words (ECONNREFUSED is 111 on Linux, 61 on macOS), not urllib3's
        [line] = proc.stderr.splitlines()
        prefix = "nmisim: error: cannot reach the cluster at https://127.0.0.1:1: "
        assert line.startswith(prefix), line
        reason = line.removeprefix(prefix)
        assert "refused" in reason.lower() and "Max retries" not in reason and "object at 0x" not in reason
        assert time.monotonic() - start < 30


def test_bad_credentials_exit_1(cluster: Cluster, tmp_path: Path) -> None:
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "x", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "not-a-valid-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    proc = nmisim(cluster, "evaluate", "--cluster", "--kubeconfig", str(kc))
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1
    assert "401 Unauthorized" in proc.stderr


# ------------------------------------------------------------------------------------------- demo


def _expected() -> list[dict[str, Any]]:
    cm = yaml.safe_load((DEMO / "expected.yaml").read_text())
    workloads: list[dict[str, Any]] = yaml.safe_load(cm["data"]["expected"])["workloads"]
    return workloads


DEMO_NAMESPACES = ("gatekeeper-system", "shop", "payments", "identity-platform")
DEFAULT_EXCEPTIONS = (("default", "mic-exception"), ("kube-system", "aks-addon-exception"))


def _exists(cluster: Cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, "-o", "name", check=False).returncode == 0


@pytest.fixture
def demo(cluster: Cluster, crds: None) -> Iterator[None]:
    """The demo applied; afterwards its objects are deleted (never kube-system or default themselves), the
    default exceptions only if this test created them, and nothing if the demo was already there."""
    if not cluster.local:
        pytest.skip("needs kwok's fake nodes: the demo's images do not exist, a real kubelet never runs them")
    already = _exists(cluster, "namespace", "shop") and _exists(cluster, "deployment", "web", "-n", "shop")
    had_exceptions = {
        key: _exists(cluster, "azurepodidentityexception", key[1], "-n", key[0]) for key in DEFAULT_EXCEPTIONS
    }
    if not already:
        eventually(
            lambda: not any(_exists(cluster, "namespace", ns) for ns in DEMO_NAMESPACES),
            timeout=120,
            what="demo namespaces from an earlier run to finish terminating",
        )
    cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "exceptions.yaml"))
    cluster.kubectl("apply", "-f", str(DEMO))
    try:
        yield
    finally:
        if not already:
            cluster.kubectl("delete", "-f", str(DEMO), "--wait=false", "--ignore-not-found", check=False)
        for (ns, name), had in had_exceptions.items():
            if not had:
                cluster.kubectl("delete", "azurepodidentityexception", name, "-n", ns, check=False)


def _demo_pods(cluster: Cluster) -> dict[tuple[str, str], list[dict[str, Any]]]:
    items = cluster.get_json("pods", "-A", "-l", "app.kubernetes.io/part-of=nmisim-demo")["items"]
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in items:
        if p["metadata"].get("deletionTimestamp"):
            continue
        key = (p["metadata"]["namespace"], p["metadata"]["labels"].get("app.kubernetes.io/name", ""))
        out.setdefault(key, []).append(p)
    return out


def test_demo_matches_expected(cluster: Cluster, demo: None, config_file: str) -> None:
    expected = _expected()
    assert {w["verdict"] for w in expected} == {"intercepted", "exempt", "bypass", "inactive"}
    desired = int(
        eventually(
            lambda: cluster.get_json("daemonset", "node-proxy", "-n", "kube-system")["status"].get(
                "desiredNumberScheduled"
            ),
            timeout=60,
            what="node-proxy DaemonSet scheduling",
        )
    )

    def settled() -> dict[tuple[str, str], list[dict[str, Any]]]:
        pods = _demo_pods(cluster)
        for w in expected:
            n = desired if w["pods"] == "nodes" else int(w["pods"])
            have = pods.get((w["namespace"], w["name"]), [])
            phase = "Succeeded" if w["kind"] == "Job" else "Running"
            done = [p for p in have if p["status"].get("phase") == phase and p["status"].get("podIP")]
            if len(have) != n or len(done) != n:
                return {}
        return pods

    pods = eventually(settled, timeout=120, interval=1, what="every demo workload's pods settled")
    proc = nmisim(cluster, "evaluate", "--cluster", "--config", config_file, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    results = {(r["namespace"], r["name"]): r for r in json.loads(proc.stdout)["results"]}
    checked = 0
    for w in expected:
        for p in pods[(w["namespace"], w["name"])]:
            r = results[(p["metadata"]["namespace"], p["metadata"]["name"])]
            where = f"{w['kind']} {w['namespace']}/{w['name']} pod {r['name']}"
            tok = r["tokenRequest"]
            got = {
                "verdict": r["verdict"],
                "tokenStatus": tok["status"],
                "servedBy": tok["servedBy"],
                "identity": tok["identity"],
                "waitSeconds": tok["waitSeconds"],
                "exceptions": r["exceptions"],
                "micShortcut": r["micShortcut"],
                "findings": sorted({f["code"] for f in r["findings"]}),
            }
            want = {k: w[k] for k in got}
            want["findings"] = sorted(want["findings"])
            assert got == want, where
            if "identities" in w:
                assert r["identities"] == w["identities"], where
            checked += 1
    assert checked == sum(desired if w["pods"] == "nodes" else int(w["pods"]) for w in expected)
