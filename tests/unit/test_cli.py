"""The offline CLI: ``evaluate`` and ``request`` (product.md §4): every output form, every bad-input class."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nmisim import __version__
from nmisim.cli.main import main

FIX = Path(__file__).resolve().parent.parent / "fixtures"
ALL = [
    "-f",
    str(FIX / "default-exceptions.yaml"),
    "-f",
    str(FIX / "identities.yaml"),
    "-f",
    str(FIX / "pods.yaml"),
]
NMISIM = Path(sys.executable).parent / "nmisim"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_evaluate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", *ALL, "-o", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("nmisim.dev/v1alpha1", "EvaluationResult")
    summary = {
        k: doc["summary"][k] for k in ("workloads", "pods", "intercepted", "exempt", "bypass", "inactive")
    }
    assert summary == {"workloads": 0, "pods": 7, "intercepted": 3, "exempt": 2, "bypass": 1, "inactive": 1}
    assert doc["summary"]["findings"]["NoIdentity"] == 1
    assert doc["summary"]["gate"]["failed"] is False
    names = [(r["namespace"], r["name"]) for r in doc["results"]]
    assert names == sorted(names)
    by = {r["name"]: r for r in doc["results"]}
    assert by["mic-7d9c6b5f4-abcde"]["micShortcut"] is True
    assert by["mic-7d9c6b5f4-abcde"]["exception"] == "mic-exception"
    assert by["omsagent-rs-5f8d7-xyz12"]["exceptions"] == ["aks-addon-exception"]
    assert by["worker-5b7c9d-r4t5y"]["tokenRequest"]["waitSeconds"] == 80
    assert by["reports-1"]["findings"][0]["code"] == "CrossNamespaceBinding"


def test_evaluate_yaml_equals_json(capsys: pytest.CaptureFixture[str]) -> None:
    _, out_json, _ = run(["evaluate", *ALL, "-o", "json"], capsys)
    code, out_yaml, _ = run(["evaluate", *ALL, "-o", "yaml"], capsys)
    assert code == 0
    assert yaml.safe_load(out_yaml) == json.loads(out_json)


def test_evaluate_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["evaluate", *ALL], capsys)
    assert code == 0
    lines = out.splitlines()
    header = lines[0].split()
    assert header == ["NAMESPACE", "NAME", "REPLICAS", "VERDICT", "EXCEPTION", "IDENTITY", "TOKEN", "WAIT"]
    col = lines[0].index("VERDICT")
    assert all(
        line[col:].split()[0] in {"intercepted", "exempt", "bypass", "inactive"} for line in lines[1:8]
    )
    assert "0 workloads, 7 pods: 3 intercepted, 2 exempt, 1 bypass, 1 inactive" in out
    assert "NoIdentity" in out and "HostNetworkBypass" in out


def test_evaluate_with_config_and_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((FIX / "pods.yaml").read_text()))
    code, out, err = run(
        ["evaluate", "-f", "-", "--config", str(FIX / "simulation-config.yaml"), "-o", "json"], capsys
    )
    assert code == 0, err
    by = {r["name"]: r for r in json.loads(out)["results"]}
    assert by["node-exporter-abcde"]["tokenRequest"]["identity"] == "system-assigned"  # node-2 override


@pytest.mark.parametrize(
    "content", ["", "---\n---\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"]
)
def test_empty_and_irrelevant_input_exit_2_unless_allowed(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate that reads nothing must not pass vacuously (kubeconform's and Polaris's users expect that)."""
    f = tmp_path / "in.yaml"
    f.write_text(content)
    code, out, err = run(["evaluate", "-f", str(f), "-o", "json"], capsys)
    assert (code, out) == (2, "")
    assert (
        err == "nmisim: error: no pods or workloads in the input (pass --allow-empty if that is expected)\n"
    )
    code, out, _ = run(["evaluate", "-f", str(f), "-o", "json", "--allow-empty"], capsys)
    assert code == 0
    assert json.loads(out)["summary"]["pods"] == 0


def test_json_list_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "pods.json"
    f.write_text(json.dumps({"kind": "PodList", "apiVersion": "v1", "items": [{"metadata": {"name": "a"}}]}))
    code, out, _ = run(["evaluate", "-f", str(f), "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["results"][0]["name"] == "a"


BAD = [
    ("malformed.yaml", "kind: Pod\nmetadata: {name: [\n", ":3: document 1: invalid YAML/JSON"),
    ("malformed.json", '{"kind": "Pod", ', ":2: document 1: invalid YAML/JSON"),
    ("labels-list.yaml", "kind: Pod\nmetadata: {name: p, labels: [a, b]}\n",
     ":1: document 1: metadata.labels: expected a map of strings"),
    ("podlabels.yaml", "---\nkind: AzurePodIdentityException\nmetadata: {name: e}\nspec: {podLabels: {app: 1}}\n",  # noqa: E501
     ":2: document 1: spec.podLabels.app: expected a string"),
    ("noname.yaml", "kind: Pod\nmetadata: {namespace: x}\n", ":1: document 1: metadata.name: required"),
    ("list-item.yaml", "kind: List\nitems:\n- {kind: Pod, metadata: {name: a}}\n- {kind: Pod, metadata: {}}\n",  # noqa: E501
     ":4: document 1: items[1].metadata.name: required"),
    ("scalar.yaml", "just a string\n", ":1: document 1: expected a Kubernetes object"),
    ("deployment.yaml", "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec: {hostNetwork: 1}\n",  # noqa: E501
     ":1: document 1: spec.template.spec.hostNetwork: expected a boolean"),
    ("replicas.yaml", "kind: StatefulSet\nmetadata: {name: s}\nspec: {replicas: -1, template: {}}\n",
     ":1: document 1: spec.template: required"),
]  # fmt: skip


@pytest.mark.parametrize(("fname", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line(
    tmp_path: Path, fname: str, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / fname
    f.write_text(content)
    code, out, err = run(["evaluate", "-f", str(f)], capsys)
    assert code == 2
    # the good objects are still evaluated (only list-item.yaml has one: pod a)
    assert ("default     a" in out) if fname == "list-item.yaml" else out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"nmisim: error: {f}:")
    assert message in err


def test_missing_file_directory_and_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["evaluate", "-f", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "no such file" in err and err.count("\n") == 1
    code, _, err = run(["evaluate", "-f", str(tmp_path)], capsys)
    assert code == 2 and "no .yaml, .yml or .json files (subdirectories are read with -R)" in err
    if os.geteuid() != 0:  # root reads anything
        f = tmp_path / "secret.yaml"
        f.write_text("kind: Pod\n")
        f.chmod(0)
        code, _, err = run(["evaluate", "-f", str(f)], capsys)
        assert code == 2 and "permission denied" in err


def test_refused_config_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["evaluate", *ALL, "--config", str(FIX / "refused-config.yaml")], capsys)
    assert code == 2
    assert "spec.nmi.forceNamespaced: managed mode not intialized in force namespaced mode" in err
    assert err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["evaluate"], capsys)[0] == 2  # -f required
    assert run(["evaluate", *ALL, "-o", "xml"], capsys)[0] == 2
    assert run([], capsys)[0] == 2
    code, _, err = run(["request", *ALL, "--ip", "10.0.0.1"], capsys)
    assert code == 2 and "--ip needs --node" in err


# --- request ---------------------------------------------------------------------------------------


def test_request_pod_not_in_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["request", *ALL, "--pod", "shop/nope"], capsys)
    assert code == 2 and out == ""
    assert err == "nmisim: error: --pod shop/nope: no such pod in the input\n"


def test_request_json_default_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["request", *ALL, "--pod", "shop/web-6c9f8d7b5-q2w3e", "-o", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == [
        "route",
        "status",
        "headers",
        "body",
        "servedBy",
        "identity",
        "waitSeconds",
        "explanation",
    ]
    assert (doc["route"], doc["status"], doc["servedBy"], doc["identity"]) == (
        "token",
        200,
        "nmi",
        "shop/web-identity",
    )
    assert "NOT-A-REAL-CREDENTIAL" in doc["body"]


def test_request_query_header_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["request", *ALL, "--pod", "shop/web-6c9f8d7b5-q2w3e", "-o", "json"]
    doc = json.loads(run([*base, "--header", "metadata: True"], capsys)[1])
    assert doc["status"] == 400  # header override replaced the default, value is case-sensitive
    doc = json.loads(run([*base, "--no-default-headers"], capsys)[1])
    assert doc["status"] == 400
    doc = json.loads(run([*base, "--no-default-query", "--query", "api-version=2018-02-01"], capsys)[1])
    assert (doc["status"], doc["body"]) == (400, "parameter resource cannot be empty\n")
    doc = json.loads(run([*base, "--query", "resource=https://vault.azure.net"], capsys)[1])
    assert json.loads(doc["body"])["resource"] == "https://vault.azure.net"
    doc = json.loads(run([*base, "--path", "/metadata/instance"], capsys)[1])
    assert doc["route"] == "proxy"


def test_request_ip_node_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["request", *ALL, "--ip", "10.244.9.9", "--node", "node-1", "-o", "yaml"], capsys)
    assert code == 0
    doc = yaml.safe_load(out)
    assert (doc["status"], doc["body"], doc["waitSeconds"]) == (500, "pod list is empty\n", 1.2)


def test_request_table_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["request", *ALL, "--pod", "default/mic-7d9c6b5f4-abcde"], capsys)
    assert code == 0
    assert out.startswith("HTTP 403  (route token, served by imds)")
    assert "Why:\n  1. request from Pod default/mic-7d9c6b5f4-abcde" in out
    assert "AzurePodIdentityException default/mic-exception" in out


def test_bad_query_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["request", *ALL, "--pod", "shop/web-6c9f8d7b5-q2w3e", "--query", "novalue"], capsys)
    assert code == 2 and "expected K=V" in err


# --- real processes ----------------------------------------------------------------------------------


def test_subprocess_evaluate_and_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(NMISIM), "evaluate", *ALL, "-o", "json"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["pods"] == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: AzureIdentity\nmetadata: {name: i}\nspec: {type: [1]}\n")
    proc = subprocess.run(
        [str(NMISIM), "evaluate", "-f", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr == f"nmisim: error: {bad}:1: document 1: spec.type: expected an integer, got list\n"


def test_subprocess_stdin_pipe() -> None:
    proc = subprocess.run(
        [str(NMISIM), "request", "-f", "-", "--pod", "monitoring/node-exporter-abcde", "-o", "json"],
        input=(FIX / "pods.yaml").read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["route"] == "direct"


DEAD_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {token: x}}]
"""


@pytest.mark.parametrize(
    "argv",
    [["evaluate", "--cluster"], ["request", "--cluster", "--pod", "ns/p"], ["explain", "pod/p", "-n", "ns"]],
    ids=["evaluate", "request", "explain"],
)
def test_an_unreachable_cluster_is_exit_1_in_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(DEAD_KUBECONFIG)
    code, out, err = run([*argv, "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 1 and out == ""
    assert (
        err.startswith("nmisim: error: cannot reach the cluster at https://127.0.0.1:1")
        and err.count("\n") == 1
    )
