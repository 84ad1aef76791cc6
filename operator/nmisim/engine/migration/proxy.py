"""The migration proxy sidecar ``azwi-proxy`` (workload-identity.md §2.2; ``pkg/proxy/proxy.go``).

It listens on ``localhost:<port>`` in the pod's network namespace; ``azwi-proxy-init`` redirects the pod's
TCP to ``169.254.169.254:80`` there. Routes, in order: ``/(?i:metadata)/identity/oauth2/token`` (prefix, any
method) → the token handler; ``/readyz`` → ``ok``; anything else → forwarded to IMDS. The token handler
reads only ``client_id`` and ``resource`` (no ``Metadata`` check; ``msi_res_id``, ``mi_res_id``,
``object_id`` and ``api-version`` ignored), falls back to ``AZURE_CLIENT_ID``, and answers Go's
``http.Error`` texts: 400 without a client ID or a resource, 500 with Entra's error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from nmisim.engine.http import HttpRequest
from nmisim.engine.imds import fake_token, token_subject

ERR_NO_CLIENT_ID: Final = "The client_id parameter or AZURE_CLIENT_ID environment variable must be set"
ERR_NO_RESOURCE: Final = "The resource parameter is required."
ERR_NO_TENANT: Final = "setup: failed to create proxy: AZURE_TENANT_ID not set"
TEXT_CT: Final = "text/plain; charset=utf-8"
SERVER: Final = "azure-workload-identity/proxy/v1.6.0"
_TOKEN_ROUTE: Final = re.compile(r"^/(?i:metadata)/identity/oauth2/token")
EXPIRES_IN: Final = 86399

ROUTE_PROXY_TOKEN: Final = "proxy-token"
ROUTE_PROXY_READYZ: Final = "proxy-readyz"
ROUTE_PROXY_FORWARD: Final = "proxy-forward"


@dataclass(frozen=True, slots=True)
class ProxyAnswer:
    route: str
    status: int | None
    body: str
    headers: dict[str, str]
    #: the client ID the token is for (200 only)
    identity: str = ""
    error: str = ""
    #: the client ID the proxy exchanged for ("" when it did not get that far)
    client_id: str = ""


def is_token_path(req: HttpRequest) -> bool:
    """The token route's path (``/metadata/identity/oauth2/token``, ``metadata`` in any case)."""
    return _TOKEN_ROUTE.match(req.url_path() or req.path) is not None


def scope(resource: str) -> str:
    return resource if resource.endswith("/.default") else resource.rstrip("/") + "/.default"


def token_body(resource: str, client_id: str, tenant_id: str) -> str:
    """The proxy's one JSON object: ``expires_in``/``not_before`` are JSON numbers, ``expires_on`` a string
    (Go's json.Number), ``refresh_token`` empty."""
    fake = fake_token(resource, token_subject(client_id))
    return json.dumps(
        {
            "access_token": fake["access_token"],
            "refresh_token": "",
            "expires_in": EXPIRES_IN - 10,
            "expires_on": fake["expires_on"],
            "not_before": 0,
            "resource": resource,
            "token_type": "Bearer",
        },
        separators=(",", ":"),
    )


def _error(status: int, message: str, client_id: str = "") -> ProxyAnswer:
    return ProxyAnswer(
        ROUTE_PROXY_TOKEN,
        status,
        message + "\n",
        {"Content-Type": TEXT_CT, "X-Content-Type-Options": "nosniff", "Server": SERVER},
        error=message,
        client_id=client_id,
    )


def handle(
    req: HttpRequest,
    *,
    env_client_id: str,
    env_tenant_id: str,
    exchange: Callable[[str], str],
    forward: Callable[[HttpRequest], ProxyAnswer] | None = None,
) -> ProxyAnswer:
    """The proxy's answer to ``req``. ``exchange(client_id)`` returns Entra's error text, ``""`` on
    success; ``forward`` answers what the proxy forwards to IMDS."""
    if not env_tenant_id:
        return ProxyAnswer(ROUTE_PROXY_TOKEN, None, "", {}, error=ERR_NO_TENANT)
    path = req.url_path() or req.path
    if _TOKEN_ROUTE.match(path):
        client_id = req.q("client_id") or env_client_id
        if not client_id:
            return _error(400, ERR_NO_CLIENT_ID)
        resource = req.q("resource")
        if not resource:
            return _error(400, ERR_NO_RESOURCE, client_id)
        problem = exchange(client_id)
        if problem:
            return _error(500, problem, client_id)
        return ProxyAnswer(
            ROUTE_PROXY_TOKEN,
            200,
            token_body(resource, client_id, env_tenant_id),
            {"Content-Type": "application/json", "Server": SERVER},
            identity=client_id,
            client_id=client_id,
        )
    if path.startswith("/readyz"):
        return ProxyAnswer(ROUTE_PROXY_READYZ, 200, "ok", {"Content-Type": TEXT_CT})
    if forward is not None:
        return forward(req)
    return ProxyAnswer(ROUTE_PROXY_FORWARD, None, "", {}, error="forwarded to IMDS")
