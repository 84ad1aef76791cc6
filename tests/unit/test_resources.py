"""The resource registry (nmisim.engine.resources) against what it describes: the CRDs in crds/, the
paths every edge uses, and the RBAC the manifests grant (each watched kind may be listed and watched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.agent.watch import sources
from nmisim.controller.controller import WATCHED
from nmisim.engine.models import KIND_CONFIG, KIND_EXCEPTION, KIND_POD
from nmisim.engine.resources import AAD_KINDS, KIND_EVENT, KIND_VERDICT, RESOURCES, resource
from nmisim.sources.cluster import AAD_KINDS as CLI_AAD_KINDS

ROOT = Path(__file__).resolve().parents[2]


def crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[doc["spec"]["names"]["kind"]] = doc
    return out


def rules(path: Path) -> list[dict[str, Any]]:
    role = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ClusterRole")
    found: list[dict[str, Any]] = role["rules"]
    return found


def allowed(rule_list: list[dict[str, Any]], group: str, plural: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and plural in r["resources"] and verb in r["verbs"] for r in rule_list)


@pytest.mark.parametrize("kind", sorted(crds()))
def test_every_crd_is_in_the_registry_as_the_crd_says(kind: str) -> None:
    crd = crds()[kind]["spec"]
    r = resource(kind)
    assert (r.group, r.plural) == (crd["group"], crd["names"]["plural"])
    assert r.version in {v["name"] for v in crd["versions"] if v.get("served")}
    assert r.namespaced == (crd["scope"] == "Namespaced")


def test_paths() -> None:
    assert resource(KIND_POD).path() == "/api/v1/pods"
    assert resource(KIND_EVENT).path("ns") == "/api/v1/namespaces/ns/events"
    assert (
        resource(KIND_EXCEPTION).path("ns", "e", "status")
        == "/apis/aadpodidentity.k8s.io/v1/namespaces/ns/azurepodidentityexceptions/e/status"
    )
    # cluster-scoped: a namespace is never part of the path
    assert resource(KIND_CONFIG).path("ns", "default", "status") == (
        "/apis/nmisim.dev/v1alpha1/simulationconfigs/default/status"
    )
    assert resource(KIND_VERDICT).api_version == "nmisim.dev/v1alpha1"


def test_every_edge_takes_its_paths_from_the_registry() -> None:
    assert all(w.path == resource(w.kind).path() for w in WATCHED)
    assert {s.kind: s.path for s in sources("n1")} == {
        k: resource(k).path() for k in (KIND_POD, *AAD_KINDS, KIND_CONFIG)
    }
    assert tuple((k, resource(k).plural) for k in AAD_KINDS) == CLI_AAD_KINDS


@pytest.mark.parametrize(
    "manifest,kinds",
    [
        (ROOT / "manifests" / "rbac.yaml", [k for k in RESOURCES if k != KIND_EVENT]),
        (ROOT / "manifests" / "nmi" / "rbac.yaml", [s.kind for s in sources("n1")]),
    ],
    ids=["operator", "agent"],
)
def test_rbac_lets_each_watched_kind_be_listed_and_watched(manifest: Path, kinds: list[str]) -> None:
    granted = rules(manifest)
    for kind in kinds:
        r = resource(kind)
        for verb in ("list", "watch"):
            assert allowed(granted, r.group, r.plural, verb), (manifest.name, kind, verb)
