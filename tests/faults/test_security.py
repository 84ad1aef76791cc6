"""Least privilege, proven: the ServiceAccount may do exactly what the operator does. (That simulated
tokens can never pass for real ones needs no cluster: tests/unit/test_simulated_tokens.py.)"""

from __future__ import annotations

import re

import pytest

from tests.faults.helpers import report
from tests.support import Cluster

SA = "--as=system:serviceaccount:nmisim-system:nmisim"
AAD = "aadpodidentity.k8s.io"

# Every resource rule of `kubectl auth can-i --list` for the operator's ServiceAccount. The first three are
# what every authenticated user gets (system:basic-user); the rest is manifests/rbac.yaml, each line used.
EXPECTED: dict[str, set[str]] = {
    "selfsubjectreviews.authentication.k8s.io": {"create"},
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
    "pods": {"list", "watch"},  # kopf's watch; the operator's LIST at start
    "serviceaccounts": {"list", "watch"},  # the migration's status (status.migration)
    "namespaces": {"list", "watch"},  # ... their Pod Security labels
    f"azureidentities.{AAD}": {"list", "watch"},
    f"azureidentitybindings.{AAD}": {"list", "watch"},
    f"azureassignedidentities.{AAD}": {"list", "watch"},
    f"azurepodidentityexceptions.{AAD}": {"list", "watch"},
    "simulationconfigs.nmisim.dev": {"list", "watch"},
    "nmiverdicts.nmisim.dev": {"get", "list", "watch", "create", "delete"},  # get: after a 409 on create
    "nmiverdicts.nmisim.dev/status": {"patch"},
    "simulationconfigs.nmisim.dev/status": {"patch"},
    f"azurepodidentityexceptions.{AAD}/status": {"patch"},
    "events": {"create", "list"},  # list: the Events of earlier runs, once at start
    "clusterkopfpeerings.kopf.dev": {"list", "watch", "patch"},  # only with --peering
}


def _rules(cluster: Cluster) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as {resource: verbs}, resource rules only (the non-resource URLs are the
    discovery and health endpoints every client may GET)."""
    lines = cluster.kubectl("auth", "can-i", "--list", SA).stdout.splitlines()
    out: dict[str, set[str]] = {}
    for line in lines[1:]:
        if line.startswith(" "):
            continue  # a non-resource URL row
        resource, *_, verbs = re.split(r"\s{2,}", line.strip())
        out.setdefault(resource, set()).update(verbs.strip("[]").split())
    return out


def test_service_account_has_exactly_the_operators_permissions(installed: Cluster) -> None:
    rules = _rules(installed)
    assert rules == EXPECTED, {k: (rules.get(k), EXPECTED.get(k)) for k in set(rules) | set(EXPECTED)}
    report(
        "least-privilege",
        "kubectl auth can-i --list for system:serviceaccount:nmisim-system:nmisim",
        f"{len(rules)} resource rules, equal to the {len(EXPECTED)} expected (3 are every user's "
        "self-reviews); no wildcard",
    )


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("patch", "pods", "default"),
        ("update", "pods", "kube-system"),
        ("delete", "pods", "kube-system"),
        ("create", "pods/eviction", "default"),
        ("get", "pods", "kube-system"),  # not even a single pod: only the watch
        ("get", "secrets", "kube-system"),
        ("list", "secrets", "default"),
        ("watch", "secrets", "nmisim-system"),
        ("get", "configmaps", "kube-system"),
        ("create", "deployments.apps", "default"),
        ("patch", "deployments.apps", "kube-system"),
        ("delete", "daemonsets.apps", "kube-system"),
        ("create", "serviceaccounts/token", "kube-system"),
        ("patch", "serviceaccounts", "default"),  # read for the migration's status, never written
        ("delete", "namespaces", ""),
        ("patch", f"azurepodidentityexceptions.{AAD}", "default"),
        ("delete", f"azureidentities.{AAD}", "default"),
        ("patch", "nmiverdicts.nmisim.dev", "default"),
        ("patch", "simulationconfigs.nmisim.dev", ""),
        ("patch", "events", "default"),
        ("create", "clusterroles.rbac.authorization.k8s.io", ""),
        ("create", "rolebindings.rbac.authorization.k8s.io", "default"),
        ("impersonate", "serviceaccounts", "default"),
    ],
)
def test_service_account_cannot(installed: Cluster, verb: str, resource: str, namespace: str) -> None:
    ns = ["-n", namespace] if namespace else []
    answer = installed.kubectl("auth", "can-i", verb, resource, *ns, SA, check=False).stdout.strip()
    assert answer == "no", f"may {verb} {resource} in {namespace or 'the cluster'}"
