"""``nmisim migrate`` and ``request --after`` end to end on files: the plan, ``--emit`` applied with kubectl's
own kustomize, then ``--verify`` on the result classes every pod as the plan predicted (docs/migration.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
KUBECTL = Path(sys.executable).parent / "kubectl"
ISSUER = "https://eastus.oic.prod-aks.azure.com/11111111-1111-1111-1111-111111111111/22222222-2222-2222-2222-222222222222/"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def config(tmp: Path, credentials: list[dict[str, Any]] | None = None) -> Path:
    doc = {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": {"workloadIdentity": {"issuer": ISSUER, "federatedCredentials": credentials or []}},
    }
    path = tmp / f"config-{len(credentials or [])}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def by_workload(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each workload's worst class per phase (pod names change with the template, workloads do not)."""
    order = [
        "blocked-at-admission",
        "loses-access",
        "different-identity",
        "gains-access",
        "same-identity",
        "unaffected",
    ]
    out: dict[str, tuple[str, str]] = {}
    for p in report["pods"]:
        cur = out.get(p["workload"], ("unaffected", "unaffected"))
        out[p["workload"]] = tuple(
            min(cur[i], p["class"][ph], key=order.index) for i, ph in enumerate(("parallel", "removed"))
        )
    return out


def test_plan_then_emit_then_verify_gives_the_predicted_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    code, out, err = run(["migrate", "-f", str(DEMO), "--config", str(cfg), "-o", "json"], capsys)
    assert code == 0, err
    planned = json.loads(out)
    migrating = {w["workload"] for w in planned["workloads"] if w["identities"]}
    assert migrating == {
        "Deployment/shop/web",
        "Deployment/shop/worker",
        "Deployment/payments/api",
        "Job/payments/db-migrate",
    }
    emit = tmp_path / "emit"
    code, _, err = run(["migrate", "-f", str(DEMO), "--config", str(cfg), "--emit", str(emit)], capsys)
    assert code == 0, err
    assert "wrote" in err
    for name in (
        "serviceaccounts.yaml",
        "kustomization.yaml",
        "apply.sh",
        "federated-credentials.sh",
        "cleanup.sh",
    ):
        assert (emit / name).is_file(), name
    fics = (emit / "federated-credentials.sh").read_text()
    assert fics.count("az identity federated-credential create") == 5  # 4 identities, payments' twice (2 SAs)
    assert f"--issuer {ISSUER}" in fics
    # the migrated manifests, as kubectl's kustomize renders the emitted kustomization
    rendered = subprocess.run(
        [str(KUBECTL), "kustomize", str(emit)], capture_output=True, text=True, check=True
    ).stdout
    migrated = tmp_path / "migrated.yaml"
    migrated.write_text(rendered)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    web = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "web")
    assert web["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert web["spec"]["template"]["spec"]["serviceAccountName"] == "web"
    sa = next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "web")
    assert (
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
        == "00000000-0000-0000-0000-00000000a001"
    )
    # the simulated Entra now records the credentials the plan created
    record = yaml.safe_load((emit / "simulationconfig-patch.yaml").read_text())
    creds = record["spec"]["workloadIdentity"]["federatedCredentials"]
    assert {c["subject"] for c in creds} == {
        "system:serviceaccount:shop:web",
        "system:serviceaccount:shop:worker",
        "system:serviceaccount:payments:api",
        "system:serviceaccount:payments:db-migrate",
    }
    code, out, err = run(
        ["migrate", "-f", str(migrated), "--config", str(config(tmp_path, creds)), "--verify", "-o", "json"],
        capsys,
    )
    assert code == 0, err
    verified = json.loads(out)
    assert by_workload(verified) == by_workload(planned)
    assert by_workload(verified)["Deployment/shop/web"] == ("same-identity", "same-identity")
    assert (
        by_workload(verified)["Deployment/shop/worker"][1] == "different-identity"
    )  # msi_res_id of the other


def test_verify_before_anything_is_applied_loses_nothing_while_nmi_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing applied yet: in the parallel phase NMI still answers (unaffected); once NMI is removed the
    pods that had identities lose them."""
    code, out, err = run(
        ["migrate", "-f", str(DEMO), "--config", str(config(tmp_path)), "--verify", "-o", "json"], capsys
    )
    assert code == 0, err
    classes = by_workload(json.loads(out))
    assert classes["Deployment/shop/web"] == ("unaffected", "loses-access")
    assert classes["DaemonSet/kube-system/node-proxy"] == ("unaffected", "unaffected")


def test_gate_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["migrate", "-f", str(DEMO), "--fail-on-class", "different-identity"], capsys)
    assert code == 3
    assert "GATE shop/worker-" in out
    code, _, _ = run(["migrate", "-f", str(DEMO), "--fail-on", "MultipleIdentities", "-o", "json"], capsys)
    assert code == 3
    code, _, _ = run(["migrate", "-f", str(DEMO), "--fail-on", "error"], capsys)
    assert code == 0  # the demo's hazards are warnings and info
    for argv, text in (
        (["--fail-on-class", "lost"], "--fail-on-class lost: not a class"),
        (["--fail-on", "SDKUnknwn"], "did you mean SDKUnknown?"),
    ):
        code, out, err = run(["migrate", "-f", str(DEMO), *argv], capsys)
        assert code == 2 and text in err and err.count("\n") == 1 and "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(["migrate", "-f", str(DEMO), "--emit", str(blocker / "x")], capsys)
    assert code == 2 and err.startswith("nmisim: error: --emit") and err.count("\n") == 1


def test_request_after_answers_in_todays_shape(capsys: pytest.CaptureFixture[str]) -> None:
    res_id = (
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/demo/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/shop-worker-storage"
    )
    code, out, err = run(["migrate", "-f", str(DEMO), "--pods", "-o", "json"], capsys)
    pod = next(p["name"] for p in json.loads(out)["pods"] if p["name"].startswith("worker-"))
    argv = [
        "request",
        "-f",
        str(DEMO),
        "--pod",
        f"shop/{pod}",
        "--query",
        f"msi_res_id={res_id}",
        "--after",
        "-o",
        "json",
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["today"]) <= set(doc["after"])  # the same shape, plus the phase
    assert doc["today"]["identity"] == "shop/worker-storage-identity"
    # the SDK cannot name a resource ID: the ServiceAccount's default identity (keyvault) answers
    assert doc["after"]["identity"] == "00000000-0000-0000-0000-00000000a003"
    code, out, _ = run([*argv[:-2], "--phase", "parallel", "-o", "json"], capsys)
    assert json.loads(out)["after"]["servedBy"] == "entra"
    for bad, text in ((["--verify"], "--verify goes with --after"),):
        code, _, err = run(["request", "-f", str(DEMO), "--pod", f"shop/{pod}", *bad], capsys)
        assert code == 2 and text in err


def test_workloads_without_pods_get_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Deployment scaled to 0 still gets a plan from its template (azwi podidentity detect misses it), and
    the ServiceAccount carries the expiration explicitly (the pod template's when it has one)."""
    idle = tmp_path / "idle.yaml"
    idle.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "batch", "namespace": "shop"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "batch"}},
                    "template": {
                        "metadata": {
                            "labels": {"app": "batch", "aadpodidbinding": "shop-web"},
                            "annotations": {
                                "azure.workload.identity/service-account-token-expiration": "7200"
                            },
                        },
                        "spec": {"containers": [{"name": "c", "image": "x"}]},
                    },
                },
            }
        )
    )
    code, out, err = run(["migrate", "-f", str(DEMO), "-f", str(idle), "-o", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    pods = [p for p in doc["pods"] if p["workload"] == "Deployment/shop/batch"]
    assert len(pods) == 1 and pods[0]["idle"] and pods[0]["class"]["removed"] == "same-identity"
    plan = next(w for w in doc["workloads"] if w["workload"] == "Deployment/shop/batch")
    assert plan["serviceAccount"]["annotations"] == {
        "azure.workload.identity/client-id": "00000000-0000-0000-0000-00000000a001",
        "azure.workload.identity/service-account-token-expiration": "7200",
    }
    code, out, _ = run(["migrate", "-f", str(DEMO), "-f", str(idle)], capsys)
    assert "Deployment/shop/batch" in out and "0 (idle)" in out


@pytest.mark.parametrize("fixture", ["demo", "demo-placeholders", "issue-1074", "aks-addon", "kustomize"])
def test_every_pod_gets_a_class_and_every_bound_workload_a_plan(
    fixture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifests shaped like aad-pod-identity's own examples (deploy/demo, issue #1074, an AKS add-on)."""
    path = ROOT / "tests" / "fixtures" / "manifests" / fixture
    code, out, err = run(["migrate", "-R", "-f", str(path), "--allow-empty", "-o", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    classes = {
        "blocked-at-admission",
        "loses-access",
        "different-identity",
        "gains-access",
        "same-identity",
        "unaffected",
    }
    for p in doc["pods"]:
        assert set(p["class"].values()) <= classes
    for w in doc["workloads"]:
        if w["identities"]:
            assert w["steps"][0].startswith(
                ("create ServiceAccount", "annotate ServiceAccount", "keep ServiceAccount")
            )
            assert any("federated-credential create" in s for s in w["steps"])


def test_an_aks_addon_nmi_denies_gets_the_node_identity_back_as_info(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = ROOT / "tests" / "fixtures" / "manifests" / "aks-addon"
    code, out, err = run(["migrate", "-R", "-f", str(path), "--vm-identity", "aks", "-o", "json"], capsys)
    assert code == 0, err
    (pod,) = json.loads(out)["pods"]
    assert pod["class"] == {"parallel": "unaffected", "removed": "gains-access"}
    assert [(h["code"], h["severity"]) for h in pod["hazards"]] == [("NodeIdentityExposed", "info")]


def test_a_pod_workload_identity_cannot_read_is_one_error_and_the_rest_is_assessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "x", "namespace": "shop", "labels": {"aadpodidbinding": "shop-web"}},
                "spec": {"containers": [{"name": "c", "env": "not-a-list"}]},
            }
        )
    )
    code, out, err = run(["migrate", "-f", str(DEMO), "-f", str(bad), "-o", "json"], capsys)
    assert code == 2
    assert err == "nmisim: error: pod shop/x: spec.containers[0].env: expected a list\n"
    assert len(json.loads(out)["pods"]) == 15  # the demo's, all assessed
