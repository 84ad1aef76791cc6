"""Objects the API server accepts but that are odd, and random accepted objects: the operator never stops,
and what it writes equals ``nmisim evaluate`` on the same objects."""

from __future__ import annotations

import itertools
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.helpers import Operator, apply, converge, pods_running, report
from tests.support import Cluster, eventually, exception, pod, settle

CLIENT = "00000000-0000-0000-0000-0000000000{:02d}"


def identity(name: str, kind: int, n: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentity",
        "metadata": {"name": name},
        "spec": {
            "type": kind,
            "clientID": CLIENT.format(n),
            "resourceID": "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg/providers"
            f"/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        },
    }


def binding(name: str, target: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": name},
        "spec": {"azureIdentity": target, "selector": selector},
    }


def _clear(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", timeout=120)
    cluster.kubectl(
        "delete", "apie,azureidentity,azureidentitybinding", "--all", "-n", namespace, timeout=120
    )
    eventually(
        lambda: not cluster.get_json("pods,nmiverdicts", "-n", namespace)["items"],
        timeout=60,
        what="namespace emptied",
    )


def test_odd_but_accepted_objects(local: Cluster, operator: Operator, namespace: str) -> None:
    many = {f"label-{i:04d}": f"v{i}" for i in range(2000)}
    sel = namespace[-6:]  # bindings match across namespaces: selectors of this test's own
    apply(
        local,
        namespace,
        exception("empty", {}),
        exception("nobody", {"no-such-label": "x"}),
        identity("type-7", 7),
        identity("type-1-no-secret", 1, 2),
        binding("to-missing", "no-such-identity", f"orphan-{sel}"),
        binding("to-type-7", "type-7", f"seven-{sel}"),
        binding("to-type-1", "type-1-no-secret", f"one-{sel}"),
        pod("orphan", {"aadpodidbinding": f"orphan-{sel}"}),
        pod("seven", {"aadpodidbinding": f"seven-{sel}"}),
        pod("one", {"aadpodidbinding": f"one-{sel}"}),
        pod("many-labels", many),
        pod("empty-value", {"app": ""}),
    )
    pods_running(local, namespace, 5)
    seconds = converge(local, [namespace])
    settle(operator)
    assert operator.alive and operator.errors_in_log() == []
    conditions = {
        e["metadata"]["name"]: e["status"]["conditions"][0]["reason"]
        for e in local.get_json("apie", "-n", namespace)["items"]
    }
    assert conditions == {"empty": "EmptyPodLabels", "nobody": "NoMatchingPods"}
    findings = {
        v["metadata"]["name"]: sorted(f["code"] for f in v["status"].get("findings") or [])
        for v in local.get_json("nmiverdicts", "-n", namespace)["items"]
    }
    for name in ("orphan", "seven"):
        assert findings[name], f"{name}: no finding"
    report(
        "odd-input",
        "exceptions with empty podLabels and no match, identity types 7 and 1 without secret, a binding to "
        "a missing identity, a pod with 2,000 labels, an empty label value",
        f"operator alive, 0 errors; verdicts equal nmisim evaluate in {seconds:.1f}s; exception conditions "
        f"{conditions}; findings {{{', '.join(f'{k}: {v}' for k, v in findings.items() if v)}}}",
    )


# Label keys and values valid for the CRDs (tests/fixtures/crd-invalid has the rejected ones), from a small
# alphabet so that exceptions and bindings do match pods.
KEYS = st.sampled_from(
    ["app", "team", "tier", "aadpodidbinding", "kubernetes.azure.com/managedby", "a.b/c-d"]
)
VALUES = st.sampled_from(["a", "A", "web", "WEB", "aks", "x-1", "", "b.c_d"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=4)
POD = st.fixed_dictionaries({"labels": LABELS, "host_network": st.booleans()})
CASE = st.fixed_dictionaries(
    {
        "pods": st.lists(POD, min_size=1, max_size=4),
        "exceptions": st.lists(LABELS, max_size=2),
        "identities": st.lists(st.sampled_from([0, 1, 2, 3, 7]), max_size=2),
        "bindings": st.lists(st.tuples(st.integers(0, 2), VALUES), max_size=2),
    }
)
COUNTER = itertools.count()
SEEN: list[float] = []


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
@given(case=CASE)
def test_random_accepted_objects(
    local: Cluster, operator: Operator, namespace: str, case: dict[str, Any]
) -> None:
    n = next(COUNTER)
    _clear(local, namespace)
    objs: list[dict[str, Any]] = []
    objs += [pod(f"p{n}-{i}", p["labels"], p["host_network"]) for i, p in enumerate(case["pods"])]
    objs += [exception(f"e{n}-{i}", labels) for i, labels in enumerate(case["exceptions"])]
    objs += [identity(f"id{n}-{i}", kind, i) for i, kind in enumerate(case["identities"])]
    # A binding to identity i (missing when there are fewer), selecting a value the pods may carry.
    objs += [binding(f"b{n}-{i}", f"id{n}-{t}", sel or "none") for i, (t, sel) in enumerate(case["bindings"])]
    apply(local, namespace, *objs)
    pods_running(local, namespace, len(case["pods"]))
    started = time.monotonic()
    converge(local, [namespace], timeout=60)
    SEEN.append(time.monotonic() - started)
    assert operator.alive, "operator exited"
    assert operator.tracebacks() == [], operator.tracebacks()
    if len(SEEN) == 12:
        report(
            "random-input",
            f"{len(SEEN)} hypothesis examples of accepted pods/exceptions/identities/bindings",
            f"operator alive, no traceback; every verdict equal nmisim evaluate, in at most {max(SEEN):.1f}s",
        )
