"""The engine's memos give exactly what the computations they replace give, and none outlives what it was
computed from (issue 24: the default request's path handling, the pod's identity selection)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from factories import CID1, binding, config, ident, pod, world
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_store_stateful import configs, fresh, key_of, objects

from nmisim.engine import world as world_module
from nmisim.engine.http import DEFAULT_REQUEST, TARGET_NMI, HttpRequest, canonical_header
from nmisim.engine.identities import Selection
from nmisim.engine.models import Model, Pod
from nmisim.engine.paths import go_unescape_path
from nmisim.engine.router import ROUTE_BAD_REQUEST, ROUTE_BLOCKED, ROUTE_PROXY, route_of, routed_path
from nmisim.engine.routes import simulate_request
from nmisim.engine.tokens import adal_msi_endpoint
from nmisim.engine.verdict import PodResult
from nmisim.engine.world import World

# path pieces as a caller may send them: escaped dots and slashes, malformed escapes, non-ASCII bytes
PIECES = st.sampled_from(
    ["metadata", "METADATA", "identity", "oauth2", "token", "host", "instance", "compute", ".", "..", "",
     "%2e", "%2E%2e", "%2F", "%2f%2f", "%", "%4", "%zz", "%41", "%C3%A9", "%ff", "é", "+", "a b", ";x"]
)  # fmt: skip


@st.composite
def raw_paths(draw: st.DrawFn) -> str:
    p = "/".join(draw(st.lists(PIECES, max_size=8)))
    return p if not draw(st.booleans()) else "/" + p


def uncached_route(raw: str, block: bool) -> tuple[str | None, str]:
    """What ``simulate_request`` computed for every request before the memo."""
    path = go_unescape_path(raw)
    if path is None:
        return None, ROUTE_BAD_REQUEST
    return path, route_of(path, block_instance_metadata=block)


@settings(max_examples=1500, deadline=None)
@given(raw=raw_paths(), block=st.booleans())
@example(raw=HttpRequest().path, block=False)
@example(raw="/metadata/instance/compute", block=True)
@example(raw="/metadata/%2e%2e/identity/oauth2/token", block=False)
@example(raw="/metadata/identity/oauth2/token%", block=False)
def test_routed_path_memo_equals_the_uncached_router(raw: str, block: bool) -> None:
    expected = uncached_route(raw, block)
    assert routed_path.__wrapped__(raw, block) == expected
    assert routed_path(raw, block) == expected  # computed or from the memo
    assert routed_path(raw, block) == expected  # from the memo
    assert routed_path(raw, not block) == uncached_route(raw, not block)  # the flag is part of the key


@pytest.mark.parametrize("raw", ["/metadata/instance/compute", "/Metadata/instance", "/metadata/instance/"])
def test_a_config_change_is_never_answered_from_the_memo(raw: str) -> None:
    """blockInstanceMetadata flips the route of the same request on the same world, both ways."""
    p = pod("app", "ns")
    w = world(p)
    req = HttpRequest(path=raw)
    answers = []
    for block in (False, True, False, True):
        w.set_config(config({"blockInstanceMetadata": block}))
        res = w.request(req, pod=p)
        answers.append((res.route, res.status))
    assert [r for r, _ in answers] == [ROUTE_PROXY, ROUTE_BLOCKED, ROUTE_PROXY, ROUTE_BLOCKED]
    assert answers[1][1] == 403


@pytest.mark.parametrize(
    "name", ["metadata", "Metadata", "METADATA", "x-ms-client", "podns", "a--b", "", "-"]
)
def test_canonical_header_memo_equals_the_uncached_function(name: str) -> None:
    assert canonical_header(name) == canonical_header.__wrapped__(name)
    assert canonical_header(name) == canonical_header.__wrapped__(name)


@pytest.mark.parametrize("client_id", ["", CID1, "a b&c"])
@pytest.mark.parametrize("resource", ["https://management.azure.com/", "", "r?x=1"])
def test_adal_endpoint_memo_equals_the_uncached_function(client_id: str, resource: str) -> None:
    expected = adal_msi_endpoint.__wrapped__(client_id, resource)
    assert adal_msi_endpoint(client_id, resource) == expected
    assert adal_msi_endpoint(client_id, resource) == expected
    assert ("client_id=" in expected) == bool(client_id)


class UncachedScope(world_module._PodScope):
    """The evaluation scope with every memo turned off: each question goes to the world, as it did before
    the scope existed (the pod's identity selected once for the answer, once more for the findings)."""

    __slots__ = ()

    def matching_exceptions(self, pod: Pod) -> list[str]:
        return self._world.matching_exceptions(pod)

    def is_mic(self, pod: Pod) -> bool:
        return self._world.is_mic(pod)

    def standard_info(self) -> world_module._StandardInfo:
        return self._world._standard_info(self.pod)

    def default_selection(self) -> Selection:
        return self._world.select_identity(self.pod)


def uncached_evaluate(w: World, p: Pod) -> PodResult:
    with mock.patch.object(world_module, "_PodScope", UncachedScope):
        return w.evaluate(p, trace=True)


def sorted_pods(w: World) -> list[Pod]:
    return sorted(w.pods(), key=lambda p: (p.namespace, p.name))


@settings(max_examples=200, deadline=None)
@given(objs=st.lists(objects, max_size=14), cfg=st.one_of(st.none(), configs))
def test_shared_selection_gives_what_selecting_twice_gave(
    objs: list[dict[str, Any]], cfg: dict[str, Any] | None
) -> None:
    """Every pod's verdict, trace and findings with the shared per-pod selection equal those computed
    with no memo; the default request the verdict simulates through the scope is the world's own."""
    w = fresh({key_of(o): o for o in objs}, cfg)
    for p in sorted_pods(w):
        got = w.evaluate(p, trace=True)
        want = uncached_evaluate(w, p)
        assert got == want
        assert got.trace == want.trace
        assert got.to_json() == want.to_json()
        for target in ("imds", TARGET_NMI):
            scope = world_module._PodScope(w, p, tuple(w.matching_exceptions(p)), w.is_mic(p))
            via_scope = simulate_request(scope, DEFAULT_REQUEST, pod=p, assume_found=True, target=target)
            direct = simulate_request(w, DEFAULT_REQUEST, pod=p, assume_found=True, target=target)
            assert via_scope == direct
            assert via_scope.azure_identity == direct.azure_identity


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(objects, max_size=10),
    after=st.lists(objects, max_size=6),
    removed=st.integers(min_value=0, max_value=10),
    cfg=st.one_of(st.none(), configs),
)
def test_nothing_computed_for_one_world_answers_for_a_changed_one(
    before: list[dict[str, Any]], after: list[dict[str, Any]], removed: int, cfg: dict[str, Any] | None
) -> None:
    """Evaluate every pod, change the world (objects added, replaced, removed; the configuration), then
    evaluate again: the answers are those of a world built fresh from the final objects."""
    objs = {key_of(o): o for o in before}
    w = fresh(objs, None)
    for p in sorted_pods(w):
        w.evaluate(p)
    gone = list(objs)[:removed]
    for k in gone:
        w.remove(*k)
        del objs[k]
    rest = fresh({key_of(o): o for o in after}, cfg)
    for obj in objects_of(rest):
        w.upsert(obj)
    for o in after:
        objs[key_of(o)] = o
    w.set_config(rest.config)
    ref = fresh(objs, cfg)
    assert [w.evaluate(p) for p in sorted_pods(w)] == [ref.evaluate(p) for p in sorted_pods(ref)]


def test_evaluate_follows_a_binding_and_a_config_change() -> None:
    """The same Pod object, evaluated before and after its identity appears and after managed mode."""
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(p)
    first = w.evaluate(p)
    assert (first.token_request.status, first.identities) == (404, ())
    w.upsert(ident("id", "ns"))
    w.upsert(binding("b", "ns", "id", "s"))
    second = w.evaluate(p)
    assert (second.token_request.status, second.identities) == (200, ("ns/id",))
    w.remove("AzureIdentityBinding", "ns", "b")
    assert w.evaluate(p) == first
    w.upsert(binding("b", "ns", "id", "s"))
    w.set_config(config({"operationMode": "managed", "forceNamespaced": True}))
    managed = w.evaluate(p)
    assert managed.token_request.identity == "ns/id"
    assert managed == fresh_evaluate(w, p)


def objects_of(w: World) -> list[Model]:
    return [*w.pods(), *w.exceptions(), *w.identities(), *w.bindings(), *w.assigned_identities()]


def fresh_evaluate(w: World, p: Pod) -> PodResult:
    ref = World(w.config)
    for obj in objects_of(w):
        ref.upsert(obj)
    return ref.evaluate(p)
