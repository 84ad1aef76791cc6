"""Findings that tell the truth, once (issue 19 item 4): the causes NoIdentity names, the MIC shortcut's fix,
object-level findings (World.object_findings) and per-pod ones only where they are the pod's reason.

Spec references are to /work/shared/spec/nmi-semantics.md; upstream ones to Azure/aad-pod-identity at v1.8.17.
"""

from __future__ import annotations

from typing import Any

import pytest
from factories import CID1, CID2, binding, config, exc, ident, pod, rid, world

from nmisim.engine.findings import ALL_CODES, SEVERITY, Finding
from nmisim.engine.models import (
    AzureIdentity,
    AzureIdentityBinding,
    PodIdentityException,
    placeholder_in,
    valid_resource_id,
)
from nmisim.engine.objects import ObjectFindings, ObjectResult


def codes(r: Any) -> list[str]:
    return [f.code for f in r.findings]


def by_code(r: Any, code: str) -> list[Finding]:
    return [f for f in r.findings if f.code == code]


def obj(section: tuple[ObjectResult, ...], ns: str, name: str) -> ObjectResult | None:
    return next((r for r in section if (r.namespace, r.name) == (ns, name)), None)


def obj_codes(section: tuple[ObjectResult, ...], ns: str, name: str) -> list[str]:
    r = obj(section, ns, name)
    return [] if r is None else [f.code for f in r.findings]


def raw_identity(
    name: str, ns: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> AzureIdentity:
    md: dict[str, Any] = {"name": name, "namespace": ns, "annotations": annotations or {}}
    return AzureIdentity.from_k8s({"kind": "AzureIdentity", "metadata": md, "spec": spec})


def raw_binding(name: str, ns: str, spec: dict[str, Any]) -> AzureIdentityBinding:
    return AzureIdentityBinding.from_k8s(
        {"kind": "AzureIdentityBinding", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    )


# ------------------------------------------------------------------ codes
def test_new_codes_have_a_severity_and_are_unique() -> None:
    new = {
        "UnusedException",
        "EmptyPodLabelsException",
        "OrphanBinding",
        "UnboundIdentity",
        "PlaceholderIdentity",
        "BehaviorAnnotationCase",
        "SelectorNearMiss",
    }
    assert new <= set(ALL_CODES)
    assert len(ALL_CODES) == len(set(ALL_CODES))
    assert set(SEVERITY) == set(ALL_CODES)


# ------------------------------------------------------- 1. NoIdentity causes
def test_no_identity_names_the_missing_identity_of_an_existing_binding() -> None:
    # §1 binding: MIC looks spec.azureIdentity up in the binding's namespace and skips the binding if absent
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(binding("b", "ns", "ghost", "s"), p)
    r = w.evaluate(p)
    (no,) = by_code(r, "NoIdentity")
    assert "ns/b" in no.message and "'ghost'" in no.message and "does not exist" in no.message
    assert "create an AzureIdentityBinding" not in no.message
    assert "BindingIdentityMissing" in codes(r)  # the pod's reason: kept on the pod


def test_no_identity_names_the_invalid_resource_id() -> None:
    # §8.10: MIC drops a type-0 identity whose resourceID fails ValidateResourceID
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", resource_id="/not/an/arm/id"), binding("b", "ns", "id", "s"), p)
    (no,) = by_code(w.evaluate(p), "NoIdentity")
    assert "ns/id" in no.message and "resourceID" in no.message
    assert "create an AzureIdentityBinding" not in no.message


def test_no_identity_without_any_binding_still_says_create_one() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "nothing-like-it"})
    w = world(p)
    (no,) = by_code(w.evaluate(p), "NoIdentity")
    assert "create an AzureIdentityBinding with selector 'nothing-like-it'" in no.message


def test_capitalised_azure_identity_on_binding_is_the_reason() -> None:
    # §1: capitalised fields are ignored since v1.6.0, so spec.azureIdentity is empty
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    b = raw_binding("b", "ns", {"AzureIdentity": "id", "selector": "s"})
    w = world(ident("id", "ns"), b, p)
    r = w.evaluate(p)
    assert r.token_request.status == 404
    cap = by_code(r, "CapitalisedFields")
    assert cap and "spec.AzureIdentity -> spec.azureIdentity" in cap[0].message
    assert "BindingIdentityMissing" not in codes(r)  # "names AzureIdentity ''" would mislead
    (no,) = by_code(r, "NoIdentity")
    assert "spec.AzureIdentity" in no.message
    assert obj_codes(w.object_findings().bindings, "ns", "b") == ["CapitalisedFields"]


def test_capitalised_resource_and_client_id_on_identity() -> None:
    # models._IDENTITY_CAPITALISED: ResourceID and ClientID are ignored too
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    i = raw_identity("id", "ns", {"type": 0, "ResourceID": rid("id"), "ClientID": CID1})
    w = world(i, binding("b", "ns", "id", "s"), p)
    r = w.evaluate(p)
    assert r.token_request.status == 404
    cap = by_code(r, "CapitalisedFields")
    assert cap and "spec.ResourceID -> spec.resourceID" in cap[0].message
    assert "spec.ClientID -> spec.clientID" in cap[0].message
    assert "InvalidResourceID" not in codes(r)  # not "an empty resourceID": the field is misnamed
    assert obj_codes(w.object_findings().identities, "ns", "id") == ["CapitalisedFields"]


def test_mic_shortcut_fix_is_the_replicaset_or_mic_namespace() -> None:
    # §2 step 6: isMIC = namespace EqualFold --MICNamespace and ReplicaSet matches ^mic-* (any 'mic' prefix)
    p = pod("p", "default", {"aadpodidbinding": "s"}, rs="microservice-7d9c")
    w = world(p)
    r = w.evaluate(p)
    assert r.mic_shortcut and r.verdict == "exempt"
    (f,) = by_code(r, "ExemptPodHasBinding")
    assert "MIC shortcut" in f.message and "microservice-7d9c" in f.message
    assert "--MICNamespace" in f.message and "ReplicaSet" in f.message
    assert "exception" not in f.message


def test_exception_exemption_still_suggests_the_exception() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s", "app": "x"})
    w = world(exc("e", "ns", {"app": "x"}), p)
    (f,) = by_code(w.evaluate(p), "ExemptPodHasBinding")
    assert "AzurePodIdentityException ns/e" in f.message and "matching exception" in f.message


# --------------------------------------------------- 2. object-level findings
def test_unused_exception_once_and_other_namespace_hint() -> None:
    # §1: exceptions match only pods of their own namespace
    p = pod("p", "apps", {"app": "agent"})
    w = world(exc("e", "infra", {"app": "agent"}), p)
    objs = w.object_findings()
    (r,) = objs.exceptions
    (f,) = r.findings
    assert f.code == "UnusedException" and f.level == "warning"
    assert "apps/p" in f.message and "own namespace" in f.message


def test_exception_used_by_a_pod_is_not_reported() -> None:
    p = pod("p", "ns", {"app": "AGENT"})  # values compare EqualFold (§1)
    w = world(exc("e", "ns", {"app": "agent", "other": "x"}), p)
    assert w.evaluate(p).verdict == "exempt"
    assert w.object_findings().exceptions == ()


@pytest.mark.parametrize("kw", [{"host_network": True}, {"phase": "Succeeded"}])
def test_exception_matching_only_bypass_or_finished_pods_is_unused(kw: dict[str, Any]) -> None:
    # a hostNetwork pod never reaches NMI (§3) and a finished one is not looked up (§2 Finding the pod)
    p = pod("p", "ns", {"app": "x"}, **kw)
    w = world(exc("e", "ns", {"app": "x"}), p)
    assert obj_codes(w.object_findings().exceptions, "ns", "e") == ["UnusedException"]


def test_empty_pod_labels_matches_nothing() -> None:
    # §1: "An exception with empty podLabels matches nothing" (pkg/pod/pod.go labelInExceptionList)
    p = pod("p", "ns", {"app": "x"})
    w = world(exc("e", "ns", {}), p)
    assert w.evaluate(p).verdict == "intercepted"
    (r,) = w.object_findings().exceptions
    assert [f.code for f in r.findings] == ["EmptyPodLabelsException"]
    assert "namespace-wide" in r.findings[0].message


def test_capitalised_pod_labels_is_reported_as_such_not_as_empty() -> None:
    e = PodIdentityException.from_k8s(
        {"kind": "AzurePodIdentityException", "metadata": {"name": "e", "namespace": "ns"},
         "spec": {"PodLabels": {"app": "x"}}}
    )  # fmt: skip
    w = world(e, pod("p", "ns", {"app": "x"}))
    assert obj_codes(w.object_findings().exceptions, "ns", "e") == ["CapitalisedFields"]


def test_orphan_binding_and_unbound_identity() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "used"})
    w = world(
        ident("used-id", "ns"),
        ident("lonely", "ns", CID2),
        binding("b-used", "ns", "used-id", "used"),
        binding("b-orphan", "ns", "used-id", "nobody-has-this"),
        p,
    )
    objs = w.object_findings()
    assert [(r.namespace, r.name) for r in objs.bindings] == [("ns", "b-orphan")]
    assert obj_codes(objs.bindings, "ns", "b-orphan") == ["OrphanBinding"]
    assert [(r.namespace, r.name) for r in objs.identities] == [("ns", "lonely")]
    (f,) = objs.identities[0].findings
    assert f.code == "UnboundIdentity" and f.level == "info"


def test_orphan_binding_did_you_mean_names_the_pod() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "payments-apl"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "payments-api"), p)
    (r,) = w.object_findings().bindings
    (f,) = r.findings
    assert f.code == "OrphanBinding" and "did you mean 'payments-apl'" in f.message and "ns/p" in f.message


def test_empty_selector_is_orphan_in_standard_but_used_in_managed() -> None:
    # §1: MIC skips pods with an empty label; managed mode's GetPodIDsWithBinding matches "" (quirk)
    p = pod("p", "ns", {})
    objs = (ident("id", "ns"), binding("b", "ns", "id", ""), p)
    std = world(*objs).object_findings()
    assert obj_codes(std.bindings, "ns", "b") == ["OrphanBinding"]
    assert "never matches an empty selector" in std.bindings[0].findings[0].message
    managed = world(*objs, cfg=config({"operationMode": "managed", "forceNamespaced": True}))
    assert managed.object_findings().bindings == ()


def test_managed_mode_counts_only_pods_of_the_binding_namespace() -> None:
    p = pod("p", "other", {"aadpodidbinding": "s"})
    cfg = config({"operationMode": "managed", "forceNamespaced": True})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "s"), p, cfg=cfg)
    assert obj_codes(w.object_findings().bindings, "ns", "b") == ["OrphanBinding"]
    assert obj_codes(world(ident("id", "ns"), binding("b", "ns", "id", "s"), p).object_findings().bindings,
                     "ns", "b") == []  # fmt: skip


def test_binding_with_missing_identity_reported_once_not_per_working_pod() -> None:
    # two bindings on one selector: one good, one naming a missing identity; ten pods use the selector
    pods = [pod(f"p{i}", "ns", {"aadpodidbinding": "s"}, ip=f"10.0.0.{i + 1}") for i in range(10)]
    w = world(
        ident("id", "ns"), binding("a-good", "ns", "id", "s"), binding("b-bad", "ns", "ghost", "s"), *pods
    )
    for p in pods:
        r = w.evaluate(p)
        assert r.token_request.status == 200
        assert "BindingIdentityMissing" not in codes(r)  # not the pod's problem: it gets an identity
    objs = w.object_findings()
    assert obj_codes(objs.bindings, "ns", "b-bad") == ["BindingIdentityMissing"]
    assert sum(1 for _, r in objs for f in r.findings if f.code == "BindingIdentityMissing") == 1


def test_object_findings_value_and_json_shape() -> None:
    w = world(exc("e", "b-ns", {}), exc("e", "a-ns", {}), ident("id", "ns"))
    objs = w.object_findings()
    assert isinstance(objs, ObjectFindings)
    assert [(r.namespace, r.name) for r in objs.exceptions] == [("a-ns", "e"), ("b-ns", "e")]  # sorted
    doc = objs.to_json()
    assert list(doc) == ["exceptions", "bindings", "identities"]
    assert doc["identities"] == [
        {
            "namespace": "ns",
            "name": "id",
            "findings": [
                {
                    "code": "UnboundIdentity",
                    "message": "AzureIdentity ns/id is named by no AzureIdentityBinding in namespace ns, "
                    "so no pod can use it",
                    "severity": "info",
                }
            ],
        }
    ]
    assert len(objs) == 3


# ---------------------------------------------------------- 3. placeholders
SUB = "/subscriptions/{}/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (SUB.format("<SUBSCRIPTION_ID>"), "<SUBSCRIPTION_ID>"),
        (SUB.format("SUBSCRIPTION_ID"), "SUBSCRIPTION_ID"),
        (SUB.format("00000000-0000-0000-0000-000000000000"), "00000000-0000-0000-0000-000000000000"),
        (SUB.format("${SUBSCRIPTION}"), "${SUBSCRIPTION}"),
        ("RESOURCE_ID", "RESOURCE_ID"),
        ("CLIENT_ID", "CLIENT_ID"),
        ("<client-id>", "<client-id>"),
        ("$IDENTITY_CLIENT_ID", "$IDENTITY_CLIENT_ID"),
        ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"),
        (CID1, None),
        ("00000000-0000-0000-0000-00000000a001", None),  # a GUID that only starts with zeros
        (SUB.format("11111111-1111-1111-1111-111111111111"), None),
        ("MY_CLIENT_IDENTITY", None),
        ("", None),
    ],
)
def test_placeholder_in(value: str, found: str | None) -> None:
    assert placeholder_in(value) == found


def test_placeholder_subscription_passes_mics_regex_but_stays_created() -> None:
    # MIC's ValidateResourceID accepts it (§1), Azure refuses the VM update: the AzureAssignedIdentity
    # stays Created (§1 lifecycle 5) and NMI answers 404 after C+A attempts (§2);
    # upstream test/e2e/invalid_identities_test.go:64-110
    rid_ = SUB.format("<SUBSCRIPTION_ID>")
    assert valid_resource_id(rid_)
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", resource_id=rid_), binding("b", "ns", "id", "s"), p)
    r = w.evaluate(p)
    assert r.token_request.status == 404
    assert r.token_request.wait_seconds == (16 + 4) * 5
    assert "ASSIGNED state failed after 20 attempts" in (r.token_request.error or "")
    assert {"PlaceholderIdentity", "NoIdentity"} <= set(codes(r))
    (no,) = by_code(r, "NoIdentity")
    assert "stays Created" in no.message
    assert obj_codes(w.object_findings().identities, "ns", "id") == ["PlaceholderIdentity"]


def test_valid_identity_still_assigned_next_to_a_placeholder_one() -> None:
    # invalid_identities_test.go:64-110: the valid identity Assigned, the invalid ones Created
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    bad = ident("bad", "ns", CID2, resource_id=SUB.format("SUBSCRIPTION_ID"))
    w = world(ident("good", "ns"), bad, binding("b1", "ns", "good", "s"), binding("b2", "ns", "bad", "s"), p)
    r = w.evaluate(p)
    assert r.token_request.status == 200 and r.token_request.identity == "ns/good"
    assert "PlaceholderIdentity" not in codes(r)  # the object section carries it
    assert obj_codes(w.object_findings().identities, "ns", "bad") == ["PlaceholderIdentity"]


def test_placeholder_client_id_gets_imds_identity_not_found() -> None:
    # MIC assigns by resourceID (mic.go updateUserMSI); NMI asks IMDS for the placeholder client_id, IMDS
    # answers 400 Identity not found, a TokenRefreshError -> 403 (§2 step 8)
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", "CLIENT_ID"), binding("b", "ns", "id", "s"), p)
    r = w.evaluate(p)
    assert r.token_request.status == 403
    assert "Identity not found" in (r.token_request.error or "")
    (f,) = by_code(r, "PlaceholderIdentity")
    assert "spec.clientID" in f.message and "403" in f.message


def test_placeholder_client_id_in_managed_mode_is_not_on_the_vm() -> None:
    cfg = config({"operationMode": "managed", "forceNamespaced": True})
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", "<client-id>"), binding("b", "ns", "id", "s"), p, cfg=cfg)
    r = w.evaluate(p)
    assert r.token_request.status == 403
    assert "PlaceholderIdentity" in codes(r) and "IdentityNotOnNode" not in codes(r)


def test_placeholder_resource_id_failing_the_regex_is_ignored_by_mic() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", resource_id="<RESOURCE_ID>"), binding("b", "ns", "id", "s"), p)
    r = w.evaluate(p)
    assert r.token_request.status == 404 and r.token_request.wait_seconds == 16 * 5  # §8.10: 80 s
    assert obj_codes(w.object_findings().identities, "ns", "id") == ["PlaceholderIdentity"]
    assert "format check" in w.object_findings().identities[0].findings[0].message


# ------------------------------------------------ 4. Behavior annotation case
@pytest.mark.parametrize(
    "annotations",
    [
        {"aadpodidentity.k8s.io/Behavior": "Namespaced"},
        {"aadpodidentity.k8s.io/behavior": "namespaced"},
        {"aadpodidentity.k8s.io/Behavior": " namespaced "},
    ],
)
def test_behavior_annotation_near_miss_is_not_namespaced(annotations: dict[str, str]) -> None:
    # pkg/apis/aadpodidentity/utils.go:5-6: exact key lookup, value compared with ==
    i = raw_identity("id", "platform", {"type": 0, "clientID": CID1, "resourceID": rid("id")}, annotations)
    assert not i.namespaced
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    w = world(i, binding("b", "platform", "id", "s"), p)
    assert w.evaluate(p).identities == ("platform/id",)  # still usable from another namespace
    assert obj_codes(w.object_findings().identities, "platform", "id") == ["BehaviorAnnotationCase"]


def test_exact_behavior_annotation_is_not_flagged() -> None:
    i = ident("id", "ns", namespaced=True)
    assert i.namespaced and i.behavior_near_miss == ""
    w = world(i, binding("b", "ns", "id", "s"), pod("p", "ns", {"aadpodidbinding": "s"}))
    assert w.object_findings().identities == ()


# -------------------------------------------------------- near-miss selectors
def test_selector_near_miss_value() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "my-idenity"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "my-identity"), p)
    r = w.evaluate(p)
    (f,) = by_code(r, "SelectorNearMiss")
    assert "did you mean 'my-identity'" in f.message and "ns/b" in f.message
    assert f.level == "error"
    (no,) = by_code(r, "NoIdentity")
    assert "did you mean 'my-identity'" in no.message


def test_selector_near_miss_label_key() -> None:
    p = pod("p", "ns", {"aadpodidbindng": "web"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "web"), p)
    r = w.evaluate(p)
    (f,) = by_code(r, "SelectorNearMiss")
    assert "'aadpodidbindng: web'" in f.message and "ns/b" in f.message
    (no,) = by_code(r, "NoIdentity")
    assert "aadpodidbindng" in no.message


def test_case_mismatch_is_not_a_near_miss_and_short_selectors_are_not_guessed() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "Web"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "web"), binding("c", "ns", "id", "wex"), p)
    r = w.evaluate(p)
    assert "SelectorCaseMismatch" in codes(r)
    assert "SelectorNearMiss" not in codes(r)  # 'Web'/'wex': 3 characters allow one edit, Web->wex is two


def test_no_near_miss_when_the_label_matches_exactly() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "frontend"})
    w = world(
        ident("id", "ns"), binding("b", "ns", "id", "frontend"), binding("c", "ns", "id", "frontend2"), p
    )
    assert "SelectorNearMiss" not in codes(w.evaluate(p))


def test_near_miss_index_follows_binding_changes() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "backend"})
    w = world(ident("id", "ns"), p)
    assert "SelectorNearMiss" not in codes(w.evaluate(p))
    w.upsert(binding("b", "ns", "id", "backnd"))
    assert "SelectorNearMiss" in codes(w.evaluate(p))
    w.remove("AzureIdentityBinding", "ns", "b")
    assert "SelectorNearMiss" not in codes(w.evaluate(p))


@pytest.mark.parametrize(
    ("a", "b", "d", "near"),
    [
        ("identity", "identity", 0, False),
        ("identity", "idenity", 1, True),  # deletion
        ("identity", "idnetity", 1, True),  # adjacent swap (Damerau)
        ("identity", "identiti", 1, True),  # substitution
        ("identity", "IDENTITY", 8, False),  # case only: SelectorCaseMismatch, not a near miss
        ("aadpodidbinding", "aadpodidbindng", 1, True),
        ("frontend", "backend", 5, False),
        ("abc", "abd", 1, True),
        ("ab", "ac", 1, False),  # shorter than 3: never guessed
    ],
)
def test_nearmiss_distance(a: str, b: str, d: int, near: bool) -> None:
    from nmisim.engine.nearmiss import NearMissIndex, distance, is_near_miss  # noqa: PLC0415

    assert distance(a, b) == d
    assert is_near_miss(a, b) is near
    assert (NearMissIndex([b]).near(a) == [b]) is near  # every single edit is found through the index


def test_near_miss_index_is_kept_up_to_date_once_built() -> None:
    p = pod("p", "ns", {"aadpodidbinding": "backend"})
    w = world(ident("id", "ns"), binding("x", "ns", "id", "backnd"), p)
    assert "SelectorNearMiss" in codes(w.evaluate(p))  # builds the index
    w.upsert(binding("y", "ns", "id", "backnd"))  # a second binding with the same selector
    w.remove("AzureIdentityBinding", "ns", "x")
    assert "ns/y" in by_code(w.evaluate(p), "SelectorNearMiss")[0].message  # selector still indexed
    w.upsert(binding("y", "ns", "id", "frontend"))  # replaced: its old selector leaves the index
    assert "SelectorNearMiss" not in codes(w.evaluate(p))
    w.upsert(binding("z", "ns", "id", "bakend"))
    assert "did you mean 'bakend'" in by_code(w.evaluate(p), "SelectorNearMiss")[0].message
