"""Properties of the migration assessment (issue 20 "Tests"; workload-identity.md, the closing list's
rule 16).

1. For a pod with exactly one identity (a user-assigned one, type 0) and an application whose SDK has
   ``WorkloadIdentityCredential`` (any non-Go package of §5's table, at or above that column's version), the
   plan applied gives every request NMI answered with a token the same identity, in both phases: its rows
   are ``same-identity`` or ``unaffected``, never ``loses-access`` or ``different-identity``. Namespaces AKS's
   Admissions Enforcer excludes (kube-system, #525) are left out: no plan can label its way in there.
2. ``assess`` is deterministic: the same input, assessed twice or rebuilt from the same objects (in any
   order), gives the same JSON.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migration_support import (
    binding_obj,
    identity_obj,
    make_input,
    ns_obj,
    pod_obj,
    sa_obj,
)

from nmisim.engine.migration.assess import MODE_PLAN, MODE_VERIFY, assess
from nmisim.engine.migration.classify import PHASES, SAME_IDENTITY, UNAFFECTED
from nmisim.engine.migration.webhook import AKS_EXCLUDED_NAMESPACES

#: §5's WorkloadIdentityCredential column, written out here (Go left out: its ManagedIdentityCredential)
WI_MINIMUM = {
    "dotnet-azure-identity": (1, 9, 0),
    "js-azure-identity": (3, 2, 0),
    "python-azure-identity": (1, 13, 0),
    "java-azure-identity": (1, 9, 0),
    "cpp-azure-identity": (1, 6, 0),
}

dns = st.from_regex(r"\A[a-z]([a-z0-9-]{0,12}[a-z0-9])?\Z", fullmatch=True)
namespaces = dns.filter(lambda n: n not in AKS_EXCLUDED_NAMESPACES)
guids = st.uuids().map(str)
SUFFIX = st.from_regex(r"\A[a-z0-9]{5}\Z", fullmatch=True)
hexish = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_-]{0,20}\Z", fullmatch=True)


@st.composite
def wi_sdk(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(WI_MINIMUM)))
    major, minor, patch = WI_MINIMUM[name]
    bump = draw(st.sampled_from(["same", "patch", "minor", "major"]))
    if bump == "patch":
        patch += draw(st.integers(1, 30))
    elif bump == "minor":
        minor, patch = minor + draw(st.integers(1, 30)), draw(st.integers(0, 30))
    elif bump == "major":
        major, minor, patch = (
            major + draw(st.integers(1, 3)),
            draw(st.integers(0, 30)),
            draw(st.integers(0, 30)),
        )
    v = draw(st.sampled_from(["", "v"])) if name.startswith("go") else ""
    return f"{name}=={v}{major}.{minor}.{patch}"


@st.composite
def one_identity_pod(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pod_ns = draw(namespaces)
    ident_ns = draw(st.one_of(st.just(pod_ns), namespaces))
    ident_name, selector = draw(dns), draw(dns)
    client_id = draw(guids)
    res_id = (
        f"/subscriptions/{draw(guids)}/resourcegroups/{draw(hexish)}/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{draw(hexish)}"
    )
    sdk = draw(wi_sdk())
    sa = draw(st.one_of(st.none(), dns))
    objs: list[dict[str, Any]] = [
        identity_obj(ident_name, ident_ns, client_id, resource_id=res_id),
        binding_obj(f"{ident_name}-b", ident_ns, ident_name, selector),
    ]
    if sa is not None and draw(st.booleans()):
        existing = {"azure.workload.identity/client-id": client_id} if draw(st.booleans()) else {}
        objs.append(sa_obj(sa, pod_ns, existing))
    labels = {"aadpodidbinding": selector}
    owner = None
    pod_name = draw(dns)
    if draw(st.booleans()):
        deploy = draw(dns)
        labels["pod-template-hash"] = "5d8f"
        owner = ("ReplicaSet", f"{deploy}-5d8f")
        pod_name = f"{deploy}-5d8f-{draw(SUFFIX)}"
    if draw(st.booleans()):
        objs.append(
            ns_obj(
                pod_ns,
                {
                    "pod-security.kubernetes.io/enforce": draw(
                        st.sampled_from(["baseline", "restricted", "privileged"])
                    )
                },
            )
        )
    pod = pod_obj(pod_name, pod_ns, labels=labels, annotations={"nmisim.dev/sdk": sdk}, sa=sa, owner=owner)
    objs.append(pod)
    wi = {
        "issuer": f"https://{draw(dns)}.oic.prod-aks.azure.com/{draw(guids)}/{draw(guids)}/",
        "tenantID": draw(guids),
        "webhookVersion": draw(st.sampled_from(["v1.6.0", "v1.5.1", "v1.5.0", "v1.0.0"])),
        "kubernetesVersion": draw(st.sampled_from(["1.29", "1.31", "1.32", "1.33"])),
        "platform": draw(st.sampled_from(["aks", "oss"])),
        "podLinkLocalAccess": draw(st.sampled_from(["IMDS", "None"])),
    }
    return objs, wi


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_identity_pod())
def test_plan_keeps_every_token_nmi_gave(case: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    objs, wi = case
    report = assess(make_input(*objs, wi=wi), MODE_PLAN)
    (pod,) = report.pods
    assert len(pod.identities) == 1, pod.identities
    (plan,) = report.plans
    assert plan.migrates
    answered = [row for row in pod.rows if row.before.ok]
    assert answered, "NMI answers a pod with one identity"
    for row in answered:
        for phase in PHASES:
            assert row.classes[phase] in (SAME_IDENTITY, UNAFFECTED), (
                row.shape.text,
                phase,
                row.after[phase],
            )
            assert row.after[phase].ok
            assert row.after[phase].identity == row.before.identity, (row.shape.text, phase)


# ------------------------------------------------------------------------------------------ determinism
SDKS = st.one_of(
    st.none(),
    wi_sdk(),
    st.sampled_from(
        [
            "python-azure-identity==1.6.0",
            "js-azure-identity==2.1.0",
            "go-azidentity==1.5.0",
            "python-msal==1.2.0",
            "imds",
            "bogus==1",
        ]
    ),
)


@st.composite
def world_objects(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    nss = draw(st.lists(st.sampled_from(["ns1", "ns2", "kube-system"]), min_size=1, max_size=2, unique=True))
    selectors = ["a", "b", "c"]
    objs: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 3))):
        ns = draw(st.sampled_from(nss))
        name = f"id-{i}"
        objs.append(
            identity_obj(
                name, ns, f"0000000{i}-0000-0000-0000-000000000000", type_=draw(st.sampled_from([0, 0, 1]))
            )
        )
        objs.append(binding_obj(f"b-{i}", ns, name, draw(st.sampled_from(selectors))))
    for j in range(draw(st.integers(1, 4))):
        ns = draw(st.sampled_from(nss))
        labels = {"aadpodidbinding": draw(st.sampled_from(selectors))}
        if draw(st.booleans()):
            labels["azure.workload.identity/use"] = "true"
        ann: dict[str, str] = {}
        sdk = draw(SDKS)
        if sdk is not None:
            ann["nmisim.dev/sdk"] = sdk
        if draw(st.booleans()):
            ann["azure.workload.identity/inject-proxy-sidecar"] = "true"
        owner = ("Job", f"job{j}") if draw(st.booleans()) else None
        sa = draw(st.sampled_from([None, "shared", f"sa{j}"]))
        objs.append(
            pod_obj(
                f"p{j}",
                ns,
                labels=labels,
                annotations=ann,
                sa=sa,
                owner=owner,
                host_network=draw(st.booleans()),
                uid=f"u{j}",
            )
        )
        if sa is not None and draw(st.booleans()):
            objs.append(
                sa_obj(sa, ns, {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"})
            )
    wi = {
        "platform": draw(st.sampled_from(["aks", "oss"])),
        "kubernetesVersion": draw(st.sampled_from(["1.31", "1.32"])),
    }
    return objs, wi


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_objects(), st.sampled_from([MODE_PLAN, MODE_VERIFY]), st.randoms(use_true_random=False))
def test_assess_is_deterministic(
    case: tuple[list[dict[str, Any]], dict[str, Any]], mode: str, rnd: random.Random
) -> None:
    objs, wi = case
    inp = make_input(
        *objs, wi=wi, imds={"userAssigned": [{"clientID": "99999999-0000-0000-0000-000000000099"}]}
    )
    first = assess(inp, mode).to_json()
    assert assess(inp, mode).to_json() == first
    again = make_input(
        *objs, wi=wi, imds={"userAssigned": [{"clientID": "99999999-0000-0000-0000-000000000099"}]}
    )
    assert assess(again, mode).to_json() == first
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    vm = {"userAssigned": [{"clientID": "99999999-0000-0000-0000-000000000099"}]}
    assert assess(make_input(*shuffled, wi=wi, imds=vm), mode).to_json() == first, (
        "input order does not matter"
    )
