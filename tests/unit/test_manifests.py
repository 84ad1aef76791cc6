"""Manifests as teams keep them: workloads as pods-to-be, input as kubectl takes it, the gate and its reports.

Fixtures in tests/fixtures/manifests/ are this project's own, shaped like aad-pod-identity's deploy/demo
(an AzureIdentity, its binding and a Deployment whose template carries the label) and like the manifest of
upstream issue #1074 (the label on the Deployment's metadata instead). The reports are read back by real
consumers from PyPI: junitparser for JUnit XML, sarif-pydantic for SARIF 2.1.0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml
from sarif_pydantic import Sarif

from nmisim.cli.main import main
from nmisim.engine.findings import ALL_CODES, DESCRIPTION, SEVERITY
from nmisim.engine.workloads import SAFE_ALPHABET, expand

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "tests" / "fixtures" / "manifests"
DEMO = MANIFESTS / "demo"
NMISIM = Path(sys.executable).parent / "nmisim"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def evaluate_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out, err = run(["evaluate", *argv, "-o", "json"], capsys)
    assert out, err
    return code, json.loads(out)


# ------------------------------------------------------------------ workloads as pods
def test_demo_deployment_evaluates_to_its_pods_with_nmi_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = evaluate_json(["-f", str(DEMO)], capsys)
    assert code == 0
    (wl,) = doc["workloads"]
    assert (wl["kind"], wl["namespace"], wl["name"], wl["replicas"]) == ("Deployment", "default", "demo", "3")
    assert len(wl["pods"]) == 3 and wl["verdict"] == "intercepted"
    for r in doc["results"]:
        assert r["workload"] == "Deployment/default/demo"
        assert r["tokenRequest"]["status"] == 200
        assert r["tokenRequest"]["identity"] == "default/demo-identity"
        assert r["source"] == {"file": str(DEMO / "deployment.yaml"), "document": 1, "line": 1}
    # the ReplicaSet's and the pods' names have the controllers' shapes
    rs = {r["name"].rsplit("-", 1)[0] for r in doc["results"]}
    assert len(rs) == 1
    (rs_name,) = rs
    assert re.fullmatch(rf"demo-[{SAFE_ALPHABET}]{{1,10}}", rs_name)
    assert all(re.fullmatch(rf"{rs_name}-[{SAFE_ALPHABET}]{{5}}", r["name"]) for r in doc["results"])


def test_label_on_the_deployment_not_its_template_is_an_error_and_a_404(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Upstream issue #1074: NMI answers 404 after its wait; the finding says where the label must go."""
    inputs = [
        "-f",
        str(DEMO / "identity.yaml"),
        "-f",
        str(DEMO / "binding.yaml"),
        "-f",
        str(MANIFESTS / "issue-1074"),
    ]
    code, doc = evaluate_json([*inputs, "--fail-on", "error"], capsys)
    assert code == 3
    (r,) = doc["results"]
    assert (r["tokenRequest"]["status"], r["tokenRequest"]["waitSeconds"]) == (404, 80)
    (wl,) = doc["workloads"]
    (f,) = wl["findings"]
    assert (f["code"], f["severity"], f["gated"]) == ("BindingLabelOnWorkload", "error", True)
    assert "spec.template.metadata.labels" in f["message"]
    assert f["source"]["file"].endswith("issue-1074/deployment.yaml")


def _workload(kind: str, spec: dict[str, Any], name: str = "w", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


TEMPLATE = {"metadata": {"labels": {"app": "x", "aadpodidbinding": "sel"}}, "spec": {"containers": []}}


def test_each_controller_names_and_labels_its_pods_as_kubernetes_does() -> None:
    sts = expand(_workload("StatefulSet", {"replicas": 2, "ordinals": {"start": 5}, "template": TEMPLATE}))
    assert [p["metadata"]["name"] for p in sts.pods] == ["w-5", "w-6"]
    labels = sts.pods[1]["metadata"]["labels"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "w-6"
    assert labels["apps.kubernetes.io/pod-index"] == "6" and labels["aadpodidbinding"] == "sel"
    assert sts.pods[0]["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"

    ds = expand(_workload("DaemonSet", {"template": TEMPLATE}))
    assert ds.replicas is None and ds.replicas_text == "per node" and len(ds.pods) == 1

    job = expand(_workload("Job", {"parallelism": 4, "completions": 3, "completionMode": "Indexed",
                                   "template": TEMPLATE}))  # fmt: skip
    names = [p["metadata"]["name"] for p in job.pods]
    assert len(names) == 3  # min(parallelism, completions)
    assert all(re.fullmatch(rf"w-{i}-[{SAFE_ALPHABET}]{{5}}", n) for i, n in enumerate(names))
    jl = job.pods[0]["metadata"]["labels"]
    assert jl["job-name"] == jl["batch.kubernetes.io/job-name"] == "w"

    cron = expand({"kind": "CronJob", "metadata": {"name": "nightly"},
                   "spec": {"jobTemplate": {"spec": {"template": TEMPLATE}}}})  # fmt: skip
    (pod,) = cron.pods
    job_name = pod["metadata"]["labels"]["job-name"]
    assert re.fullmatch(r"nightly-\d{8}", job_name)
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["apiVersion"], owner["kind"], owner["name"], owner["controller"]) == (
        "batch/v1",
        "Job",
        job_name,
        True,
    )

    zero = expand(_workload("Deployment", {"replicas": 0, "template": TEMPLATE}))
    assert zero.pods == () and zero.replicas_text == "0"
    long = expand(_workload("ReplicaSet", {"replicas": 1, "template": TEMPLATE}, name="r" * 70))
    assert len(long.pods[0]["metadata"]["name"]) == 63  # generateName cut to 58 + 5


def test_mic_shortcut_decides_for_a_deployment_as_for_live_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NMI's isMIC: the pod's ReplicaSet starts with 'mic' and the pod is in --MICNamespace (default)."""
    tpl = {"template": {"metadata": {"labels": {"app": "m"}}}}
    docs = [_workload("Deployment", tpl, name="mic", namespace=ns) for ns in ("default", "other")]
    rc = {**_workload("ReplicationController", {"template": TEMPLATE}, name="mic-rc"), "apiVersion": "v1"}
    f = tmp_path / "mic.yaml"
    f.write_text(yaml.safe_dump_all([*docs, rc]))
    code, doc = evaluate_json(["-f", str(f)], capsys)
    assert code == 0
    by = {(r["namespace"], r["workload"]): r for r in doc["results"]}
    assert by[("default", "Deployment/default/mic")]["micShortcut"] is True
    assert by[("default", "Deployment/default/mic")]["verdict"] == "exempt"
    assert by[("other", "Deployment/other/mic")]["micShortcut"] is False
    # a ReplicationController is no ReplicaSet: NMI's getReplicasetName finds no owner
    assert by[("default", "ReplicationController/default/mic-rc")]["micShortcut"] is False


def test_pods_flag_expands_workload_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code, grouped, _ = run(["evaluate", "-f", str(DEMO)], capsys)
    assert code == 0
    assert "deployment/demo   3" in grouped and "1 workloads, 3 pods" in grouped
    code, expanded, _ = run(["evaluate", "-f", str(DEMO), "--pods"], capsys)
    assert code == 0
    assert len([ln for ln in expanded.splitlines() if "deployment/demo/demo-" in ln]) == 3


# ------------------------------------------------------------------ input as kubectl takes it
def test_directory_reads_subdirectories_only_with_R(capsys: pytest.CaptureFixture[str]) -> None:
    _, flat = evaluate_json(["-f", str(DEMO)], capsys)
    _, deep = evaluate_json(["-f", str(DEMO), "-R"], capsys)
    assert [w["kind"] for w in flat["workloads"]] == ["Deployment"]
    assert sorted(w["kind"] for w in deep["workloads"]) == ["Deployment", "Job"]
    job = next(w for w in deep["workloads"] if w["kind"] == "Job")
    assert job["replicas"] == "2" and job["verdict"] == "intercepted"


def test_every_bad_object_is_reported_and_the_rest_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-good.yaml").write_text((DEMO / "deployment.yaml").read_text())
    (tmp_path / "b-bad.yaml").write_text(
        "kind: Pod\nmetadata: {name: ok}\n---\n# a comment\nkind: Pod\nmetadata: {name: p, labels: [x]}\n"
    )
    (tmp_path / "c-broken.yaml").write_text("kind: Pod\nmetadata: {name: [\n")
    code, out, err = run(["evaluate", "-f", str(tmp_path), "-o", "json"], capsys)
    assert code == 2
    assert {r["name"] for r in json.loads(out)["results"]} >= {"ok"}
    assert len(json.loads(out)["results"]) == 4  # 3 replicas + pod ok
    lines = err.splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    bad = tmp_path / "b-bad.yaml"
    assert (
        lines[0]
        == f"nmisim: error: {bad}:5: document 2: metadata.labels: expected a map of strings, got list"
    )
    assert lines[1].startswith(
        f"nmisim: error: {tmp_path / 'c-broken.yaml'}:3: document 1: invalid YAML/JSON"
    )


def test_strict_refuses_fields_the_crds_do_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "binding.yaml"
    f.write_text("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: b}\n"
                 "spec:\n  azureIdentity: demo-identity\n  selectr: demo\n")  # fmt: skip
    args = ["evaluate", "-f", str(DEMO / "deployment.yaml"), "-f", str(f), "-o", "json"]
    code, out, _ = run(args, capsys)
    assert code == 0  # NMI accepts it and the binding matches nothing
    assert json.loads(out)["results"][0]["tokenRequest"]["status"] == 404
    code, _, err = run([*args, "--strict"], capsys)
    assert code == 2
    assert err == (
        f"nmisim: error: {f}:1: document 1: spec.selectr: unknown field (--strict: not in the "
        "AzureIdentityBinding CRD's schema)\n"
    )


def test_kustomize_directory(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = evaluate_json(["-k", str(MANIFESTS / "kustomize")], capsys)
    assert code == 0
    (wl,) = doc["workloads"]
    assert (wl["namespace"], wl["name"]) == ("shop", "shop-web")
    assert {r["tokenRequest"]["identity"] for r in doc["results"]} == {"shop/shop-web"}
    assert doc["results"][0]["source"]["file"] == f"kustomize {MANIFESTS / 'kustomize'}"


def test_kustomize_without_kubectl_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, err = run(["evaluate", "-k", str(MANIFESTS / "kustomize")], capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"nmisim: error: -k {MANIFESTS / 'kustomize'}: kubectl not found (make install provides it; or put "
        "kubectl on PATH)\n"
    )


def test_helm_template_piped_into_evaluate(helm: str) -> None:
    rendered = subprocess.run(
        [helm, "template", "shop", str(MANIFESTS / "chart"), "--namespace", "shop", "--set", "replicas=3"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    proc = subprocess.run(
        [str(NMISIM), "evaluate", "-f", "-", "-o", "json"], input=rendered, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (wl,) = doc["workloads"]
    assert (wl["kind"], wl["namespace"], wl["replicas"]) == ("StatefulSet", "shop", "3")
    assert wl["pods"] == ["shop-db-0", "shop-db-1", "shop-db-2"]
    assert doc["results"][0]["source"]["file"] == "<stdin>"
    # no identity bound: an intercepted pod that asked for one (aadpodidbinding=shop), an error
    assert {f["code"]: f["severity"] for f in doc["results"][0]["findings"]}["NoIdentity"] == "error"


# ------------------------------------------------------------------ the gate
def _aks_script(tmp_path: Path, *, with_exception: bool) -> subprocess.CompletedProcess[str]:
    """A CI-like script: nmisim evaluate -f DIR -R --fail-on error -o sarif."""
    repo = tmp_path / ("fixed" if with_exception else "broken")
    (repo / "deploy" / "addons").mkdir(parents=True)
    (repo / "deploy" / "addons" / "omsagent.yaml").write_text(
        (MANIFESTS / "aks-addon" / "omsagent.yaml").read_text()
    )
    if with_exception:
        (repo / "deploy" / "exception.yaml").write_text(
            "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzurePodIdentityException\n"
            "metadata: {name: aks-addon-exception, namespace: kube-system}\n"
            "spec:\n  podLabels: {kubernetes.azure.com/managedby: aks}\n"
        )  # fmt: skip
    script = repo / "ci.sh"
    script.write_text('set -eu\n"$NMISIM" evaluate -f deploy -R --fail-on error -o sarif > report.sarif\n')
    env = {**os.environ, "NMISIM": str(NMISIM)}
    return subprocess.run(
        ["bash", str(script)], cwd=repo, env=env, capture_output=True, text=True, check=False
    )


def test_ci_gate_fails_on_unexempted_aks_addon_and_passes_with_the_exception(tmp_path: Path) -> None:
    broken = _aks_script(tmp_path, with_exception=False)
    assert broken.returncode == 3, broken.stderr
    sarif = Sarif.model_validate_json((tmp_path / "broken" / "report.sarif").read_text())
    results = sarif.runs[0].results or []
    assert [r.rule_id for r in results if r.level is not None and r.level.value == "error"] == [
        "AKSAddonNotExempt"
    ]
    fixed = _aks_script(tmp_path, with_exception=True)
    assert fixed.returncode == 0, fixed.stderr
    sarif = Sarif.model_validate_json((tmp_path / "fixed" / "report.sarif").read_text())
    assert "AKSAddonNotExempt" not in {r.rule_id for r in sarif.runs[0].results or []}


def test_fail_on_levels_codes_verdicts_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    addon = ["-f", str(MANIFESTS / "aks-addon")]
    assert run(["evaluate", *addon, "--fail-on", "error"], capsys)[0] == 3
    assert run(["evaluate", *addon, "--fail-on", "warning"], capsys)[0] == 3  # warning and worse
    assert run(["evaluate", *addon, "--fail-on", "HostNetworkBypass"], capsys)[0] == 0  # none found
    assert run(["evaluate", *addon, "--fail-on", "NoIdentity"], capsys)[0] == 3  # named: gated, though info
    assert run(["evaluate", *addon, "--fail-on", "HostNetworkBypass,AKSAddonNotExempt"], capsys)[0] == 3
    assert run(["evaluate", *addon, "--fail-on-verdict", "exempt,bypass"], capsys)[0] == 0
    assert run(["evaluate", *addon, "--fail-on-verdict", "intercepted"], capsys)[0] == 3
    code, out, err = run(["evaluate", *addon, "--fail-on", "AKSAddon"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "nmisim: error: --fail-on AKSAddon: not a severity (error, warning, info) or a finding code (did you "
        "mean AKSAddonNotExempt?)\n"
    )
    code, _, err = run(["evaluate", *addon, "--fail-on-verdict", "denied"], capsys)
    assert code == 2 and err.count("\n") == 1


def test_ignore_annotation_and_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    addon = yaml.safe_load((MANIFESTS / "aks-addon" / "omsagent.yaml").read_text())
    addon["metadata"]["annotations"] = {"nmisim.dev/ignore": "AKSAddonNotExempt, NoIdentity"}
    f = tmp_path / "addon.yaml"
    f.write_text(yaml.safe_dump(addon))
    code, doc = evaluate_json(["-f", str(f), "--fail-on", "info"], capsys)
    assert code == 0
    assert {x["suppressed"] for x in doc["results"][0]["findings"]} == {"annotation"}

    baseline = tmp_path / "baseline.yaml"
    plain = ["-f", str(MANIFESTS / "aks-addon"), "--fail-on", "error"]
    code, _, _ = run(["evaluate", *plain, "--write-baseline", str(baseline)], capsys)
    assert code == 3  # writing the baseline does not pass the run that writes it
    written = yaml.safe_load(baseline.read_text())
    assert {"subject": "Deployment/kube-system/omsagent-rs", "code": "AKSAddonNotExempt"} in written[
        "findings"
    ]
    code, doc = evaluate_json([*plain, "--baseline", str(baseline)], capsys)
    assert code == 0
    assert doc["results"][0]["findings"][0]["suppressed"] == "baseline"
    # a new problem is not in the baseline: the gate fails again
    code, _ = evaluate_json(
        [*plain, "--baseline", str(baseline), "-f", str(MANIFESTS / "issue-1074")], capsys
    )
    assert code == 3
    bad = tmp_path / "bad-baseline.yaml"
    bad.write_text("kind: Something\n")
    code, _, err = run(["evaluate", *plain, "--baseline", str(bad)], capsys)
    assert (
        code == 2
        and err == f"nmisim: error: --baseline {bad}: not a Baseline (written by --write-baseline)\n"
    )


def test_summary_counts_findings_per_code(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = evaluate_json(["-f", str(MANIFESTS / "aks-addon"), "-f", str(DEMO), "-R"], capsys)
    findings = [f["code"] for r in doc["results"] for f in r["findings"]]
    findings += [f["code"] for w in doc["workloads"] for f in w["findings"]]
    counted = doc["summary"]["findings"]
    # once per workload and code, however many replicas share it
    assert counted == {c: len({(w["name"], c) for w in doc["workloads"] for r in doc["results"]
                               if r["workload"] == f"{w['kind']}/{w['namespace']}/{w['name']}"
                               for f in r["findings"] if f["code"] == c}) for c in set(findings)}  # fmt: skip


# ------------------------------------------------------------------ reports read back by real consumers
def test_junit_read_back_by_junitparser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "evaluate",
        "-f",
        str(DEMO),
        "-f",
        str(MANIFESTS / "issue-1074"),
        "-f",
        str(MANIFESTS / "aks-addon"),
    ]
    code, out, _ = run([*args, "--fail-on", "error", "-o", "junit"], capsys)
    assert code == 3
    report = tmp_path / "report.xml"
    report.write_text(out)
    xml = JUnitXml.fromfile(str(report))
    cases = {c.name: c for suite in xml for c in suite}
    assert set(cases) == {"Deployment/demo", "Deployment/api", "Deployment/omsagent-rs"}
    assert cases["Deployment/demo"].is_passed
    failed = {n for n, c in cases.items() if any(isinstance(r, Failure) for r in c.result)}
    assert failed == {"Deployment/api", "Deployment/omsagent-rs"}
    (fail,) = cases["Deployment/omsagent-rs"].result
    assert fail.message == "AKSAddonNotExempt" and "error AKSAddonNotExempt" in (fail.text or "")
    suite = next(iter(xml))
    assert (suite.tests, suite.failures) == (3, 2)


def test_sarif_read_back_by_sarif_pydantic(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["evaluate", "-f", str(MANIFESTS / "issue-1074"), "-f", str(DEMO), "-o", "sarif"], capsys
    )
    assert code == 0
    log = Sarif.model_validate_json(out)
    assert log.version == "2.1.0"
    run0 = log.runs[0]
    rules = run0.tool.driver.rules or []
    by_rule = {r.id: r for r in rules}
    for result in run0.results or []:
        assert result.rule_index is not None and rules[result.rule_index].id == result.rule_id
    label = next(r for r in run0.results or [] if r.rule_id == "BindingLabelOnWorkload")
    loc = (label.locations or [])[0].physical_location
    assert loc is not None and loc.artifact_location is not None and loc.region is not None
    assert loc.artifact_location.uri.endswith("issue-1074/deployment.yaml") and loc.region.start_line == 2
    rule = by_rule["BindingLabelOnWorkload"]
    assert rule.help is not None and rule.help.text == DESCRIPTION["BindingLabelOnWorkload"]


def test_github_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a,b:c.yaml"  # ',' and ':' must be escaped in a workflow command's properties
    f.write_text((MANIFESTS / "aks-addon" / "omsagent.yaml").read_text())
    _, doc = evaluate_json(["-f", str(f)], capsys)
    message = next(x["message"] for x in doc["results"][0]["findings"] if x["code"] == "AKSAddonNotExempt")
    code, out, _ = run(["evaluate", "-f", str(f), "-o", "github"], capsys)
    assert code == 0
    escaped = str(f).replace(",", "%2C").replace(":", "%3A")
    assert out.splitlines()[0] == (
        f"::error file={escaped},line=2,title=nmisim AKSAddonNotExempt::Deployment/kube-system/omsagent-rs: "
        f"{message}"
    )
    levels = {ln.split(" ", 1)[0] for ln in out.splitlines()}
    assert levels == {"::error", "::notice"}  # AKSAddonNotExempt; NoIdentity on an unlabelled pod is info


def test_every_code_has_a_severity_and_a_description() -> None:
    assert set(SEVERITY) == set(ALL_CODES) == set(DESCRIPTION)


# ------------------------------------------------------------------ the docs say what the code does
def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_docs_document_every_evaluate_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`nmisim evaluate --help` and docs/cli.md agree: every flag the parser has is in the docs' section."""
    code, help_text, _ = run(["evaluate", "--help"], capsys)
    assert code == 0
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[a-zA-Z])\b", help_text)) - {"-h", "--help"}
    assert {"--fail-on", "--fail-on-verdict", "--strict", "-R", "-k", "--baseline"} <= flags
    text = (ROOT / "docs" / "cli.md").read_text()
    # NMI's own flags are documented once, in the section evaluate, request and serve share
    docs = _section(text, "## `nmisim evaluate`") + _section(
        text, "## NMI's settings from manifests, values and flags"
    )
    missing = sorted(f for f in flags if f"`{f}" not in docs and f"{f} " not in docs)
    assert not missing, f"docs/cli.md's evaluate section does not document {missing}"
    for fmt in ("table", "json", "yaml", "junit", "sarif", "github"):
        assert f"`{fmt}`" in docs


def test_docs_severity_table_is_the_codes() -> None:
    docs = _section((ROOT / "docs" / "cli.md").read_text(), "### Severities")
    rows = dict(re.findall(r"^\| `(\w+)` \| (error|warning|info) \|", docs, re.MULTILINE))
    assert rows == SEVERITY


def test_who_can_names_the_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["who-can", "default/demo-identity", "-f", str(DEMO), "-R", "-o", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert sorted({r["workload"] for r in rows}) == ["Deployment/default/demo", "Job/default/report"]
    assert len(rows) == 5 and {r["how"] for r in rows} == {"binding"}


def test_demo_with_placeholders_left_in_is_stuck_created_and_gated_on_the_identity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """MIC cannot assign a resourceID with <SUBSCRIPTION_ID> in it: the AzureAssignedIdentity stays Created
    and NMI answers 404 after its wait (upstream test/e2e/invalid_identities_test.go expects exactly that)."""
    args = [
        "-f",
        str(MANIFESTS / "demo-placeholders"),
        "-f",
        str(DEMO / "binding.yaml"),
        "-f",
        str(DEMO / "deployment.yaml"),
    ]
    code, doc = evaluate_json([*args, "--fail-on", "PlaceholderIdentity"], capsys)
    assert code == 3
    assert {r["tokenRequest"]["status"] for r in doc["results"]} == {404}
    (ident,) = doc["identities"]
    assert (ident["namespace"], ident["name"]) == ("default", "demo-identity")
    assert ident["source"] == {
        "file": str(MANIFESTS / "demo-placeholders" / "identity.yaml"),
        "document": 1,
        "line": 2,
    }
    placeholder = next(f for f in ident["findings"] if f["code"] == "PlaceholderIdentity")
    assert (placeholder["severity"], placeholder["gated"]) == ("error", True)
    code, out, _ = run(["evaluate", *args, "-o", "sarif"], capsys)
    log = Sarif.model_validate_json(out)
    where = {
        (loc.artifact_location.uri, loc.region.start_line)
        for r in log.runs[0].results or []
        if r.rule_id == "PlaceholderIdentity"
        for loc in [(r.locations or [])[0].physical_location]
        if loc is not None and loc.artifact_location is not None and loc.region is not None
    }
    # on the identity, where the placeholder is written, and on the Deployment whose pods it fails
    assert where == {
        (str(MANIFESTS / "demo-placeholders" / "identity.yaml"), 2),
        (str(DEMO / "deployment.yaml"), 1),
    }
