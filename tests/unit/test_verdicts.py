"""Verdicts and the MIC shortcut (product.md §2; nmi-semantics §2 step 6, §3)."""

from __future__ import annotations

import json

import pytest
from factories import binding, exc, ident, pod, world

from nmisim.engine.models import Pod


@pytest.mark.parametrize(
    ("kwargs", "with_exception", "expected"),
    [
        ({"host_network": True, "phase": "Succeeded"}, True, "bypass"),  # bypass beats inactive
        ({"host_network": True}, True, "bypass"),  # bypass beats exempt (§3: never reaches NMI)
        ({"phase": "Succeeded"}, True, "inactive"),  # inactive beats exempt
        ({"phase": "Failed"}, False, "inactive"),
        ({"phase": "Pending"}, True, "exempt"),
        ({"phase": None}, True, "exempt"),  # no status: evaluated as running
        ({"phase": None}, False, "intercepted"),
        ({"phase": "Running"}, False, "intercepted"),
        ({"phase": "Unknown"}, False, "intercepted"),
    ],
)
def test_verdict_precedence(kwargs: dict[str, object], with_exception: bool, expected: str) -> None:
    objs = [exc("e", "ns", {"app": "x"})] if with_exception else []
    p = pod("p", "ns", {"app": "x"}, **kwargs)  # type: ignore[arg-type]
    assert world(*objs, p).evaluate(p).verdict == expected


@pytest.mark.parametrize(
    ("ns", "rs", "mic_ns", "expected"),
    [
        ("default", "mic-7d9c6b5f4", "default", True),
        ("DEFAULT", "mic-7d9c6b5f4", "default", True),  # namespace compared EqualFold
        ("default", "mic", "default", True),  # ^mic-* : "mic" followed by zero or more '-'
        ("default", "micro-abc", "default", True),  # ...which means any name starting with "mic"
        ("default", "aad-pod-identity-mic-abc", "default", False),  # Helm release prefix (§5)
        ("default", "MIC-abc", "default", False),  # regex is case-sensitive
        ("other", "mic-abc", "default", False),
        ("kube-system", "mic-abc", "kube-system", True),  # micNamespace flag
        ("default", None, "default", False),  # no ReplicaSet owner
    ],
)
def test_mic_shortcut_nmi_semantics_2_step6(ns: str, rs: str | None, mic_ns: str, expected: bool) -> None:
    from factories import config  # noqa: PLC0415

    p = pod("mic-pod", ns, {}, rs=rs)
    w = world(p, cfg=config({"micNamespace": mic_ns}))
    r = w.evaluate(p)
    assert r.mic_shortcut is expected
    assert r.verdict == ("exempt" if expected else "intercepted")
    assert r.exceptions == ()


def test_owner_replicaset_only_from_replicaset_kind() -> None:
    p = Pod.from_k8s(
        {
            "metadata": {
                "name": "x",
                "ownerReferences": [
                    {"kind": "StatefulSet", "name": "mic-a"},
                    {"kind": "ReplicaSet", "name": "rs-1"},
                ],
            }
        }
    )
    assert p.owner_replicaset == "rs-1"


def test_result_json_shape_product_4() -> None:
    p = pod("web", "shop", {"aadpodidbinding": "web"})
    w = world(ident("id", "shop"), binding("b", "shop", "id", "web"), p)
    doc = w.evaluate(p).to_json()
    assert list(doc) == [
        "namespace", "name", "verdict", "exception", "exceptions", "micShortcut", "identities", "ambiguous",
        "tokenRequest", "findings",
    ]  # fmt: skip
    assert list(doc["tokenRequest"]) == ["status", "servedBy", "identity", "error", "waitSeconds"]
    assert doc["tokenRequest"] == {
        "status": 200, "servedBy": "nmi", "identity": "shop/id", "error": None, "waitSeconds": 0,
    }  # fmt: skip
    json.dumps(doc)


def test_results_are_deterministic_and_comparable() -> None:
    objs = [ident("b", "ns"), ident("a", "ns"), binding("b2", "ns", "b", "s"), binding("b1", "ns", "a", "s")]
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    r1 = world(*objs, p).evaluate(p)
    r2 = world(*reversed(objs), p).evaluate(p)
    assert r1 == r2
    assert r1.to_json() == r2.to_json()
    assert r1.identities == ("ns/a", "ns/b")


def test_inactive_pod_has_no_token_request() -> None:
    p = pod("done", "ns", {"aadpodidbinding": "s"}, phase="Succeeded")
    r = world(p).evaluate(p)
    assert r.token_request.status is None and r.findings == ()


def test_evaluate_all_sorted_and_remove_pod() -> None:
    w = world(pod("b", "ns2"), pod("a", "ns2", ip="10.0.0.2"), pod("z", "ns1", ip="10.0.0.3"))
    assert [(r.namespace, r.name) for r in w.evaluate_all()] == [("ns1", "z"), ("ns2", "a"), ("ns2", "b")]
    assert w.remove("Pod", "ns2", "a")
    assert w.get_pod("ns2", "a") is None
    assert w.pods_at("node-1", "10.0.0.2") == []


AKS = {"kubernetes.azure.com/managedby": "aks"}
AKS_EXC = exc("aks-addon-exception", "kube-system", AKS)


@pytest.mark.parametrize(
    ("ns", "labels", "expected_verdict", "flagged"),
    [
        ("kube-system", AKS, "exempt", False),  # the default exception covers it
        ("kube-system", {"kubernetes.azure.com/managedby": "AKS"}, "exempt", False),  # values EqualFold
        ("gatekeeper-system", AKS, "intercepted", True),  # exceptions are per namespace (§5)
        ("calico-system", {"kubernetes.azure.com/managedby": "Aks"}, "intercepted", True),
        ("gatekeeper-system", {"kubernetes.azure.com/managedby": "helm"}, "intercepted", False),
        ("shop", {"app": "web"}, "intercepted", False),
    ],
)
def test_aks_addon_not_exempt_in_any_namespace(
    ns: str, labels: dict[str, str], expected_verdict: str, flagged: bool
) -> None:
    p = pod("addon-1", ns, labels)
    r = world(AKS_EXC, p).evaluate(p)
    assert r.verdict == expected_verdict
    assert ("AKSAddonNotExempt" in r.finding_codes) is flagged
    if flagged:
        msg = next(f.message for f in r.findings if f.code == "AKSAddonNotExempt")
        assert f"namespace {ns}" in msg and "pod's own namespace" in msg
        assert f"AzurePodIdentityException in {ns}" in msg


def test_aks_addon_not_exempt_in_kube_system_without_exception() -> None:
    p = pod("omsagent-abc", "kube-system", AKS)
    r = world(p).evaluate(p)
    assert r.verdict == "intercepted"
    msg = next(f.message for f in r.findings if f.code == "AKSAddonNotExempt")
    assert "create aks-addon-exception in kube-system" in msg


def test_aks_addon_hostnetwork_is_bypass_not_flagged() -> None:
    p = pod("azure-cni", "calico-system", AKS, host_network=True)
    r = world(AKS_EXC, p).evaluate(p)
    assert r.verdict == "bypass" and "AKSAddonNotExempt" not in r.finding_codes
