"""A pod of `nmisim-clients:dev` on the embedded cluster's real node, waiting to be exec'd into: what
hack/bench_serve.py and hack/demo_live.py run their clients in (tests/realnode.py has the tests' own)."""

from __future__ import annotations

from typing import Any

CLIENTS_IMAGE = "nmisim-clients:dev"
REAL_NODE = {"nmisim.dev/node": "real"}
TOLERATION = {"key": "nmisim.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}


def clients_pod(
    name: str,
    labels: dict[str, str],
    *,
    namespace: str | None = None,
    container: str = "main",
    **extra: Any,
) -> dict[str, Any]:
    """The pod; ``extra`` adds fields to its container (``resources``, ``securityContext``, ...)."""
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeSelector": REAL_NODE,
            "tolerations": [TOLERATION],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": container,
                    "image": CLIENTS_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    **extra,
                }
            ],
        },
    }
