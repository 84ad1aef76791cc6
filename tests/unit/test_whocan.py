"""``nmisim who-can``: every pod that can obtain an identity, and how, from the engine's simulated requests
(nmi-semantics §2 binding selection and /host/token, §3 hostNetwork, §7 IMDS, §8.4 lookup by IP, §8.9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import CID1, CID2, binding, config, exc, ident, pod, rid, world

from nmisim.cli.main import main
from nmisim.engine.http import DEFAULT_QUERY, HttpRequest
from nmisim.engine.whocan import (
    HOW_BINDING,
    HOW_EXEMPT,
    HOW_HOST_NETWORK,
    HOW_HOST_TOKEN,
    HOW_NMI_PORT,
    WhoCanError,
    resolve,
    who_can,
)

API = "aadpodidentity.k8s.io/v1"


def _pod(
    name: str,
    ns: str,
    labels: dict[str, str] | None = None,
    *,
    node: str = "node-1",
    ip: str = "10.0.0.1",
    host_network: bool = False,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"nodeName": node, "hostNetwork": host_network},
        "status": {"phase": "Running", "podIP": ip},
    }


def _identity(name: str, ns: str, cid: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AzureIdentity",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": 0, "clientID": cid, "resourceID": rid(name)},
    }


def _binding(name: str, ns: str, identity: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AzureIdentityBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"azureIdentity": identity, "selector": selector},
    }


def _exception(name: str, ns: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AzurePodIdentityException",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podLabels": labels},
    }


def _config(nmi: dict[str, Any] | None = None, imds: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": {"nmi": nmi or {}, "imds": imds or {}},
    }


def _write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return str(path)


def _base_objects() -> list[dict[str, Any]]:
    """shop/web bound in its own namespace; finance/reports bound to platform's identity (cross-namespace);
    shop/worker excepted; monitoring/agent hostNetwork on node-1, monitoring/far hostNetwork on node-2."""
    return [
        _identity("web-id", "shop", CID1),
        _binding("web-binding", "shop", "web-id", "web"),
        _identity("shared-id", "platform", CID2),
        _binding("shared-binding", "platform", "shared-id", "reports"),
        _pod("web", "shop", {"aadpodidbinding": "web"}, ip="10.0.0.2"),
        _pod("reports", "finance", {"aadpodidbinding": "reports"}, ip="10.0.0.3"),
        _pod("worker", "shop", {"app": "worker"}, ip="10.0.0.4"),
        _exception("worker-exc", "shop", {"app": "worker"}),
        _pod("agent", "monitoring", ip="192.168.0.1", host_network=True),
        _pod("far", "monitoring", node="node-2", ip="192.168.0.2", host_network=True),
    ]


def _run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, identity: str, *extra: str, docs: list[dict[str, Any]]
) -> tuple[int, Any, str]:
    f = _write(tmp_path / "in.yaml", *docs)
    code = main(["who-can", identity, "-f", f, "-o", "json", *extra])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def _rows(doc: Any) -> set[tuple[str, str]]:
    return {(f"{r['namespace']}/{r['name']}", r["how"]) for r in doc["results"]}


def test_same_namespace_binding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, doc, err = _run(capsys, tmp_path, "web-id", docs=_base_objects())
    assert code == 0, err
    # the pod bound to it, and the hostNetwork pod on the same node through /host/token; not node-2's
    assert _rows(doc) == {("shop/web", HOW_BINDING), ("monitoring/agent", HOW_HOST_TOKEN)}
    row = next(r for r in doc["results"] if r["how"] == HOW_BINDING)
    assert row["crossNamespace"] is False
    assert "AzureIdentityBinding shop/web-binding" in row["via"] and row["identity"] == "shop/web-id"
    assert row["ask"] == "client_id" and row["workload"] is None
    assert doc["identity"]["azureIdentities"] == ["shop/web-id"]
    assert doc["hostToken"] == [{"node": "node-1", "pod": "shop/web", "identity": "shop/web-id"}]
    assert doc["summary"] == {
        "pods": 2, "binding": 1, "exempt": 0, "hostNetwork": 0, "nmi-port": 0, "host-token": 1,
    }  # fmt: skip


def test_cross_namespace_binding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, doc, _ = _run(capsys, tmp_path, "platform/shared-id", docs=_base_objects())
    assert code == 0
    row = next(r for r in doc["results"] if r["name"] == "reports")
    assert row["how"] == HOW_BINDING and row["crossNamespace"] is True
    assert "AzureIdentityBinding platform/shared-binding" in row["via"] and "cross-namespace" in row["via"]


def test_force_namespaced_drops_the_cross_namespace_binding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = [*_base_objects(), _config(nmi={"forceNamespaced": True})]
    code, doc, _ = _run(capsys, tmp_path, "shared-id", docs=docs)
    assert code == 0
    assert doc["results"] == [] and doc["hostToken"] == []
    # the same-namespace binding still works under forceNamespaced
    code, doc, _ = _run(capsys, tmp_path, "web-id", docs=docs)
    assert ("shop/web", HOW_BINDING) in _rows(doc)


def test_exempt_pod_only_when_the_vm_carries_the_identity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, doc, _ = _run(capsys, tmp_path, "web-id", docs=_base_objects())
    assert code == 0 and ("shop/worker", HOW_EXEMPT) not in _rows(doc)
    imds = {"userAssigned": [{"clientID": CID1, "resourceID": rid("web-id")}]}
    code, doc, _ = _run(capsys, tmp_path, "web-id", docs=[*_base_objects(), _config(imds=imds)])
    rows = _rows(doc)
    assert ("shop/worker", HOW_EXEMPT) in rows
    worker = next(r for r in doc["results"] if r["name"] == "worker")
    assert "AzurePodIdentityException shop/worker-exc" in worker["via"]
    # the VM carries it, so both hostNetwork pods reach it at IMDS directly
    assert {("monitoring/agent", HOW_HOST_NETWORK), ("monitoring/far", HOW_HOST_NETWORK)} <= rows
    assert doc["identity"]["onAllVMs"] is True
    # only node-2's VM carries it: the exempt pod on node-1 cannot, the hostNetwork pod on node-2 can
    imds2 = {"nodes": {"node-2": {"userAssigned": [{"clientID": CID1}]}}}
    code, doc, _ = _run(capsys, tmp_path, CID1, docs=[*_base_objects(), _config(imds=imds2)])
    rows = _rows(doc)
    assert ("shop/worker", HOW_EXEMPT) not in rows and ("monitoring/agent", HOW_HOST_NETWORK) not in rows
    assert ("monitoring/far", HOW_HOST_NETWORK) in rows
    assert doc["identity"]["vmNodes"] == ["node-2"]


def test_hostnetwork_pod_with_a_binding_is_reached_through_nmi_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _base_objects()
    docs[8] = _pod("agent", "monitoring", {"aadpodidbinding": "web"}, ip="192.168.0.1", host_network=True)
    code, doc, _ = _run(capsys, tmp_path, "web-id", docs=docs)
    assert code == 0
    rows = _rows(doc)
    # its own IMDS traffic never reaches NMI (no binding row), but NMI's port looked up by its IP serves it
    assert ("monitoring/agent", HOW_NMI_PORT) in rows and ("monitoring/agent", HOW_BINDING) not in rows
    # a second Running pod on the same IP: NMI's lookup gets two pods and answers 500
    docs.append(_pod("other", "monitoring", ip="192.168.0.1", host_network=True))
    code, doc, _ = _run(capsys, tmp_path, "web-id", docs=docs)
    assert ("monitoring/agent", HOW_NMI_PORT) not in _rows(doc)


def test_unknown_identity_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, tmp_path, "nobody", docs=_base_objects())
    assert code == 2 and out == ""
    assert err.startswith("nmisim: error: no AzureIdentity or VM identity matches 'nobody'")
    assert err.count("\n") == 1


def test_ambiguous_name_lists_the_candidates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = {**_identity("web-id", "other", CID2), "spec": {"clientID": CID2, "resourceID": rid("other-web")}}
    docs = [*_base_objects(), other]
    code, _, err = _run(capsys, tmp_path, "web-id", docs=docs)
    assert code == 2 and err.count("\n") == 1
    assert "ambiguous" in err and "other/web-id" in err and "shop/web-id" in err
    code, doc, _ = _run(capsys, tmp_path, "shop/web-id", docs=docs)
    assert code == 0 and doc["identity"]["azureIdentities"] == ["shop/web-id"]


def test_ids_match_ignoring_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for query in (CID1.upper(), rid("web-id").upper()):
        code, doc, err = _run(capsys, tmp_path, query, docs=_base_objects())
        assert code == 0, err
        assert ("shop/web", HOW_BINDING) in _rows(doc)


def test_table_and_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = _write(tmp_path / "in.yaml", *_base_objects())
    assert main(["who-can", "web-id", "-f", f]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[3].split() == ["NAMESPACE", "NAME", "WORKLOAD", "HOW", "ASK", "WAIT", "VIA"]
    assert "2 pods can obtain it: 1 binding, 1 host-token" in out
    assert "node node-1: podns/podname shop/web" in out
    assert main(["who-can", "web-id", "-f", f, "-o", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["who-can", "web-id", "-f", f, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == as_json
    assert main(["who-can", "nobody-else", "-f", f]) == 2


# ------------------------------------------------------------------ engine level
def test_rows_are_what_the_request_simulation_gives() -> None:
    """Every binding/exempt/hostNetwork row is a 200 for that identity from World.request; every other
    Running pod asking for it gets no token for it."""
    shop_id = ident("web-id", "shop", CID1)
    w = world(
        shop_id,
        binding("b", "shop", "web-id", "web"),
        pod("web", "shop", {"aadpodidbinding": "web"}, ip="10.0.0.2"),
        pod("other", "shop", {"aadpodidbinding": "nope"}, ip="10.0.0.3"),
        pod("x", "shop", {"app": "x"}, ip="10.0.0.4"),
        exc("e", "shop", {"app": "x"}),
        cfg=config(imds={"userAssigned": [{"clientID": CID1}]}),
    )
    result = who_can(w, "web-id")
    ask = HttpRequest(query=(*DEFAULT_QUERY, ("client_id", CID1)))
    listed = {(r.namespace, r.name) for r in result.rows}
    assert listed == {("shop", "web"), ("shop", "x")}
    for p in w.pods():
        res = w.request(ask, pod=p)
        got = res.status == 200 and (res.identity in ("shop/web-id", CID1))
        assert got == ((p.namespace, p.name) in listed), (p.name, res.status, res.identity)


def test_resolve_expands_to_every_object_with_the_same_ids() -> None:
    w = world(
        ident("a", "ns1", CID1),
        ident("b", "ns2", CID1.upper(), resource_id=rid("b")),
        ident("c", "ns3", CID2),
        cfg=config(imds={"nodes": {"node-9": {"userAssigned": [{"resourceID": rid("b")}]}}}),
    )
    # an AzureIdentity stands for its own two IDs: ns2/b shares the clientID (ignoring case), but the VM
    # identity known only by b's resourceID is not a's
    p = resolve(w, "ns1/a")
    assert p.azure_identities == ("ns1/a", "ns2/b")
    assert p.client_ids == (CID1,) and p.resource_ids == (rid("a"),)
    assert p.vm_nodes == () and not p.matches("", rid("b"))
    # a clientID alone takes the resourceIDs of every object with it, so b's VM identity is this one
    p = resolve(w, CID1.upper())
    assert p.resource_ids == (rid("a"), rid("b")) and p.vm_nodes == ("node-9",) and not p.on_all_vms
    assert p.matches("", rid("b").lower()) and not p.matches(CID2, "")
    with pytest.raises(WhoCanError, match="no AzureIdentity or VM identity matches 'ns1/zzz'"):
        resolve(w, "ns1/zzz")
    with pytest.raises(WhoCanError, match="system-assigned identity"):
        resolve(w, "system-assigned")


def test_system_assigned_reaches_hostnetwork_pods_only() -> None:
    w = world(
        pod("h", "mon", host_network=True, ip="192.168.0.1"),
        pod("x", "shop", {"app": "x"}),
        exc("e", "shop", {"app": "x"}),
        pod("web", "shop", {"aadpodidbinding": "web"}, ip="10.0.0.2"),
        cfg=config(imds={"systemAssigned": True}),
    )
    result = who_can(w, "system-assigned")
    # an exempt pod asking with no client_id gets IMDS's default, the system-assigned identity, too
    assert {(r.name, r.how) for r in result.rows} == {("h", HOW_HOST_NETWORK), ("x", HOW_EXEMPT)}
    assert result.host_token == ()
