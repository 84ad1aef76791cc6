"""nmi-semantics §8: NMI v1.8.17 (tag d17ea6a), gorilla/mux v1.8.0 and go-autorest adal v0.9.23, one table
per item, each citing the upstream place; then what was found beside them (see docs/differences.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import CID1, CID2, assigned, binding, config, exc, ident, pod, rid, world

from nmisim.cli.main import main
from nmisim.engine.http import HttpRequest
from nmisim.engine.identities import redact_client_id
from nmisim.engine.imds import FAKE_TOKEN_PREFIX
from nmisim.engine.models import AzureIdentity, Pod
from nmisim.engine.world import World

R = (("api-version", "2018-02-01"), ("resource", "https://management.azure.com/"))
RQ = "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
MD = (("Metadata", "true"),)
MANAGED = {"operationMode": "managed", "forceNamespaced": True}


def bound(cfg: dict[str, Any] | None = None, imds: dict[str, Any] | None = None) -> tuple[World, Pod]:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p, cfg=config(cfg, imds))
    return w, p


# --- §8.1 gorilla/mux v1.8.0 mux.go Router.ServeHTTP + cleanPath; server.go Run builds mux.NewRouter() ---

CLEANING = [
    # (raw path, blockInstanceMetadata, status, Location or route)
    ("//metadata/identity/oauth2/token", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    ("/metadata/identity/oauth2/token/../token", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    ("/metadata/./instance/compute", True, 301, f"/metadata/instance/compute?{RQ}"),  # no instance block
    ("/metadata//instance", True, 301, f"/metadata/instance?{RQ}"),
    ("/host//token", False, 301, f"/host/token?{RQ}"),
    ("/metadata/identity/oauth2/token/.", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    ("/metadata/identity/oauth2/token//", False, 301, f"/metadata/identity/oauth2/token/?{RQ}"),
    ("/../metadata/identity/oauth2/token", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    # URL.Path is the decoded path (useEncodedPath is off): %2e%2e is '..', %2F is '/'
    ("/metadata/identity/oauth2/%2e%2e/oauth2/token", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    ("/metadata%2F%2Fidentity/oauth2/token", False, 301, f"/metadata/identity/oauth2/token?{RQ}"),
    # url.URL.String escapes the cleaned path (net/url escape, encodePath)
    ("//metadata/a b", False, 301, f"/metadata/a%20b?{RQ}"),
    # clean paths are not redirected; a trailing slash is kept by cleanPath
    ("/metadata/identity/oauth2/token/", False, 200, "token"),
    ("/metadata/instance/", True, 403, "instance-blocked"),
    ("/metadata/identity/oauth2/token", False, 200, "token"),
]


@pytest.mark.parametrize(("path", "block", "status", "where"), CLEANING)
def test_8_1_mux_cleans_the_path_before_any_route(path: str, block: bool, status: int, where: str) -> None:
    w, p = bound({"blockInstanceMetadata": block})
    res = w.request(HttpRequest(path=path, query=R, headers=()), pod=p)  # no Metadata header
    if status == 301:
        assert (res.route, res.status, res.body) == ("redirect", 301, "")
        assert res.headers == {"Location": where, "Content-Length": "0"}
        # no handler ran: no header check, no pod lookup, no log line
        assert res.nmi_log == () and res.identity is None
        assert not any("Metadata" in s for s in res.explanation)
    else:
        assert res.route == where
        w2, p2 = bound({"blockInstanceMetadata": block})
        res = w2.request(HttpRequest(path=path, query=R, headers=MD), pod=p2)
        assert res.status == status


def test_8_1_no_pod_lookup_behind_a_redirect() -> None:
    res = world().request(HttpRequest(path="//metadata/identity/oauth2/token"), ip="10.9.9.9", node="n")
    assert (res.status, res.wait_seconds) == (301, 0)  # an unknown IP would be 500 after 1.2 s


def test_8_1_location_keeps_the_raw_query() -> None:
    w, p = bound()
    raw = "resource=https://vault.azure.net&x=%41"
    res = w.request(HttpRequest(path="/a/../metadata/identity/oauth2/token", raw=raw), pod=p)
    assert res.headers["Location"] == f"/metadata/identity/oauth2/token?{raw}"
    res = w.request(HttpRequest(path="//x", query=()), pod=p)
    assert res.headers["Location"] == "/x"  # no query, no '?'


def test_8_1_malformed_escape_is_answered_by_net_http() -> None:
    """net/http server.go (*conn).serve: url.ParseRequestURI fails -> '400 Bad Request', no handler."""
    w, p = bound()
    res = w.request(HttpRequest(path="/metadata/identity/oauth2/token%zz"), pod=p)
    assert (res.route, res.status, res.body) == ("bad-request", 400, "400 Bad Request")
    assert res.headers == {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"}


# --- §8.2 server.go: only msiHandler and hostHandler call parseRemoteAddr ------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "route", "status"),
    [
        ("/metadata/identity/oauth2/token", MD, "token", 500),
        ("/host/token", (("podns", "ns"), ("podname", "app")), "host-token", 500),
        ("/metadata/instance", MD, "proxy", 200),
        ("/metadata/identity\\oauth2\\token", (), "invalid-path", 400),
        ("/Metadata/instance", (), "instance-blocked", 403),
    ],
)
def test_8_2_only_token_and_host_routes_read_the_remote_address(
    path: str, headers: tuple[tuple[str, str], ...], route: str, status: int
) -> None:
    w = world(pod("a", "ns", {}), cfg=config({"blockInstanceMetadata": path == "/Metadata/instance"}))
    res = w.request(HttpRequest(path=path, query=R, headers=headers), ip="fd00::1", node="node-1")
    assert (res.route, res.status) == (route, status)
    if route == "token":
        assert res.body == "request remote address is empty\n"


# --- §8.3 server.go metadataNotSpecifiedError: fmt.Fprintln ---------------------------------------------


@pytest.mark.parametrize(
    "path", ["/metadata/identity/oauth2/token", "/metadata/instance", "/latest/meta-data"]
)
def test_8_3_metadata_header_400_body_ends_with_newline(path: str) -> None:
    w, p = bound()
    res = w.request(HttpRequest(path=path, query=R, headers=()), pod=p)
    assert res.status == 400
    assert res.body == (
        '{"error":"invalid_request","error_description":"Required metadata header not specified"}\n'
    )
    assert res.headers == {"Content-Type": "application/json; charset=utf-8", "Content-Length": "89"}


# --- §8.4 pkg/k8s/client.go GetPodInfo: "failed to match pod IP %s with %v" of []*v1.Pod ----------------


@pytest.mark.parametrize("phases", [("Running", "Running"), ("Pending", "Running"), ("Running",) * 3])
def test_8_4_shared_ip_error_keeps_the_prefix(phases: tuple[str, ...]) -> None:
    pods = [pod(f"p{i}", "ns", {}, ip="10.0.0.7", phase=ph) for i, ph in enumerate(phases)]
    res = world(*pods).request(ip="10.0.0.7", node="node-1")
    assert res.status == 500
    assert res.body.startswith("failed to match pod IP 10.0.0.7 with [") and res.body.endswith("]\n")


@pytest.mark.parametrize("n", [2, 3])
def test_8_4_shared_ip_error_is_framed_as_nmis_length(n: int) -> None:
    """NMI prints every pod in full (v1.Pod String(), about 6 KB each): past Go's 2048-byte buffer the
    body is chunked, even though nmisim's list of names is short."""
    pods = [pod(f"p{i}", "ns", {}, ip="10.0.0.7") for i in range(n)]
    res = world(*pods).request(ip="10.0.0.7", node="node-1")
    assert len(res.body) < 2048
    assert res.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in res.headers


def host_bound(*others: Pod, cfg: dict[str, Any] | None = None) -> World:
    hn = pod("hn", "ns", {"aadpodidbinding": "s"}, host_network=True, ip="10.240.0.4")
    return world(ident("id", "ns", CID1), binding("b", "ns", "id", "s"), hn, *others, cfg=config(cfg))


# (target, other pods on the node IP, status, route, served by, identity); pkg/k8s/client.go getPodList:
# status.podIP and phase Pending/Running only, hostNetwork never looked at
NODE_IP_LOOKUP = [
    ("nmi", (), 200, "token", "nmi", "ns/id"),
    ("nmi", (pod("kp", "kube-system", {}, host_network=True, ip="10.240.0.4"),), 500, "token", "nmi", None),
    ("nmi", (pod("kp", "kube-system", {}, host_network=True, ip="10.240.0.4", phase="Pending"),), 500,
     "token", "nmi", None),
    ("nmi", (pod("job", "kube-system", {}, host_network=True, ip="10.240.0.4", phase="Failed"),), 200,
     "token", "nmi", "ns/id"),
    ("nmi", (pod("kp", "kube-system", {}, host_network=True, ip="10.240.0.4", node="node-2"),), 200,
     "token", "nmi", "ns/id"),
    # to 169.254.169.254 a hostNetwork caller never passes PREROUTING: IMDS answers it
    ("imds", (), 400, "direct", "imds", None),
]  # fmt: skip


@pytest.mark.parametrize(("target", "others", "status", "route", "served", "identity"), NODE_IP_LOOKUP)
def test_8_4_nmis_port_looks_host_network_callers_up_by_ip(  # noqa: PLR0917
    target: str, others: tuple[Pod, ...], status: int, route: str, served: str, identity: str | None
) -> None:
    w = host_bound(*others)
    res = w.request(ip="10.240.0.4", node="node-1", target=target)
    assert (res.status, res.route, res.served_by, res.identity) == (status, route, served, identity)
    if status == 200:
        assert res.headers["Content-Type"] == "application/json"  # NMI's, not IMDS's "; charset=utf-8"
        assert json.loads(res.body)["access_token"].endswith(CID1)
    if status == 500:
        assert res.body.startswith("failed to match pod IP 10.240.0.4 with [")
    hn = w.get_pod("ns", "hn")
    assert hn is not None
    assert w.request(pod=hn, target=target).status == status  # --pod does the same lookup


def test_8_4_a_pods_own_traffic_is_the_same_on_nmis_port() -> None:
    w, p = bound()
    assert w.request(pod=p, target="nmi").body == w.request(pod=p).body
    assert any(
        "looks the caller up by its source IP" in s for s in w.request(pod=p, target="nmi").explanation
    )


def test_8_4_finding_host_network_identity_exposed() -> None:
    alone = host_bound()
    hn = alone.get_pod("ns", "hn")
    assert hn is not None
    found = [f for f in alone.evaluate(hn).findings if f.code == "HostNetworkIdentityExposed"]
    assert len(found) == 1 and "the only Pending/Running pod with IP 10.240.0.4" in found[0].message
    assert "gets identity ns/id" in found[0].message
    shared = host_bound(pod("kp", "kube-system", {}, host_network=True, ip="10.240.0.4"))
    found = [f for f in shared.evaluate(hn).findings if f.code == "HostNetworkIdentityExposed"]
    assert len(found) == 1 and "500 'failed to match pod IP'" in found[0].message
    # no identity to take: unbound, exempt (NMI asks IMDS for the VM's own identity), finished
    unbound = pod("hn", "ns", {}, host_network=True, ip="10.240.0.4")
    exempt = pod("hn", "ns", {"aadpodidbinding": "s", "app": "x"}, host_network=True, ip="10.240.0.4")
    gone = pod("hn", "ns", {"aadpodidbinding": "s"}, host_network=True, ip="10.240.0.4", phase="Succeeded")
    for p, extra in ((unbound, ()), (exempt, (exc("e", "ns", {"app": "x"}),)), (gone, ())):
        w = world(ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p, *extra)
        assert "HostNetworkIdentityExposed" not in w.evaluate(p).finding_codes


def test_8_4_request_cli_to_nmi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "hn.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hn, namespace: ns, labels: {aadpodidbinding: s}}\n"
        "spec: {nodeName: node-1, hostNetwork: true}\nstatus: {phase: Running, podIP: 10.240.0.4}\n---\n"
        "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: id, namespace: ns}\n"
        f"spec: {{type: 0, clientID: {CID1}, resourceID: {rid('id')}}}\n---\n"
        "apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
        "metadata: {name: b, namespace: ns}\nspec: {azureIdentity: id, selector: s}\n"
    )
    base = ["request", "-f", str(f), "--ip", "10.240.0.4", "--node", "node-1", "-o", "json"]
    assert main([*base, "--to", "nmi"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["route"], out["status"], out["identity"]) == ("token", 200, "ns/id")
    assert any("NMI finds Pod ns/hn by IP 10.240.0.4" in s for s in out["explanation"])
    assert main(base) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["route"] == "direct"
    assert any("target nmi" in s for s in out["explanation"])
    assert main([*base, "--to", "elsewhere"]) == 2


# --- §8.5 adal token_1.13.go MultiTenantServicePrincipalToken.RefreshWithContext (%w); pkg/auth/errors.go


def sp(tenant: str, aux: list[str] | None = None, client_id: str = CID1) -> AzureIdentity:
    spec: dict[str, Any] = {"type": 1, "clientID": client_id, "tenantID": tenant}
    if aux is not None:
        spec["auxiliaryTenantIDs"] = aux
    return AzureIdentity.from_k8s({"metadata": {"name": "sp", "namespace": "ns"}, "spec": spec})


@pytest.mark.parametrize(
    ("identity", "status", "prefix"),
    [
        (sp(""), 403, "adal: Refresh request failed. Status Code = '400'."),  # TokenRefreshError
        (sp("", ["t1"]), 503, "failed to refresh primary token: adal: Refresh request failed."),
        (sp("t0", ["t1", ""]), 503, "failed to refresh auxiliary token: adal: Refresh request failed."),
        (sp("t0", ["t1"]), 200, None),
        (sp("t0"), 200, None),
    ],
)
def test_8_5_aad_refusal_is_403_single_tenant_503_multi_tenant(
    identity: AzureIdentity, status: int, prefix: str | None
) -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    res = world(identity, binding("b", "ns", "sp", "s"), p).request(pod=p)
    assert res.status == status
    if prefix:
        assert res.body.startswith(prefix) and "AADSTS50059" in res.body
        # §8.4: adal.NewOAuthConfig always sets api-version=1.0; refreshInternal prints req.URL.String()
        assert res.body.endswith(" Endpoint https://login.microsoftonline.com/oauth2/token?api-version=1.0\n")


def test_8_4_adal_endpoint_resolves_against_a_custom_ad_endpoint() -> None:
    """url.URL.Parse of ``/oauth2/token?api-version=1.0`` (empty tenant) replaces the endpoint's path."""
    spec = {
        "type": 1,
        "clientID": CID1,
        "tenantID": "",
        "adEndpoint": "https://login.example.test/some/path/",
    }
    identity = AzureIdentity.from_k8s({"metadata": {"name": "sp", "namespace": "ns"}, "spec": spec})
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    res = world(identity, binding("b", "ns", "sp", "s"), p).request(pod=p)
    assert res.body.endswith(" Endpoint https://login.example.test/oauth2/token?api-version=1.0\n")


# --- §8.6 pkg/k8s/client.go getReplicasetName: strings.EqualFold(owner.Kind, "ReplicaSet") ---------------


@pytest.mark.parametrize(
    ("kind", "mic"),
    [("ReplicaSet", True), ("replicaset", True), ("REPLICASET", True), ("replica\u017fet", True),
     ("Deployment", False), ("ReplicaSets", False)],
)  # fmt: skip
def test_8_6_owner_kind_compared_ignoring_case(kind: str, mic: bool) -> None:
    p = Pod.from_k8s(
        {"metadata": {"name": "mic-1", "namespace": "default",
                      "ownerReferences": [{"kind": kind, "name": "mic-7d9c6b5f4"}]}}
    )  # fmt: skip
    r = world(p).evaluate(p)
    assert r.mic_shortcut is mic
    assert r.verdict == ("exempt" if mic else "intercepted")


# --- §8.7 pkg/nmi/standard.go listPodIDsWithRetry: the prefix is on the CREATED-state error only ---------


@pytest.mark.parametrize(
    ("statuses", "query", "expected"),
    [
        ([], (("client_id", CID2),), f"clientID in request: {redact_client_id(CID2)}, getting assigned "
         "identities for pod ns/p in CREATED state failed after 16 attempts"),
        (["Created"], (("client_id", CID1),), "getting assigned identities for pod ns/p in ASSIGNED state "
         "failed after 20 attempts"),
        (["Created"], (("msi_res_id", rid("id")),), "getting assigned identities for pod ns/p in ASSIGNED "
         "state failed after 20 attempts"),
        (["Created"], (), "getting assigned identities for pod ns/p in ASSIGNED state failed after 20"),
    ],
)  # fmt: skip
def test_8_7_retry_error_prefix_only_on_created_state(
    statuses: list[str], query: tuple[tuple[str, str], ...], expected: str
) -> None:
    p = pod("p", "ns", {"aadpodidbinding": "s"})
    i = ident("id", "ns", CID1)
    objs: list[object] = [i, binding("b", "ns", "id", "s"), p]
    objs += [assigned(f"a{n}", "p", "ns", i, st) for n, st in enumerate(statuses)]
    if not statuses:
        objs.append(assigned("other", "q", "ns", i, "Assigned"))
    res = world(*objs).request(HttpRequest(query=(("resource", "r"), *query)), pod=p)
    assert res.status == 404
    assert res.body.startswith(expected)


# --- §8.8 pkg/nmi/managed.go GetIdentities (one pass) and pkg/k8s/client.go GetPod ---------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ((), "ns/a"),
        ((("client_id", CID2),), "ns/b"),
        ((("msi_res_id", rid("a")),), "ns/a"),
        # one pass: a is first and matches the res_id, although b matches the client_id
        ((("client_id", CID2), ("msi_res_id", rid("a"))), "ns/a"),
        ((("client_id", CID1.upper()),), None),  # case-sensitive
    ],
)
def test_8_8_managed_selection_is_one_pass(query: tuple[tuple[str, str], ...], expected: str | None) -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("a", "ns", CID1), ident("b", "ns", CID2), binding("ba", "ns", "a", "s"),
              binding("bb", "ns", "b", "s"), p, cfg=config(MANAGED))  # fmt: skip
    res = w.request(HttpRequest(query=(("resource", "r"), *query)), pod=p)
    assert res.identity == expected
    assert res.status == (200 if expected else 404)


@pytest.mark.parametrize(("target", "node"), [("ghost", "node-1"), ("app", "node-2")])
def test_8_8_managed_missing_pod_text(target: str, node: str) -> None:
    w, _ = bound(MANAGED)
    h = (("podns", "ns"), ("podname", target))
    res = w.request(HttpRequest(path="/host/token", query=R, headers=h), ip="127.0.0.1", node=node)
    assert res.status == 404
    assert res.body == f"failed to get pod ns/{target}, error: pod ns/{target} doesn't exist\n"


# --- §8.9 pkg/crd/crd.go NewCRDClientLite + NodeNameFilter (--enableScaleFeatures), pkg/k8s/client.go -----


@pytest.mark.parametrize(
    ("mode", "nmi_node", "status", "wait"),
    [
        ({}, "node-1", 200, 0),
        ({}, "node-2", 404, 80),  # standard: its AzureAssignedIdentities are labelled nodename=node-1
        (MANAGED, "node-1", 200, 0),
        (MANAGED, "node-2", 404, 0),  # managed: the pod is not in node-2's cache
    ],
)
def test_8_9_host_token_sees_only_its_own_node(
    mode: dict[str, Any], nmi_node: str, status: int, wait: int
) -> None:
    w, _ = bound(mode or None)
    h = (("podns", "ns"), ("podname", "app"))
    res = w.request(HttpRequest(path="/host/token", query=R, headers=h), ip="127.0.0.1", node=nmi_node)
    assert (res.status, res.wait_seconds) == (status, wait)


def test_8_9_host_token_with_real_assigned_identities_on_another_node() -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    i = ident("id", "ns")
    w = world(i, binding("b", "ns", "id", "s"), assigned("a", "app", "ns", i, "Assigned"), p)
    h = (("podns", "ns"), ("podname", "app"))
    for node, status in (("node-1", 200), ("node-2", 404)):
        res = w.request(HttpRequest(path="/host/token", query=R, headers=h), ip="127.0.0.1", node=node)
        assert res.status == status, node


# --- §8.10 pkg/mic/mic.go convertIDListToMap; pkg/utils/utils.go ValidateResourceID ---------------------


@pytest.mark.parametrize(
    ("type_", "resource_id", "served"),
    [
        (0, "", False),
        (0, "/sub/x", False),
        (0, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x",
         True),  # (?i)
        (0, "/SUBSCRIPTIONS/s/RESOURCEGROUPS/rg/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES/x",
         True),
        (0, "prefix/subscriptions/s/resourcegroups/rg/providers/MicrosoftXManagedIdentity/"
         "userAssignedIdentities/x", True),  # unanchored; '.' is any character
        (0, "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/",
         False),  # (.+) needs a name
        (1, "", True),  # only type 0 is validated
    ],
)  # fmt: skip
def test_8_10_mic_drops_type0_identities_with_invalid_resource_id(
    type_: int, resource_id: str, served: bool
) -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    spec = {"type": type_, "clientID": CID1, "resourceID": resource_id, "tenantID": "t"}
    i = AzureIdentity.from_k8s({"metadata": {"name": "id", "namespace": "ns"}, "spec": spec})
    r = world(i, binding("b", "ns", "id", "s"), p).evaluate(p)
    if served:
        assert (r.token_request.status, r.token_request.identity) == (200, "ns/id")
        assert "InvalidResourceID" not in r.finding_codes
    else:
        assert (r.token_request.status, r.token_request.wait_seconds) == (404, 80)
        assert {"InvalidResourceID", "NoIdentity"} <= set(r.finding_codes)
        assert "BindingIdentityMissing" not in r.finding_codes


# --- §8.11 mic.go updateUserMSI (by resourceID); adal token.go newServicePrincipalTokenFromMSI -----------


@pytest.mark.parametrize(
    ("imds", "status", "served_as"),
    [
        ({}, 200, "rid"),  # the only user-assigned identity on the VM
        ({"systemAssigned": True}, 200, "system-assigned"),  # IMDS prefers system-assigned
        ({"userAssigned": [{"clientID": CID2}]}, 403, None),  # two user-assigned: IMDS cannot choose
    ],
)
def test_8_11_type0_without_client_id_lets_imds_decide(
    imds: dict[str, Any], status: int, served_as: str | None
) -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    i = ident("id", "ns", "")
    res = world(i, binding("b", "ns", "id", "s"), p, cfg=config(None, imds)).request(pod=p)
    assert res.status == status
    if status == 200:
        token = json.loads(res.body)["access_token"]
        want = "system-assigned" if served_as == "system-assigned" else rid("id").replace("/", "_")
        assert token == f"{FAKE_TOKEN_PREFIX}.{want.replace('.', '_')}"
    else:
        assert "Multiple user assigned identities exist" in res.body
        assert "client_id" not in res.body.split("Endpoint", 1)[1]  # adal sent no client_id


# --- §8.12 server.go appHandler.ServeHTTP: the status line is logged by the two appHandlers only ----------


@pytest.mark.parametrize(
    ("path", "headers", "logged"),
    [
        ("/metadata/identity/oauth2/token", MD, True),
        ("/metadata/identity/oauth2/token", (), True),  # the 400 too: it is msiHandler's answer
        ("/host/token", (), True),
        ("/metadata/instance", MD, False),
        ("/metadata/identity\\oauth2\\token", MD, False),
        ("//metadata/identity/oauth2/token", MD, False),
    ],
)
def test_8_12_status_line_only_for_token_and_host_token(
    path: str, headers: tuple[tuple[str, str], ...], logged: bool
) -> None:
    w, p = bound()
    res = w.request(HttpRequest(path=path, query=R, headers=headers), pod=p)
    if logged:
        assert res.nmi_log == (
            f"status ({res.status}) took 0 ns for req.method=GET reg.path={path} req.remote=10.0.0.1",
        )
        assert res.explanation[-1] == f"NMI logs: {res.nmi_log[0]}"
    else:
        assert res.nmi_log == ()


def test_8_12_no_status_line_after_a_panic() -> None:
    p = pod("p", "apps", {"aadpodidbinding": "s"})
    other = ident("id", "platform", namespaced=True)
    res = world(assigned("a", "p", "apps", other, "Assigned"), p).request(pod=p)
    assert res.status == 500
    assert res.nmi_log[0].startswith("panic processing request:")


# --- §8 product decision: managed mode and spec.imds ----------------------------------------------------


@pytest.mark.parametrize(
    ("imds", "status", "finding"),
    [
        (None, 200, False),  # unset: the admin assigned the bound identities
        ({}, 200, False),  # {} is the CRD default the API server fills in: still describes no VM
        ({"systemAssigned": False}, 200, False),
        ({"userAssigned": [{"clientID": CID1}]}, 200, False),
        ({"userAssigned": [{"clientID": CID2}]}, 403, True),  # described: it is the truth
        ({"systemAssigned": True}, 403, True),
        ({"nodes": {"node-1": {"userAssigned": [{"clientID": CID2}]}}}, 403, True),
    ],
)
def test_8_managed_mode_product_decision(imds: dict[str, Any] | None, status: int, finding: bool) -> None:
    w, p = bound(MANAGED, imds)
    r = w.evaluate(p)
    assert r.token_request.status == status
    assert ("IdentityNotOnNode" in r.finding_codes) is finding
    if status == 403:
        assert "Identity not found" in (r.token_request.error or "")


# --- issue 12: Content-Length on every answer (Go net/http), one token-subject rule ---------------------


@pytest.mark.parametrize(
    ("path", "headers", "imds"),
    [
        ("/metadata/identity/oauth2/token", MD, None),  # 200, explicit Content-Length (server.go)
        ("/metadata/identity/oauth2/token", (), None),  # 400 JSON
        ("/metadata/identity\\oauth2\\token", MD, None),  # http.Error
        ("/metadata/instance", MD, None),  # proxied: IMDS's own Content-Length, copied
        ("/metadata/other", MD, None),  # proxied 404
        ("/host/token", (), None),
    ],
)
def test_content_length_on_every_answer(
    path: str, headers: tuple[tuple[str, str], ...], imds: dict[str, Any] | None
) -> None:
    w, p = bound(None, imds)
    res = w.request(HttpRequest(path=path, query=R, headers=headers), pod=p)
    assert res.headers["Content-Length"] == str(len(res.body.encode()))
    assert "Date" not in res.headers  # added by Go at serve time; left out to stay deterministic


def test_long_error_bodies_are_chunked_like_net_http() -> None:
    """net/http server.go chunkWriter.writeHeader: no Content-Length past bufferBeforeChunkingSize."""
    pods = [pod(f"pod-with-a-rather-long-name-{i:03d}", "ns", {}, ip="10.0.0.7") for i in range(60)]
    res = world(*pods).request(ip="10.0.0.7", node="node-1")
    assert len(res.body) > 2048
    assert res.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in res.headers


def test_token_subject_is_the_client_id_on_every_path() -> None:
    """One rule (imds.token_subject): the token names the client ID it was issued to."""
    p = pod("app", "ns", {"aadpodidbinding": "s", "app": "x"})
    base = [ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p]
    cfg = config(None, {"userAssigned": [{"clientID": CID1}]})
    standard = world(*base, cfg=cfg).request(pod=p)
    exempt = world(*base, exc("e", "ns", {"app": "x"}), cfg=cfg).request(pod=p)
    hn = pod("hn", "ns", {}, host_network=True, ip="10.0.0.9")
    direct = world(hn, cfg=cfg).request(pod=hn)
    tokens = {json.loads(r.body)["access_token"] for r in (standard, exempt, direct)}
    assert tokens == {f"{FAKE_TOKEN_PREFIX}.{CID1}"}
    assert {standard.served_by, exempt.served_by, direct.route} == {"nmi", "imds", "direct"}


# --- nmisim request --path: the raw target reaches the router -------------------------------------------

FIX = Path(__file__).resolve().parent.parent / "fixtures"
CLI_INPUT = ["-f", str(FIX / "pods.yaml"), "-f", str(FIX / "identities.yaml")]


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("//metadata/identity/oauth2/token", 301, f"/metadata/identity/oauth2/token?{RQ}"),
        ("/metadata/identity/oauth2/token/../token", 301, f"/metadata/identity/oauth2/token?{RQ}"),
        (
            "/metadata/./identity/oauth2/token?resource=r&x=%41",
            301,
            "/metadata/identity/oauth2/token?resource=r&x=%41",
        ),
        ("/metadata/identity/oauth2/token?resource=https://vault.azure.net", 200, None),
        ("metadata/identity/oauth2/token", 200, None),  # origin-form: the leading '/' is implied
    ],
)
def test_cli_request_path_is_the_raw_target(
    path: str, status: int, location: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["request", *CLI_INPUT, "--pod", "shop/web-6c9f8d7b5-q2w3e", "--path", path, "-o", "json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == status
    assert doc["headers"].get("Location") == location
    if status == 200:
        assert json.loads(doc["body"])["resource"] == (
            "https://vault.azure.net" if "vault" in path else "https://management.azure.com/"
        )
