"""Property: nmisim's router decision for any path equals a small independent transcription of gorilla/mux
v1.8.0 (``mux.go`` ``Router.ServeHTTP`` + ``cleanPath``) and NMI v1.8.17's route table (``server.go``
``Run``), as test_exceptions.py does for ``IsPodExcepted``.

The oracle cleans with Python's ``posixpath.normpath`` (POSIX keeps exactly two leading slashes, Go's
``path.Clean`` does not: the oracle folds them) instead of the engine's transcription of ``path.Clean``,
and matches with its own regexes written from server.go's constants.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote

import pytest
from factories import binding, ident, pod, world
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmisim.engine.http import HttpRequest
from nmisim.engine.paths import go_path_clean, mux_clean_path
from nmisim.engine.router import route_of


def oracle_clean(p: str) -> str:
    """mux cleanPath: rooted path.Clean, trailing slash put back."""
    if not p.startswith("/"):
        p = "/" + p
    np = posixpath.normpath(p)
    if np.startswith("//"):
        np = "/" + np.lstrip("/")
    if p.endswith("/") and np != "/":
        np += "/"
    return np


# server.go constants: tokenPathPrefix "/{type:(?i:metadata)}/identity/oauth2/token",
# invalidTokenPathMatcher "/(?i:metadata)/identity(.*?)oauth2(.*?)token", hostTokenPathPrefix "/host/token",
# instancePathPrefix "/{type:(?i:metadata)}/instance"; mux turns a PathPrefix template into ^prefix.
ORACLE_ROUTES = [
    ("token", re.compile(r"^/(metadata|METADATA|[Mm][Ee][Tt][Aa][Dd][Aa][Tt][Aa])/identity/oauth2/token")),
    ("invalid-path", re.compile(r"/[Mm][Ee][Tt][Aa][Dd][Aa][Tt][Aa]/identity.*?oauth2.*?token")),
    ("host-token", re.compile(r"^/host/token")),
    ("instance-blocked", re.compile(r"^/[Mm][Ee][Tt][Aa][Dd][Aa][Tt][Aa]/instance")),
]


def oracle_route(path: str, block: bool) -> str:
    if oracle_clean(path) != path:
        return "redirect"
    for name, rx in ORACLE_ROUTES:
        if name == "instance-blocked" and not block:
            continue
        if rx.search(path):
            return name
    return "proxy"


SEGMENTS = st.sampled_from(
    ["metadata", "Metadata", "METADATA", "identity", "Identity", "oauth2", "token", "tokenX", "host",
     "instance", "compute", ".", "..", "", "x", "a\\b", "identity\\oauth2\\token", "...", ".x"]
)  # fmt: skip


@st.composite
def paths(draw: st.DrawFn) -> str:
    segs = draw(st.lists(SEGMENTS, max_size=8))
    p = "/".join(segs)
    if draw(st.booleans()):
        p = "/" + p
    return p


@settings(max_examples=2000, deadline=None)
@given(path=paths(), block=st.booleans())
@example(path="//metadata/identity/oauth2/token", block=False)
@example(path="/metadata/./instance/compute", block=True)
@example(path="/metadata/identity/oauth2/token/", block=False)
def test_router_equals_mux_and_nmi_route_table(path: str, block: bool) -> None:
    assert mux_clean_path(path) == oracle_clean(path)
    assert route_of(path, block_instance_metadata=block) == oracle_route(path, block)


@settings(max_examples=500, deadline=None)
@given(path=st.text(alphabet="/.ab", max_size=12))
def test_go_path_clean_equals_posix_normpath_on_rooted_paths(path: str) -> None:
    rooted = "/" + path
    expected = posixpath.normpath(rooted)
    if expected.startswith("//"):
        expected = "/" + expected.lstrip("/")
    assert go_path_clean(rooted) == expected


@pytest.mark.parametrize(
    ("path", "clean"),
    [("a/b/../..", "."), ("../a", "../a"), ("a/../../b", "../b"), ("", "."), ("a//b/./c/", "a/b/c")],
)
def test_go_path_clean_unrooted_like_go(path: str, clean: str) -> None:
    """Go's path.Clean examples (path/example_test.go) where POSIX normpath agrees or is not asked."""
    assert go_path_clean(path) == clean


@settings(max_examples=300, deadline=None)
@given(path=paths())
def test_simulated_request_takes_the_route_the_router_picks(path: str) -> None:
    p = pod("app", "ns", {"aadpodidbinding": "s"})
    w = world(ident("id", "ns"), binding("b", "ns", "id", "s"), p)
    raw = path if path.startswith("/") else "/" + path
    res = w.request(HttpRequest(path=raw), pod=p)
    assert res.route == oracle_route(raw, False)
    if res.route == "redirect":
        # url.URL.String escapes the cleaned path: net/url encodePath keeps $&+,/:;=@ and the unreserved
        expected = quote(oracle_clean(raw), safe="/$&+,:;=@")
        assert (res.status, res.headers["Location"].split("?")[0]) == (301, expected)
