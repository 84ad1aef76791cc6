"""A change → what it can affect. Pure functions of the World: which pods must be evaluated again, and
which keys of the work queue an evaluation concerns. No I/O, no state of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from nmisim.engine.config import CONFIG_NAME
from nmisim.engine.models import KIND_EXCEPTION, KIND_POD, Pod
from nmisim.engine.world import World

WorkKind = Literal["verdict", "exception", "config"]
WorkKey = tuple[WorkKind, str, str]

CONFIG_KEY: WorkKey = ("config", "", CONFIG_NAME)


def pods_affected(world: World, kind: str, namespace: str, name: str) -> list[Pod]:
    """The pods whose answer a change of this object can change: a pod itself; every pod of an
    exception's namespace (exceptions match only their own namespace); every pod for identities,
    bindings, assigned identities and the configuration (bindings match across namespaces by default,
    and the configuration is NMI's flags)."""
    if kind == KIND_POD:
        pod = world.get_pod(namespace, name)
        return [] if pod is None else [pod]
    if kind == KIND_EXCEPTION:
        return [p for p in world.pods() if p.namespace == namespace]
    return list(world.pods())


def address_neighbours(
    world: World, changed: Iterable[Pod | None], depends: Callable[[Pod], bool]
) -> list[Pod]:
    """The other pods at the node addresses a pod change touched (its IP before and after), among those
    whose answer ``depends`` on who else holds their IP: a bound hostNetwork pod's
    HostNetworkIdentityExposed says whether NMI's lookup by IP finds it alone. Whether a pod has that
    finding does not depend on its neighbours (only its wording does), so ``depends`` is asked of the
    pod's kept result; hostNetwork pods with no bound identity cost nothing here."""
    names = {(p.namespace, p.name) for p in changed if p is not None}
    out: dict[tuple[str, str], Pod] = {}
    for pod in changed:
        if pod is None or not pod.pod_ip:
            continue
        for other in world.pods_at(pod.node_name, pod.pod_ip):
            key = (other.namespace, other.name)
            if key not in names and key not in out and other.host_network and depends(other):
                out[key] = other
    return list(out.values())


def verdict_key(namespace: str, name: str) -> WorkKey:
    return ("verdict", namespace, name)


def exception_keys(world: World, namespace: str) -> list[WorkKey]:
    """The status of every exception of a namespace (they count its exempted pods)."""
    return [("exception", namespace, e.name) for e in world.exceptions(namespace)]
