"""HTTP request simulation through NMI's routes (nmi-semantics §2 "Routes", msiHandler, /host/token,
default path; §3 hostNetwork; §7 IMDS default-identity rules)."""

from __future__ import annotations

import json

import pytest
from factories import CID1, CID2, binding, config, exc, ident, pod, rid, world

from nmisim.engine.http import HttpRequest
from nmisim.engine.imds import ERR_MULTIPLE_USER_ASSIGNED, FAKE_TOKEN_PREFIX
from nmisim.engine.world import World

R = (("api-version", "2018-02-01"), ("resource", "https://management.azure.com/"))
MD = (("Metadata", "true"),)


def bound_world(**cfg: object) -> tuple[World, object]:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(
        ident("id", "ns", CID1), binding("b", "ns", "id", "s"), p, cfg=config(dict(cfg)) if cfg else None
    )
    return w, p


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/metadata/identity/oauth2/token", "token"),
        ("/Metadata/identity/oauth2/token", "token"),  # server_test.go: metadata segment case-insensitive
        ("/METADATA/identity/oauth2/token/", "token"),
        ("/metadata/identity/oauth2/tokenXYZ", "token"),  # PathPrefix: any suffix
        ("/metadata/Identity/oauth2/token/", "proxy"),  # server_test.go: capital I -> default proxy
        ("/metadata/identity\\oauth2\\token", "invalid-path"),
        ("/foo/metadata/identity/x/oauth2/y/token", "invalid-path"),
        ("/host/token", "host-token"),
        ("/host/token/x", "host-token"),
        ("/metadata/instance", "proxy"),
        ("/metadata/", "proxy"),
        ("/latest/meta-data", "proxy"),
    ],
)
def test_route_order_nmi_semantics_2(path: str, route: str) -> None:
    w, p = bound_world()
    res = w.request(HttpRequest(path=path, query=R, headers=MD), pod=p)  # type: ignore[arg-type]
    assert res.route == route


def test_invalid_path_is_400_plain_text() -> None:
    w, p = bound_world()
    res = w.request(HttpRequest(path="/metadata/identity\\oauth2\\token"), pod=p)  # type: ignore[arg-type]
    assert (res.status, res.body) == (400, "Invalid request\n")
    assert res.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("block", [True, False])
def test_block_instance_metadata_2_route4(block: bool) -> None:
    w, p = bound_world(blockInstanceMetadata=block)
    res = w.request(HttpRequest(path="/Metadata/instance/compute", query=R, headers=()), pod=p)  # type: ignore[arg-type]
    if block:  # no header check, 403
        assert (res.route, res.status, res.body) == (
            "instance-blocked",
            403,
            "Request blocked by AAD Pod Identity NMI\n",
        )
    else:  # default proxy: Metadata header check first -> 400 JSON
        assert (res.route, res.status) == ("proxy", 400)


def test_block_instance_metadata_applies_to_exempt_pods_too() -> None:
    p = pod("x", "ns", {"app": "x"})
    w = world(exc("e", "ns", {"app": "x"}), p, cfg=config({"blockInstanceMetadata": True}))
    assert w.request(HttpRequest(path="/metadata/instance"), pod=p).status == 403


@pytest.mark.parametrize(
    ("headers", "required", "status"),
    [
        ((("Metadata", "true"),), True, 200),
        ((("metadata", "true"),), True, 200),  # header *name* is canonicalised
        ((("Metadata", "True"),), True, 400),  # value is case-sensitive
        ((("Metadata", "TRUE"),), True, 400),
        ((), True, 400),
        ((("Metadata", "yes"),), False, 200),  # --metadata-header-required=false
        ((), False, 200),
    ],
)
def test_metadata_header_rule_2_step1(
    headers: tuple[tuple[str, str], ...], required: bool, status: int
) -> None:
    w, p = bound_world(metadataHeaderRequired=required)
    res = w.request(HttpRequest(query=R, headers=headers), pod=p)  # type: ignore[arg-type]
    assert res.status == status
    if status == 400:
        assert res.headers["Content-Type"] == "application/json; charset=utf-8"
        assert json.loads(res.body) == {
            "error": "invalid_request",
            "error_description": "Required metadata header not specified",
        }


@pytest.mark.parametrize("query", [(("api-version", "2018-02-01"),), (("resource", ""),), ()])
def test_resource_required_2_step3(query: tuple[tuple[str, str], ...]) -> None:
    w, p = bound_world()
    res = w.request(HttpRequest(query=query), pod=p)  # type: ignore[arg-type]
    assert (res.status, res.body) == (400, "parameter resource cannot be empty\n")


def test_api_version_is_never_checked() -> None:
    w, p = bound_world()
    assert w.request(HttpRequest(query=(("resource", "r"),)), pod=p).status == 200  # type: ignore[arg-type]


def test_success_token_is_obviously_fake() -> None:
    w, p = bound_world()
    res = w.request(pod=p)  # type: ignore[arg-type]
    body = json.loads(res.body)
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    }
    assert all(isinstance(v, str) for v in body.values())
    assert body["access_token"].startswith(FAKE_TOKEN_PREFIX)
    assert body["access_token"].count(".") < 2 or not body["access_token"].startswith(
        "ey"
    )  # never JWT-shaped
    assert res.headers["Content-Type"] == "application/json"
    assert (res.served_by, res.identity, res.route) == ("nmi", "ns/id", "token")


def test_no_identity_is_404_or_503_with_retry_after_2_step7() -> None:
    p = pod("app", "ns", {})
    res = world(p).request(pod=p)
    assert res.status == 404 and "Retry-After" not in res.headers
    assert res.wait_seconds == 80
    res = world(p, cfg=config({"setRetryAfterHeader": True})).request(pod=p)
    assert res.status == 503 and res.headers["Retry-After"] == "20"


def test_msi_res_id_and_mi_res_id_select_identity() -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    a, b = ident("a", "ns", CID1, resource_id=rid("a")), ident("b", "ns", CID2, resource_id=rid("b"))
    w = world(a, b, binding("ba", "ns", "a", "s"), binding("bb", "ns", "b", "s"), p)
    for key in ("msi_res_id", "mi_res_id"):
        res = w.request(HttpRequest(query=(("resource", "r"), (key, rid("b")))), pod=p)
        assert (res.status, res.identity) == (200, "ns/b"), key
    res = w.request(HttpRequest(query=(("resource", "r"), ("client_id", CID2))), pod=p)
    assert res.identity == "ns/b"


def test_object_id_is_ignored_counts_as_no_identity() -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("a", "ns", CID1), binding("ba", "ns", "a", "s"), p)
    res = w.request(HttpRequest(query=(("resource", "r"), ("object_id", "whatever"))), pod=p)
    assert (res.status, res.identity) == (200, "ns/a")
    assert any("object_id is not supported" in s for s in res.explanation)


def test_unsupported_identity_type_is_503() -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("a", "ns", type_=7), binding("ba", "ns", "a", "s"), p)
    res = w.request(pod=p)
    assert (res.status, res.body) == (503, "unsupported identity type 7\n")
    assert "UnsupportedIdentityType" in w.evaluate(p).finding_codes


def test_service_principal_with_aux_tenants_returns_array() -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("sp", "ns", type_=1, aux=["t1", "t2"]), binding("b", "ns", "sp", "s"), p)
    body = json.loads(w.request(pod=p).body)
    assert isinstance(body, list) and len(body) == 3
    assert "tenant-0" in body[0]["access_token"]
    w2 = world(ident("sp", "ns", type_=1), binding("b", "ns", "sp", "s"), p)
    assert isinstance(json.loads(w2.request(pod=p).body), dict)


# --- exempt pods (§2 step 6, §7) ----------------------------------------------------------------------

IMDS_TWO_UA = {
    "userAssigned": [{"clientID": CID1, "resourceID": "/res/1"}, {"clientID": CID2, "resourceID": "/res/2"}]
}


@pytest.mark.parametrize(
    ("imds", "query", "status", "identity", "error"),
    [
        ({"systemAssigned": True, **IMDS_TWO_UA}, (), 200, "system-assigned", None),
        ({"userAssigned": [{"clientID": CID1}]}, (), 200, CID1, None),
        (IMDS_TWO_UA, (), 403, None, ERR_MULTIPLE_USER_ASSIGNED),
        (IMDS_TWO_UA, (("client_id", CID2),), 200, CID2, None),
        (
            IMDS_TWO_UA,
            (("client_id", "33333333-0000-0000-0000-000000000000"),),
            403,
            None,
            "Identity not found",
        ),
        # msi_res_id is dropped by NMI for exempt pods -> IMDS default rules -> multiple
        (IMDS_TWO_UA, (("msi_res_id", "/res/2"),), 403, None, ERR_MULTIPLE_USER_ASSIGNED),
        ({}, (), 403, None, "Identity not found"),
    ],
)
def test_exempt_pod_token_via_imds(
    imds: dict[str, object],
    query: tuple[tuple[str, str], ...],
    status: int,
    identity: str | None,
    error: str | None,
) -> None:
    p = pod("x", "ns", {"app": "x", "aadpodidbinding": "s"})
    w = world(exc("e", "ns", {"app": "X"}), ident("id", "ns"), binding("b", "ns", "id", "s"), p,
              cfg=config(None, imds))  # fmt: skip
    res = w.request(HttpRequest(query=(("resource", "r"), *query)), pod=p)
    assert res.status == status
    assert res.identity == identity
    assert res.served_by == "imds"
    if error:
        assert res.body.startswith(
            "failed to get service principal token, error: adal: Refresh request failed."
        )
        assert error in res.body
    r = w.evaluate(p)
    assert "ExemptPodHasBinding" in r.finding_codes


# --- pod lookup by IP (§2 "Finding the pod") ------------------------------------------------------------


def test_ip_lookup_only_pending_running_on_that_node() -> None:
    a = pod("a", "ns", {}, ip="10.0.0.9", phase="Succeeded")
    b = pod("b", "ns", {}, ip="10.0.0.9", node="node-2")
    w = world(a, b)
    res = w.request(ip="10.0.0.9", node="node-1")
    assert (res.status, res.body, res.wait_seconds) == (500, "pod list is empty\n", 1.2)
    res = w.request(ip="10.0.0.9", node="node-2")
    assert res.status == 404  # found b, which has no identity


def test_ip_lookup_ambiguous_is_500() -> None:
    w = world(pod("a", "ns", {}, ip="10.0.0.9", phase="Pending"), pod("b", "ns", {}, ip="10.0.0.9"))
    res = w.request(ip="10.0.0.9", node="node-1")
    assert res.status == 500
    assert res.body == "failed to match pod IP 10.0.0.9 with [ns/a ns/b]\n"


def test_pod_request_does_real_lookup_but_verdict_does_not() -> None:
    a, b = pod("a", "ns", {}, ip="10.0.0.9"), pod("b", "ns", {}, ip="10.0.0.9")
    w = world(a, b)
    assert w.request(pod=a).status == 500
    assert w.evaluate(a).token_request.status == 404


def test_ipv6_remote_is_empty_500() -> None:
    w = world(pod("a", "ns", {}))
    res = w.request(ip="fd00::1", node="node-1")
    assert (res.status, res.body) == (500, "request remote address is empty\n")


# --- hostNetwork (§3) and the default proxy ----------------------------------------------------------


def test_host_network_caller_goes_direct_to_imds() -> None:
    p = pod("hn", "ns", {"aadpodidbinding": "s"}, host_network=True, ip="10.240.0.4")
    w = world(ident("id", "ns"), binding("b", "ns", "id", "s"), p, cfg=config(None, {"systemAssigned": True}))
    res = w.request(pod=p)
    assert (res.route, res.status, res.served_by, res.identity) == ("direct", 200, "imds", "system-assigned")
    assert w.request(ip="10.240.0.4", node="node-1").route == "direct"
    r = w.evaluate(p)
    assert r.verdict == "bypass" and "HostNetworkBypass" in r.finding_codes


def test_per_node_imds_override() -> None:
    cfg = config(
        None,
        {
            "userAssigned": [{"clientID": CID1}, {"clientID": CID2}],
            "nodes": {"node-2": {"userAssigned": [{"clientID": CID2}]}},
        },
    )
    p1 = pod("a", "ns", {}, host_network=True, node="node-1")
    p2 = pod("b", "ns", {}, host_network=True, node="node-2", ip="10.0.0.2")
    w = world(p1, p2, cfg=cfg)
    assert w.evaluate(p1).token_request.status == 400
    assert w.evaluate(p1).token_request.error == ERR_MULTIPLE_USER_ASSIGNED
    assert w.evaluate(p2).token_request.identity == CID2


def test_proxy_forwards_to_imds_after_header_check() -> None:
    w, p = bound_world()
    res = w.request(HttpRequest(path="/metadata/instance", query=(("api-version", "2021-02-01"),)), pod=p)  # type: ignore[arg-type]
    assert (res.route, res.status, res.served_by) == ("proxy", 200, "imds")


# --- /host/token (§2) -------------------------------------------------------------------------------


def test_host_token_requires_headers_then_localhost() -> None:
    w, p = bound_world()
    res = w.request(HttpRequest(path="/host/token", headers=()), pod=p)  # type: ignore[arg-type]
    assert (res.status, res.body) == (400, "missing 'podname' and 'podns' from request header\n")
    h = (("podns", "ns"), ("podname", "app"))
    res = w.request(HttpRequest(path="/host/token", headers=h), pod=p)  # type: ignore[arg-type]
    assert (res.status, res.body) == (500, "request remote address is not from a host\n")
    res = w.request(HttpRequest(path="/host/token", query=R, headers=h), ip="127.0.0.1", node="node-1")
    assert res.status == 200
    body = json.loads(res.body)
    assert body["clientid"] == CID1 and "access_token" in body["token"]
