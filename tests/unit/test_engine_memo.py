"""The engine's memos give exactly what the computations they replace give, and none outlives what it was
computed from (issue 24: the default request's path handling, the pod's identity selection)."""

from __future__ import annotations

import pytest
from helpers import config, pod, world
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmisim.engine.paths import go_unescape_path
from nmisim.engine.routes import (
    ROUTE_BAD_REQUEST,
    ROUTE_BLOCKED,
    ROUTE_PROXY,
    HttpRequest,
    route_of,
    routed_path,
)

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
