"""NMI's router (``server.go`` ``Run``, gorilla/mux v1.8.0; nmi-semantics §2 "Routes", §8.1): which
route a request path takes, after Go has decoded it and before any handler runs.

1. mux's cleaning redirect: a path with ``//``, ``.`` or ``..`` segments is answered 301;
2. ``/{metadata}/identity/oauth2/token`` prefix, ``metadata`` case-insensitive -> token handler;
3. ``/(?i:metadata)/identity(.*?)oauth2(.*?)token`` anywhere -> 400 ``Invalid request``;
4. ``/host/token`` prefix -> host handler;
5. with ``--block-instance-metadata``, ``/{metadata}/instance`` prefix -> 403;
6. everything else -> transparent proxy to IMDS.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from nmisim.engine.paths import go_unescape_path, mux_clean_path

ROUTE_TOKEN: Final = "token"
ROUTE_INVALID: Final = "invalid-path"
ROUTE_HOST_TOKEN: Final = "host-token"
ROUTE_BLOCKED: Final = "instance-blocked"
ROUTE_PROXY: Final = "proxy"
ROUTE_DIRECT: Final = "direct"
ROUTE_REDIRECT: Final = "redirect"
ROUTE_BAD_REQUEST: Final = "bad-request"
_TOKEN_RE: Final = re.compile(r"^/(?i:metadata)/identity/oauth2/token")
_INVALID_RE: Final = re.compile(r"/(?i:metadata)/identity(.*?)oauth2(.*?)token")
_INSTANCE_RE: Final = re.compile(r"^/(?i:metadata)/instance")
#: distinct (path, flag) pairs :func:`routed_path` keeps; requests mostly repeat a few paths
ROUTED_PATH_CACHE_SIZE: Final = 1024


@lru_cache(maxsize=ROUTED_PATH_CACHE_SIZE)
def routed_path(raw_path: str, block_instance_metadata: bool) -> tuple[str | None, str]:
    """``(URL.Path, route)`` for a request target's path as sent: :func:`go_unescape_path` (None and
    :data:`ROUTE_BAD_REQUEST` for a malformed escape), then :func:`route_of` on the decoded path.

    Memoised: both are pure functions of the path and of ``blockInstanceMetadata``, which is part of the
    key, so a changed configuration never sees an answer computed for another. Every pod's verdict sends
    the same default request, whose path is decoded and cleaned once here instead of once a pod."""
    path = go_unescape_path(raw_path)
    if path is None:
        return None, ROUTE_BAD_REQUEST
    return path, route_of(path, block_instance_metadata=block_instance_metadata)


def route_of(url_path: str, *, block_instance_metadata: bool) -> str:
    """NMI's router for a decoded path (``server.go`` ``Run``, gorilla/mux v1.8.0): mux's cleaning
    redirect first (§8.1), then the routes in the order they were registered (§2 "Routes")."""
    if mux_clean_path(url_path) != url_path:
        return ROUTE_REDIRECT
    if _TOKEN_RE.match(url_path):
        return ROUTE_TOKEN
    if _INVALID_RE.search(url_path):
        return ROUTE_INVALID
    if url_path.startswith("/host/token"):
        return ROUTE_HOST_TOKEN
    if block_instance_metadata and _INSTANCE_RE.match(url_path):
        return ROUTE_BLOCKED
    return ROUTE_PROXY
