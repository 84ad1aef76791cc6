"""The operator's migration bookkeeping (nmisim.controller.migration.Migrations) stays linear where a
50,000-pod cluster put pressure on it: the hostNetwork pods of one node share its IP (each arriving marks
every other pod at that address once, not once per pod there: that was cubic), and a Namespace event
marks that namespace's workloads from an index (it walked every workload). Counted in operations, not
timed: the number of workload marks made."""

from __future__ import annotations

from typing import Any

from nmisim.controller.migration import Migrations
from nmisim.engine.migration.objects import Namespace, PodSpec


class Counting(dict[Any, Any]):
    """The dirty-workload map, counting its setdefault calls (one per pod marked)."""

    calls = 0

    def setdefault(self, key: Any, default: Any = None) -> Any:
        Counting.calls += 1
        return super().setdefault(key, default)


def spec(ns: str, name: str) -> PodSpec:
    body = {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    return PodSpec.from_k8s(body)


def test_pods_sharing_one_address_cost_quadratic_not_cubic_marks() -> None:
    m = Migrations()
    m._dirty = Counting()
    n = 300
    Counting.calls = 0
    for i in range(n):
        key = ("ns", f"host-{i}")
        m.set_spec(key, spec("ns", f"host-{i}"))
        m.located(key, ("node-1", "192.0.2.10"))  # hostNetwork: the node's IP
    # each arrival marks the pods already there once: n(n+1)/2 plus the set_spec marks; cubic would be ~n^3/6
    assert Counting.calls <= n * (n + 1) // 2 + 2 * n


def test_a_namespace_event_marks_its_own_workloads_only() -> None:
    m = Migrations()
    for ns in ("a", "b"):
        for i in range(3):
            m.set_spec((ns, f"p{i}"), spec(ns, f"p{i}"))
    m._dirty.clear()
    assert m.set_namespace("a", Namespace.from_k8s({"metadata": {"name": "a", "labels": {"x": "y"}}}))
    assert {ref.namespace for ref in m._dirty} == {"a"} and len(m._dirty) == 3
    m.forget(("a", "p0"))
    m.forget(("a", "p1"))
    m.forget(("a", "p2"))
    m._dirty.clear()
    assert m.set_namespace("a", Namespace.from_k8s({"metadata": {"name": "a", "labels": {"x": "z"}}}))
    assert not m._dirty  # no workload left in a


def test_the_identities_view_is_kept_across_pod_changes_and_rebuilt_on_identity_changes() -> None:
    """classify.Identities (client IDs and resource IDs of every AzureIdentity) was rebuilt after every
    pod change (it was keyed on World.generation): O(identities) per verdict change."""
    from factories import ident, pod  # noqa: PLC0415

    from nmisim.engine.migration.classify import Identities  # noqa: PLC0415
    from nmisim.engine.models import KIND_IDENTITY  # noqa: PLC0415
    from nmisim.engine.world import World  # noqa: PLC0415

    w = World()
    w.upsert(ident("id-a", "ns"))
    first = Identities.of(w)
    w.upsert(pod("p1", "ns", {"app": "x"}))
    assert Identities.of(w) is first
    w.upsert(ident("id-b", "ns", "00000000-0000-0000-0000-0000000000b2"))
    second = Identities.of(w)
    assert second is not first and second.get("ns/id-b") is not None
    w.remove(KIND_IDENTITY, "ns", "id-b")
    assert Identities.of(w).get("ns/id-b") is None
    before = Identities.of(w)
    w.set_config(w.config)
    assert Identities.of(w) is not before  # the VM identities of the configuration may have changed
