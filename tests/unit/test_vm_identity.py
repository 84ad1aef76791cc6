"""``--vm-identity`` and ``SimulationConfig.with_vm_identities`` (issue 19 item 4.5): give the VMs a
user-assigned identity in one flag, e.g. AKS's kubelet identity, so that exempt pods' default requests get
what IMDS answers on a real AKS node (nmi-semantics §7: a single user-assigned identity is IMDS's default).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import CID1, CID2, config, exc, pod, world

from nmisim.cli.main import main
from nmisim.engine.config import AKS_KUBELET_IDENTITY, UserAssignedIdentity, vm_identity
from nmisim.engine.models import placeholder_in, valid_resource_id

FIX = Path(__file__).resolve().parent.parent / "fixtures"
ALL = [
    "-f",
    str(FIX / "default-exceptions.yaml"),
    "-f",
    str(FIX / "identities.yaml"),
    "-f",
    str(FIX / "pods.yaml"),
]


def test_aks_preset_is_fake_but_passes_every_check() -> None:
    ua = vm_identity("aks")
    assert ua == AKS_KUBELET_IDENTITY == vm_identity(" AKS ")
    assert valid_resource_id(ua.resource_id)  # MIC's ValidateResourceID (§1)
    assert placeholder_in(ua.resource_id) is None and placeholder_in(ua.client_id) is None
    assert "/resourcegroups/MC_" in ua.resource_id and ua.resource_id.endswith("-agentpool")


def test_vm_identity_values() -> None:
    assert vm_identity(CID1) == UserAssignedIdentity(client_id=CID1)
    r = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
    assert vm_identity(r) == UserAssignedIdentity(resource_id=r)
    with pytest.raises(ValueError, match="--vm-identity"):
        vm_identity("  ")


def test_with_vm_identities_is_pure_and_reaches_every_vm() -> None:
    cfg = config(
        imds={
            "userAssigned": [{"clientID": CID2}],
            "nodes": {
                "replaced": {"userAssigned": [{"clientID": "33333333-aaaa-bbbb-cccc-000000000003"}]},
                "sa-only": {"systemAssigned": True},
            },
        }
    )
    new = cfg.with_vm_identities(
        [UserAssignedIdentity(client_id=CID1), UserAssignedIdentity(client_id=CID2.upper())]
    )
    assert [u.client_id for u in cfg.imds.user_assigned] == [CID2]  # unchanged
    assert [u.client_id for u in new.imds.vm_for("any").user_assigned] == [CID2, CID1]  # no duplicate
    assert [u.client_id for u in new.imds.vm_for("replaced").user_assigned] == [
        "33333333-aaaa-bbbb-cccc-000000000003",
        CID1,
        CID2.upper(),
    ]
    sa = new.imds.vm_for("sa-only")
    assert sa.system_assigned and [u.client_id for u in sa.user_assigned] == [CID2, CID1]
    assert cfg.with_vm_identities([]) is cfg


def test_exempt_pod_gets_200_with_the_kubelet_identity() -> None:
    # §2 step 6 / §7: NMI asks IMDS without client_id; one user-assigned identity on the VM is the default
    p = pod("p", "ns", {"app": "x"})
    objs = (exc("e", "ns", {"app": "x"}), p)
    assert world(*objs).evaluate(p).token_request.status == 403  # no identity on the VM: Identity not found
    cfg = config().with_vm_identities([AKS_KUBELET_IDENTITY])
    r = world(*objs, cfg=cfg).evaluate(p)
    assert r.token_request.status == 200 and r.token_request.identity == AKS_KUBELET_IDENTITY.client_id
    assert "ExemptPodIMDSError" not in {f.code for f in r.findings}


def test_cli_vm_identity_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *ALL, "-o", "json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["evaluate", *ALL, "--vm-identity", "aks", "-o", "json"]) == 0
    after = json.loads(capsys.readouterr().out)
    exempt = [r for r in after["results"] if r["verdict"] == "exempt"]
    assert exempt and all(r["tokenRequest"]["status"] == 200 for r in exempt)
    assert all(r["tokenRequest"]["status"] == 403 for r in before["results"] if r["verdict"] == "exempt")


def test_cli_vm_identity_empty_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *ALL, "--vm-identity", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmisim: error: --vm-identity") and "Traceback" not in err


def test_cli_managed_mode_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "apiVersion: nmisim.dev/v1alpha1\nkind: SimulationConfig\n"
        "spec: {nmi: {operationMode: managed, forceNamespaced: true}}\n"
    )
    assert main(["evaluate", *ALL, "--config", str(cfg), "--vm-identity", CID1]) == 0
    assert "nmisim: warning: --vm-identity describes the VMs" in capsys.readouterr().err


def test_cli_evaluate_document_has_object_sections(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    extra = tmp_path / "x.yaml"
    extra.write_text(
        "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzurePodIdentityException\n"
        "metadata: {name: empty, namespace: shop}\nspec: {podLabels: {}}\n"
    )
    assert main(["evaluate", *ALL, "-f", str(extra), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"exceptions", "bindings", "identities"} <= set(doc)
    (e,) = [x for x in doc["exceptions"] if x["name"] == "empty"]
    assert e["namespace"] == "shop" and [f["code"] for f in e["findings"]] == ["EmptyPodLabelsException"]
    assert {"code", "severity", "message", "source"} <= set(e["findings"][0])
    assert main(["evaluate", *ALL, "-f", str(extra)]) == 0
    out = capsys.readouterr().out
    # the object's finding is listed with the others, named by its kind
    assert "AzurePodIdentityException/shop/empty   EmptyPodLabelsException" in out
