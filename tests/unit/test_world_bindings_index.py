"""World.bindings_naming: the bindings of one namespace that name one AzureIdentity, from an index kept up
to date by upsert and remove (the migration plan's clean-up asks it once per workload; scanning every
binding instead made a 50,000-pod seed quadratic). Checked against a scan of every binding after every
step of random upserts (including a binding moved to another identity) and removes."""

from __future__ import annotations

from factories import binding
from hypothesis import given, settings
from hypothesis import strategies as st

from nmisim.engine.models import KIND_BINDING
from nmisim.engine.world import World

NAMES = st.sampled_from(["b1", "b2", "b3"])
NSS = st.sampled_from(["ns1", "ns2"])
IDENTITIES = st.sampled_from(["id-a", "id-b"])
STEPS = st.lists(
    st.tuples(st.booleans(), NAMES, NSS, IDENTITIES, st.sampled_from(["web", "api"])), max_size=25
)


def scan(w: World, namespace: str, identity: str) -> list[str]:
    return [b.key for b in w.bindings() if b.namespace == namespace and b.azure_identity == identity]


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_the_index_equals_a_scan_after_every_change(steps: list[tuple[bool, str, str, str, str]]) -> None:
    w = World()
    for add, name, ns, identity, selector in steps:
        if add:
            w.upsert(binding(name, ns, identity, selector))
        else:
            w.remove(KIND_BINDING, ns, name)
        for n in ("ns1", "ns2"):
            for i in ("id-a", "id-b"):
                assert [b.key for b in w.bindings_naming(n, i)] == scan(w, n, i)


def test_a_binding_moved_to_another_identity_leaves_the_first() -> None:
    w = World()
    w.upsert(binding("b1", "ns1", "id-a", "web"))
    w.upsert(binding("b1", "ns1", "id-b", "web"))
    assert w.bindings_naming("ns1", "id-a") == []
    assert [b.key for b in w.bindings_naming("ns1", "id-b")] == ["ns1/b1"]
    assert w.bindings_naming("ns2", "id-b") == []
