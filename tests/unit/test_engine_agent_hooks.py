"""Small pure engine functions the node agent calls (nmisim serve): Go's query parsing, IMDS answering a
caller NMI never sees, NMI's per-request log line."""

from __future__ import annotations

import pytest
from factories import CID1, pod, world

from nmisim.engine.config import SimulationConfig
from nmisim.engine.http import HttpRequest
from nmisim.engine.paths import go_parse_query, go_query_unescape
from nmisim.engine.routes import nmi_status_line, simulate_imds


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        ("", ()),
        ("a=1&b=2", (("a", "1"), ("b", "2"))),
        ("a=1&a=2", (("a", "1"), ("a", "2"))),
        ("a", (("a", ""),)),
        ("=v", (("", "v"),)),
        ("a=1&&b=2", (("a", "1"), ("b", "2"))),
        ("a=x+y%20z", (("a", "x y z"),)),
        ("a=1;b=2&c=3", (("c", "3"),)),  # Go >= 1.17: a pair with ';' is dropped
        ("a=%zz&b=2", (("b", "2"),)),  # malformed escape: that pair is dropped
        ("a=%4", ()),
        ("resource=https%3A%2F%2Fvault.azure.net", (("resource", "https://vault.azure.net"),)),
        ("k=%ff", (("k", "\udcff"),)),  # a byte that is not UTF-8 survives as a surrogate
    ],
)
def test_go_parse_query(raw: str, pairs: tuple[tuple[str, str], ...]) -> None:
    assert go_parse_query(raw) == pairs


def test_go_query_unescape_errors() -> None:
    assert go_query_unescape("%") is None
    assert go_query_unescape("%g0") is None
    assert go_query_unescape("a+b") == "a b"


def test_simulate_imds_is_what_a_host_network_pod_gets() -> None:
    cfg = SimulationConfig.from_k8s(
        {
            "apiVersion": "nmisim.dev/v1alpha1",
            "kind": "SimulationConfig",
            "spec": {"imds": {"userAssigned": [{"clientID": CID1}]}},
        }
    )
    hn = pod("hn", "default", ip="10.0.0.9", host_network=True)
    w = world(hn, cfg=cfg)
    for req in (HttpRequest(), HttpRequest(headers=()), HttpRequest(path="/metadata/instance")):
        via_pod = w.request(req, pod=hn)
        direct = simulate_imds(w.config, req, "node-1")
        assert via_pod.route == direct.route == "direct"
        assert (direct.status, direct.headers, direct.body, direct.wait_seconds) == (
            via_pod.status,
            via_pod.headers,
            via_pod.body,
            via_pod.wait_seconds,
        )
    assert simulate_imds(w.config, HttpRequest(), "node-1").status == 200


def test_status_line_is_the_engine_log_line() -> None:
    p = pod("p", "default")
    w = world(p)
    res = w.request(HttpRequest(headers=()), pod=p)
    assert res.nmi_log == (nmi_status_line(400, 0, "GET", "/metadata/identity/oauth2/token", "10.0.0.1"),)
    assert nmi_status_line(404, 5, "GET", "/x", "::1") == (
        "status (404) took 5 ns for req.method=GET reg.path=/x req.remote="
    )
