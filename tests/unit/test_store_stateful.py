"""A hypothesis state machine over the store: after any sequence of pod, exception, identity, binding,
assigned-identity and config events (adds, changes, deletes, duplicates, deletes of what is not there,
relists that drop objects), the World the events built incrementally answers exactly as a World built
fresh from the final objects: every pod's verdict, every token request by IP, and the indexes behind
them (pods by node and IP, exceptions by namespace, bindings by selector, assigned identities by pod).

The store is the node agent's (``nmisim.agent.watch.WorldSink``: watch events into the engine's World); the
World and its indexes are the ones the operator keeps too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nmisim.agent.watch import WorldSink
from nmisim.engine.config import SimulationConfig
from nmisim.engine.http import HttpRequest
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
)
from nmisim.engine.resources import parse as parse_object
from nmisim.engine.world import World

NAMESPACES = ("a", "b")
NAMES = ("x", "y", "z")
NODES = ("n1", "n2")
IPS = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
SELECTORS = ("s1", "s2", "S1", "")
PROVIDER = "Microsoft.ManagedIdentity/userAssignedIdentities"
CLIENT_IDS = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")

Key = tuple[str, str, str]  # kind, namespace, name
names = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES))


def meta(ns: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": "1"}
    if labels is not None:
        out["labels"] = labels
    return out


pods = st.builds(
    lambda key, node, ip, sel, phase, host, mic: {
        "kind": KIND_POD,
        "metadata": {
            **meta(key[0], key[1], {"aadpodidbinding": sel} if sel else {"app": "web"}),
            **({"ownerReferences": [{"kind": "ReplicaSet", "name": "mic-7d9c"}]} if mic else {}),
        },
        "spec": {"nodeName": node, "hostNetwork": host},
        "status": {"phase": phase, "podIP": ip},
    },
    names,
    st.sampled_from(NODES),
    st.sampled_from(IPS),
    st.sampled_from(SELECTORS),
    st.sampled_from(("Running", "Pending", "Succeeded")),
    st.booleans(),
    st.booleans(),
)
exceptions = st.builds(
    lambda key, labels: {"kind": KIND_EXCEPTION, "metadata": meta(*key), "spec": {"podLabels": labels}},
    names,
    st.dictionaries(
        st.sampled_from(("app", "aadpodidbinding")), st.sampled_from(("web", "s1", "WEB")), max_size=2
    ),
)
identities = st.builds(
    lambda key, cid, kind, valid: {
        "kind": KIND_IDENTITY,
        "metadata": meta(*key),
        "spec": {
            "type": kind,
            "clientID": cid,
            # MIC assigns a type-0 identity only when its resourceID passes ValidateResourceID (§8.10)
            "resourceID": "/subscriptions/s/resourcegroups/r/providers/"
            + f"{PROVIDER if valid else 'p'}/{key[1]}",
        },
    },
    names,
    st.sampled_from(CLIENT_IDS),
    st.sampled_from((0, 1)),
    st.booleans(),
)
bindings = st.builds(
    lambda key, ident, sel: {
        "kind": KIND_BINDING,
        "metadata": meta(*key),
        "spec": {"azureIdentity": ident, "selector": sel},
    },
    names,
    st.sampled_from(NAMES),
    st.sampled_from(SELECTORS),
)
assigned = st.builds(
    lambda key, pod, ident, status, node: {
        "kind": KIND_ASSIGNED,
        "metadata": {**meta(*key), "labels": {"nodename": node}},
        "spec": {
            "pod": pod[1],
            "podNamespace": pod[0],
            "nodeName": node,
            "azureIdentityRef": {"metadata": {"name": ident[1], "namespace": ident[0]}, "spec": {"type": 0}},
        },
        "status": {"status": status},
    },
    names,
    names,
    names,
    st.sampled_from(("Assigned", "Created", "")),
    st.sampled_from(NODES),
)
objects = st.one_of(pods, exceptions, identities, bindings, assigned)
configs = st.builds(
    lambda mode, force, retry_after: {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": KIND_CONFIG,
        "metadata": {"name": "default", "resourceVersion": "1"},
        "spec": {
            "nmi": {
                "operationMode": mode,
                "forceNamespaced": force or mode == "managed",  # NMI refuses managed mode without it
                "setRetryAfterHeader": retry_after,
                "retryAttemptsForCreated": 1,
                "retryAttemptsForAssigned": 1,
                "findIdentityRetryIntervalSeconds": 1,
            }
        },
    },
    st.sampled_from(("standard", "managed")),
    st.booleans(),
    st.booleans(),
)


def key_of(obj: dict[str, Any]) -> Key:
    return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


def fresh(objects: dict[Key, dict[str, Any]], config: dict[str, Any] | None) -> World:
    cfg = SimulationConfig.from_k8s(config) if config is not None else None
    world = World(cfg)
    for obj in objects.values():
        parsed = parse_object(obj)
        assert parsed is not None and not isinstance(parsed, SimulationConfig)
        world.upsert(parsed)
    return world


def answers(world: World) -> dict[str, Any]:
    """Everything observable: verdicts, token requests by (node, IP), and the lists behind them."""
    out: dict[str, Any] = {
        "verdicts": [world.evaluate(p) for p in sorted(world.pods(), key=lambda p: (p.namespace, p.name))],
        "exceptions": {ns: [e.name for e in world.exceptions(ns)] for ns in NAMESPACES},
        "identities": [i.key for i in world.identities()],
        "bindings": [(b.namespace, b.name, b.selector) for b in world.bindings()],
        "assigned": [(a.namespace, a.name) for a in world.assigned_identities()],
        "counts": world.counts(),
    }
    for node in NODES:
        for ip in IPS:
            res = world.request(HttpRequest(), ip=ip, node=node)
            out[f"{node}/{ip}"] = (
                res.status,
                res.body,
                res.wait_seconds,
                [p.name for p in world.pods_at(node, ip)],
            )
    return out


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.store = WorldSink(self.world, {})
        self.objects: dict[Key, dict[str, Any]] = {}
        self.config: dict[str, Any] | None = None

    def _upsert(self, obj: dict[str, Any]) -> None:
        asyncio.run(self.store.upsert(obj["kind"], obj))

    def _delete(self, obj: dict[str, Any]) -> None:
        ns, name = key_of(obj)[1:]
        asyncio.run(self.store.delete(obj["kind"], ns, name, ""))

    @rule(obj=objects)
    def upsert(self, obj: dict[str, Any]) -> None:
        self._upsert(obj)
        self.objects[key_of(obj)] = obj

    @rule(obj=objects)
    def duplicate(self, obj: dict[str, Any]) -> None:
        """The same event twice (a watch restarted from an older resourceVersion replays it)."""
        for _ in range(2):
            self._upsert(obj)
        self.objects[key_of(obj)] = obj

    @rule(obj=objects)
    def delete(self, obj: dict[str, Any]) -> None:
        """A delete, of an object the store may not even hold."""
        self._delete(obj)
        self.objects.pop(key_of(obj), None)

    @rule(
        kind=st.sampled_from((KIND_POD, KIND_EXCEPTION, KIND_IDENTITY, KIND_BINDING, KIND_ASSIGNED)),
        data=st.data(),
    )
    def relist(self, kind: str, data: st.DataObject) -> None:
        """A relist (after 410 Gone) as the informer delivers it: the kind's objects now, and a delete for
        each held one gone meanwhile (kube/informer.py)."""
        held = [o for k, o in self.objects.items() if k[0] == kind]
        kept = data.draw(st.lists(st.sampled_from(held), unique_by=key_of) if held else st.just([]))
        for o in kept:
            self._upsert(o)
        for o in held:
            if key_of(o) not in {key_of(k) for k in kept}:
                self._delete(o)
        for k in [k for k in self.objects if k[0] == kind]:
            del self.objects[k]
        for o in kept:
            self.objects[key_of(o)] = o

    @rule(config=st.one_of(st.none(), configs))
    def configure(self, config: dict[str, Any] | None) -> None:
        if config is None:
            asyncio.run(self.store.delete(KIND_CONFIG, "", "default", ""))
        else:
            asyncio.run(self.store.upsert(KIND_CONFIG, config))
        self.config = config

    @invariant()
    def equals_a_fresh_world(self) -> None:
        assert answers(self.world) == answers(fresh(self.objects, self.config))


TestStore = StoreMachine.TestCase
TestStore.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
