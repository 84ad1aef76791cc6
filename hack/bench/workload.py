"""The generated cluster: namespaces with exceptions, an identity and a binding each; pods of every
verdict; the pods whose label changes flip a verdict; the fan-out namespace."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FANOUT_NAMESPACE = "bench-fanout"
IMAGE = "registry.invalid/bench:1"


@dataclass
class Workload:
    namespaces: list[str]
    objects: list[dict[str, Any]]  # exceptions, identities, bindings (namespaced)
    pods: list[dict[str, Any]]
    flip: list[tuple[str, str, str]] = field(default_factory=list)  # (ns, pod, label an exception matches)


def _pod(name: str, ns: str, labels: dict[str, str], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec or {"containers": [{"name": "c", "image": IMAGE}]},
    }


def generate(n_pods: int, n_ns: int, fanout: int, seed: int = 7) -> Workload:
    rnd = random.Random(seed)
    namespaces = [f"bench-{i:03d}" for i in range(n_ns)]
    objects: list[dict[str, Any]] = []
    for i, ns in enumerate(namespaces):
        for j in range(rnd.randint(1, 5)):
            objects.append(
                {
                    "apiVersion": "aadpodidentity.k8s.io/v1",
                    "kind": "AzurePodIdentityException",
                    "metadata": {"name": f"exc-{j}", "namespace": ns},
                    "spec": {"podLabels": {"team": f"team-{j}", f"extra-{j}": "Yes"}},
                }
            )
        objects.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentity",
                "metadata": {"name": "app-id", "namespace": ns},
                "spec": {
                    "type": 0,
                    "clientID": f"{i:08d}-0000-0000-0000-000000000000",
                    "resourceID": f"/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/b"
                    f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{ns}",
                },
            }
        )
        objects.append(
            {
                "apiVersion": "aadpodidentity.k8s.io/v1",
                "kind": "AzureIdentityBinding",
                "metadata": {"name": "app-binding", "namespace": ns},
                "spec": {"azureIdentity": "app-id", "selector": f"{ns}-app"},
            }
        )
    pods: list[dict[str, Any]] = []
    flip: list[tuple[str, str, str]] = []
    for k in range(n_pods):
        ns = namespaces[k % n_ns]
        name = f"pod-{k:05d}"
        labels = {"app": f"app-{k % 13}"}
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": IMAGE}]}
        r = rnd.random()
        if r < 0.3:
            labels["team"] = "TEAM-0"  # exempt by exc-0 (values compare case-insensitively)
        elif r < 0.6:
            labels["aadpodidbinding"] = f"{ns}-app"
        elif r < 0.65:
            spec["hostNetwork"] = True
        else:
            flip.append((ns, name, "team"))  # intercepted and denied; flips to exempt with team=team-0
        pods.append(_pod(name, ns, labels, spec))
    namespaces.append(FANOUT_NAMESPACE)
    for k in range(fanout):
        pods.append(_pod(f"fan-{k:04d}", FANOUT_NAMESPACE, {"fanout": "yes"}))
    return Workload(namespaces, objects, pods, flip)
