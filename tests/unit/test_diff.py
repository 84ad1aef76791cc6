"""``nmisim diff BASE HEAD``: only the pods whose verdict, identity, token outcome or findings differ; exit 3
when something differs, or with ``--fail-on`` when HEAD introduces such a finding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import CID1, binding, exc, ident, pod, rid

from nmisim.cli.main import EXIT_GATE, main
from nmisim.engine.diff import (
    CHANGE_ADDED,
    CHANGE_CHANGED,
    CHANGE_REMOVED,
    GateError,
    diff_results,
    gate_failures,
    parse_gate,
)
from nmisim.engine.findings import SEVERITY_ERROR, SEVERITY_INFO, SEVERITY_WARNING
from nmisim.engine.models import Model
from nmisim.engine.world import load

API = "aadpodidentity.k8s.io/v1"


def _objects(selector: str = "web", exception: bool = False) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": API,
            "kind": "AzureIdentity",
            "metadata": {"name": "web-id", "namespace": "shop"},
            "spec": {"type": 0, "clientID": CID1, "resourceID": rid("web-id")},
        },
        {
            "apiVersion": API,
            "kind": "AzureIdentityBinding",
            "metadata": {"name": "web-binding", "namespace": "shop"},
            "spec": {"azureIdentity": "web-id", "selector": selector},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"aadpodidbinding": "web"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.2"},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "batch", "namespace": "shop", "labels": {"app": "batch"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.3"},
        },
    ]
    if exception:
        docs.append(
            {
                "apiVersion": API,
                "kind": "AzurePodIdentityException",
                "metadata": {"name": "batch-exc", "namespace": "shop"},
                "spec": {"podLabels": {"app": "batch"}},
            }
        )
    return docs


def _write(path: Path, docs: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return str(path)


def _diff(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_identical_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", _objects())
    b = _write(tmp_path / "b.yaml", _objects())
    code, out, err = _diff(capsys, a, b)
    assert (code, out, err) == (0, "No differences.\n", "")
    code, out, _ = _diff(capsys, a, b, "-o", "json")
    doc = json.loads(out)
    assert code == 0 and doc["differences"] == [] and doc["kind"] == "EvaluationDiff"
    assert doc["gate"] is None


def test_adding_an_exception_flips_a_pod_to_exempt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = _write(tmp_path / "base.yaml", _objects())
    b = _write(tmp_path / "head.yaml", _objects(exception=True))
    code, out, _ = _diff(capsys, a, b, "-o", "json")
    assert code == EXIT_GATE
    doc = json.loads(out)
    assert [(d["namespace"], d["name"], d["change"]) for d in doc["differences"]] == [
        ("shop", "batch", CHANGE_CHANGED)
    ]
    d = doc["differences"][0]
    assert (d["base"]["verdict"], d["head"]["verdict"]) == ("intercepted", "exempt")
    assert d["head"]["exception"] == "batch-exc"
    assert "verdict" in d["aspects"]
    code, table, _ = _diff(capsys, a, b)
    lines = table.splitlines()
    assert lines[0].split() == ["NAMESPACE/NAME", "CHANGE", "BASE", "HEAD"]
    assert lines[1].startswith("shop/batch") and "intercepted" in lines[1] and "exempt" in lines[1]
    assert "1 pod differs: 1 changed, 0 added, 0 removed" in table
    assert "shop/web" not in table  # unchanged pods are not shown


def test_a_selector_typo_flips_200_to_404(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = tmp_path / "base"
    head = tmp_path / "head"
    _write(base / "all.yaml", _objects())
    _write(head / "all.yml", _objects(selector="wbe"))
    (head / "notes.txt").write_text(
        "not an input\n", encoding="utf-8"
    )  # a directory's other files are skipped
    code, out, _ = _diff(capsys, str(base), str(head), "-o", "yaml")
    assert code == EXIT_GATE
    doc = yaml.safe_load(out)
    (d,) = doc["differences"]
    assert (d["namespace"], d["name"]) == ("shop", "web")
    assert d["base"]["tokenRequest"]["status"] == 200 and d["head"]["tokenRequest"]["status"] == 404
    assert (
        d["base"]["tokenRequest"]["identity"] == "shop/web-id"
        and d["head"]["tokenRequest"]["identity"] is None
    )
    assert d["head"]["tokenRequest"]["waitSeconds"] == 80  # NMI's 16 attempts 5 s apart
    assert {"identity", "status", "error", "wait", "findings"} <= set(d["aspects"])
    # the selector 'wbe' is one typo from the pod's 'web': the engine says so too
    assert [f["code"] for f in d["newFindings"]] == ["NoIdentity", "SelectorNearMiss"]
    assert {f["severity"] for f in d["newFindings"]} == {"error"}


def test_fail_on(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = _write(tmp_path / "base.yaml", _objects())
    typo = _write(tmp_path / "typo.yaml", _objects(selector="wbe"))
    exempt = _write(tmp_path / "exempt.yaml", _objects(exception=True))
    # the typo introduces an error-level NoIdentity and SelectorNearMiss: the gate fails
    code, out, _ = _diff(capsys, a, typo, "--fail-on", "error")
    assert code == EXIT_GATE and "--fail-on error: failed: 2 new finding(s)" in out
    # the exception changes a verdict but introduces no error (BASE's NoIdentity for the unlabelled pod is
    # info, and the exempt pod's IMDS error is a warning): differences, gate passed, exit 0
    code, out, _ = _diff(capsys, a, exempt, "--fail-on", "error")
    assert code == 0 and "shop/batch" in out and "--fail-on error: passed" in out
    code, out, _ = _diff(capsys, a, exempt, "--fail-on", "warning", "-o", "json")
    doc = json.loads(out)
    assert code == EXIT_GATE and doc["gate"]["failed"] is True
    assert doc["gate"]["failOn"] == ["error", "warning"]
    (d,) = doc["differences"]
    assert [f["code"] for f in d["newFindings"]] == ["ExemptPodIMDSError"]
    # by code
    code, _, _ = _diff(capsys, a, typo, "--fail-on", "AmbiguousIdentity,CrossNamespaceBinding")
    assert code == 0
    code, _, _ = _diff(capsys, a, typo, "--fail-on", "AmbiguousIdentity,NoIdentity")
    assert code == EXIT_GATE
    # going back (HEAD fixes the typo) introduces nothing
    code, _, _ = _diff(capsys, typo, a, "--fail-on", "info")
    assert code == 0


def test_two_configs_over_the_same_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inputs = _write(tmp_path / "in.yaml", _objects())
    cfg = {"apiVersion": "nmisim.dev/v1alpha1", "kind": "SimulationConfig", "metadata": {"name": "default"}}
    a = _write(tmp_path / "a.yaml", [{**cfg, "spec": {}}])
    b = _write(tmp_path / "b.yaml", [{**cfg, "spec": {"nmi": {"setRetryAfterHeader": True}}}])
    code, out, _ = _diff(capsys, "-f", inputs, "--config", a, "--config", b, "-o", "json")
    assert code == EXIT_GATE
    (d,) = json.loads(out)["differences"]
    # the unlabelled intercepted pod's 404 becomes 503 + Retry-After with the flag
    assert d["name"] == "batch"
    assert (d["base"]["tokenRequest"]["status"], d["head"]["tokenRequest"]["status"]) == (404, 503)
    assert d["aspects"] == ["status"]
    assert _diff(capsys, "-f", inputs, "--config", a, "--config", a)[0] == 0


def test_added_and_removed_pods(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", _objects())
    b = _write(tmp_path / "b.yaml", [o for o in _objects() if o["metadata"]["name"] != "batch"])
    code, out, _ = _diff(capsys, a, b)
    assert code == EXIT_GATE and "shop/batch" in out and "removed" in out and "(absent)" in out
    code, out, _ = _diff(capsys, b, a, "-o", "json")
    (d,) = json.loads(out)["differences"]
    assert d["change"] == CHANGE_ADDED and d["base"] is None and d["head"]["name"] == "batch"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["only-one.yaml"], "diff takes BASE and HEAD"),
        (["-f", "x.yaml"], "pass --config twice"),
        ([], "no input"),
        (["-", "x.yaml"], "not stdin"),
        (["a.yaml", "b.yaml", "--fail-on", "nope"], "--fail-on nope"),
        (["missing.yaml", "b.yaml"], "missing.yaml: no such file or directory"),
    ],
)
def test_bad_input(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.yaml", "b.yaml", "x.yaml"):
        _write(tmp_path / name, _objects())
    code, out, err = _diff(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("nmisim: error: ") and message in err


# ------------------------------------------------------------------ engine level
def test_diff_results_and_gate() -> None:
    objs: list[Model] = [
        ident("web-id", "shop", CID1),
        binding("b", "shop", "web-id", "web"),
        pod("web", "shop", {"aadpodidbinding": "web"}, ip="10.0.0.2"),
        pod("gone", "shop", {"app": "x"}, ip="10.0.0.3"),
    ]
    base = load(objs).evaluate_all()
    head_objs: list[Model] = [
        *objs[:3],
        pod("new", "shop", {"aadpodidbinding": "typo"}, ip="10.0.0.4"),
        exc("e", "shop", {"a": "b"}),
    ]
    head = load(head_objs).evaluate_all()
    diffs = diff_results(base, head)
    assert [(d.name, d.change) for d in diffs] == [("gone", CHANGE_REMOVED), ("new", CHANGE_ADDED)]
    assert diff_results(base, base) == []
    # a pod only in HEAD introduces all its findings; a removed pod none
    assert [f.code for f in diffs[1].new_findings] == ["NoIdentity"] and diffs[0].new_findings == ()
    assert len(gate_failures(diffs, parse_gate(["error"]))) == 1
    assert gate_failures(diffs, parse_gate(["CrossNamespaceBinding"])) == []


def test_parse_gate() -> None:
    assert parse_gate(["warning"]).severities == {SEVERITY_ERROR, SEVERITY_WARNING}
    assert parse_gate(["info"]).severities == {SEVERITY_ERROR, SEVERITY_WARNING, SEVERITY_INFO}
    g = parse_gate(["error,NoIdentity", "AmbiguousIdentity"])
    assert g.severities == {SEVERITY_ERROR} and g.codes == {"NoIdentity", "AmbiguousIdentity"}
    assert g.to_json() == ["error", "AmbiguousIdentity", "NoIdentity"]
    with pytest.raises(GateError, match="noidentity"):
        parse_gate(["noidentity"])  # codes are exact
    with pytest.raises(GateError, match="empty"):
        parse_gate([","])
