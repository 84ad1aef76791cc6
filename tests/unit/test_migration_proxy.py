"""The migration proxy sidecar azwi-proxy (workload-identity.md §2.2; the closing list's rule 10).
Upstream: ``pkg/proxy/proxy.go`` (routes, ``msiHandler``), ``cmd/proxy/main.go`` (AZURE_TENANT_ID at
start-up).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from nmisim.engine.http import HttpRequest
from nmisim.engine.migration.proxy import (
    ERR_NO_CLIENT_ID,
    ERR_NO_RESOURCE,
    ERR_NO_TENANT,
    ROUTE_PROXY_FORWARD,
    ROUTE_PROXY_READYZ,
    ROUTE_PROXY_TOKEN,
    ProxyAnswer,
    handle,
    scope,
)

ENV_CID = "aaaaaaaa-0000-0000-0000-000000000001"
OTHER = "bbbbbbbb-0000-0000-0000-000000000002"
TENANT = "cccccccc-0000-0000-0000-00000000000c"
RES = "https://management.azure.com/"
AADSTS70021 = "AADSTS70021: No matching federated identity record found for presented assertion."


def req(
    path: str = "/metadata/identity/oauth2/token", headers: tuple[tuple[str, str], ...] = (), **q: str
) -> HttpRequest:
    query = tuple(q.items())
    return HttpRequest(path=path, query=query, headers=headers)


def ok_for(*allowed: str) -> Callable[[str], str]:
    def exchange(cid: str) -> str:
        return "" if cid in allowed else AADSTS70021

    return exchange


def call(
    r: HttpRequest, env_client_id: str = ENV_CID, tenant: str = TENANT, allowed: tuple[str, ...] = (ENV_CID,)
) -> ProxyAnswer:
    return handle(r, env_client_id=env_client_id, env_tenant_id=tenant, exchange=ok_for(*allowed))


@pytest.mark.parametrize(
    ("path", "route"),
    [
        pytest.param(
            "/metadata/identity/oauth2/token",
            ROUTE_PROXY_TOKEN,
            id="proxy.go PathPrefix /{type:(?i:metadata)}/identity/oauth2/token",
        ),
        pytest.param(
            "/METADATA/identity/oauth2/token", ROUTE_PROXY_TOKEN, id="proxy.go (?i:metadata) upper case"
        ),
        pytest.param(
            "/MetaData/identity/oauth2/token", ROUTE_PROXY_TOKEN, id="proxy.go (?i:metadata) mixed case"
        ),
        pytest.param(
            "/metadata/identity/oauth2/token/extra", ROUTE_PROXY_TOKEN, id="proxy.go PathPrefix: longer path"
        ),
        pytest.param(
            "/metadata/IDENTITY/oauth2/token",
            ROUTE_PROXY_FORWARD,
            id="proxy.go only metadata is case-insensitive",
        ),
        pytest.param("/readyz", ROUTE_PROXY_READYZ, id="proxy.go PathPrefix /readyz"),
        pytest.param("/readyz/more", ROUTE_PROXY_READYZ, id="proxy.go PathPrefix /readyz prefix"),
        pytest.param("/metadata/instance", ROUTE_PROXY_FORWARD, id="proxy.go PathPrefix / forwards to IMDS"),
        pytest.param("/", ROUTE_PROXY_FORWARD, id="proxy.go PathPrefix / root"),
    ],
)
def test_routes(path: str, route: str) -> None:
    ans = call(req(path, resource=RES))
    assert ans.route == route
    if route == ROUTE_PROXY_READYZ:
        assert (ans.status, ans.body) == (200, "ok")
    if route == ROUTE_PROXY_TOKEN:
        assert ans.status == 200


def test_forward_goes_to_the_forwarder() -> None:
    seen: list[HttpRequest] = []

    def forward(r: HttpRequest) -> ProxyAnswer:
        seen.append(r)
        return ProxyAnswer(ROUTE_PROXY_FORWARD, 200, "{}", {})

    r = req("/metadata/instance", headers=(("Metadata", "true"),))
    ans = handle(r, env_client_id=ENV_CID, env_tenant_id=TENANT, exchange=ok_for(), forward=forward)
    assert ans.status == 200 and seen == [r]


@pytest.mark.parametrize(
    ("query", "env", "status", "identity_or_error"),
    [
        pytest.param(
            {"resource": RES},
            ENV_CID,
            200,
            ENV_CID,
            id="proxy.go msiHandler client_id empty: AZURE_CLIENT_ID",
        ),
        pytest.param(
            {"resource": RES, "client_id": OTHER},
            ENV_CID,
            500,
            AADSTS70021,
            id="proxy.go client_id without FIC: 500 Entra text",
        ),
        pytest.param(
            {"resource": RES, "client_id": ENV_CID},
            "",
            200,
            ENV_CID,
            id="proxy.go explicit client_id without env",
        ),
        pytest.param(
            {"resource": RES}, "", 400, ERR_NO_CLIENT_ID, id="proxy.go no client id at all: 400 (#1353)"
        ),
        pytest.param({}, ENV_CID, 400, ERR_NO_RESOURCE, id="proxy.go resource missing: 400"),
        pytest.param({"resource": ""}, ENV_CID, 400, ERR_NO_RESOURCE, id="proxy.go resource empty: 400"),
        pytest.param(
            {"resource": RES, "msi_res_id": "/subscriptions/s/x/other"},
            ENV_CID,
            200,
            ENV_CID,
            id="proxy.go msi_res_id ignored: AZURE_CLIENT_ID",
        ),
        pytest.param(
            {"resource": RES, "mi_res_id": "/x"}, ENV_CID, 200, ENV_CID, id="proxy.go mi_res_id ignored"
        ),
        pytest.param(
            {"resource": RES, "object_id": OTHER}, ENV_CID, 200, ENV_CID, id="proxy.go object_id ignored"
        ),
        pytest.param(
            {"resource": RES, "msi_res_id": "/x"},
            "",
            400,
            ERR_NO_CLIENT_ID,
            id="proxy.go msi_res_id only, no env: 400",
        ),
    ],
)
def test_token_handler(query: dict[str, str], env: str, status: int, identity_or_error: str) -> None:
    ans = call(
        HttpRequest(path="/metadata/identity/oauth2/token", query=tuple(query.items()), headers=()),
        env_client_id=env,
        allowed=(ENV_CID,),
    )
    assert ans.route == ROUTE_PROXY_TOKEN
    assert ans.status == status
    if status == 200:
        assert ans.identity == identity_or_error
        assert ans.headers["Content-Type"] == "application/json"
    else:
        assert ans.error == identity_or_error
        assert ans.body == identity_or_error + "\n", "Go http.Error: message + newline"
        assert ans.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_exact_400_texts() -> None:
    """proxy.go, verbatim (workload-identity.md §2.2)."""
    assert ERR_NO_CLIENT_ID == "The client_id parameter or AZURE_CLIENT_ID environment variable must be set"
    assert ERR_NO_RESOURCE == "The resource parameter is required."


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param((), id="proxy.go no Metadata header check: none"),
        pytest.param((("Metadata", "false"),), id="proxy.go no Metadata header check: false"),
        pytest.param((("Metadata", "true"),), id="proxy.go Metadata true"),
    ],
)
def test_no_metadata_header_check(headers: tuple[tuple[str, str], ...]) -> None:
    assert call(req(headers=headers, resource=RES)).status == 200


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_any_method(method: str) -> None:
    r = HttpRequest(
        method=method, path="/metadata/identity/oauth2/token", query=(("resource", RES),), headers=()
    )
    assert call(r).status == 200


def test_client_id_precedes_resource_check() -> None:
    """proxy.go msiHandler: the client id is checked before the resource."""
    ans = call(req(), env_client_id="")
    assert (ans.status, ans.error) == (400, ERR_NO_CLIENT_ID)


def test_tenant_missing_exits() -> None:
    """cmd/proxy/main.go: setup: failed to create proxy: AZURE_TENANT_ID not set (no HTTP answer at all)."""
    ans = call(req(resource=RES), tenant="")
    assert ans.status is None
    assert ans.error == ERR_NO_TENANT == "setup: failed to create proxy: AZURE_TENANT_ID not set"
    assert call(req("/readyz"), tenant="").status is None, "nothing listens: not even readyz"


def test_success_body_is_one_object_with_numbers() -> None:
    """proxy.go: one object; expires_in/not_before json.Number (numbers), expires_on a string."""
    ans = call(req(resource=RES))
    body = json.loads(ans.body)
    assert isinstance(body, dict)
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    }
    assert body["refresh_token"] == ""
    assert body["token_type"] == "Bearer"
    assert body["resource"] == RES
    assert isinstance(body["expires_in"], int) and isinstance(body["not_before"], int)
    assert isinstance(body["expires_on"], str)
    assert ans.headers["Server"].startswith("azure-workload-identity/proxy/")


@pytest.mark.parametrize(
    ("resource", "want"),
    [
        pytest.param(
            "https://management.azure.com/",
            "https://management.azure.com/.default",
            id="proxy.go scope /.default",
        ),
        pytest.param(
            "https://vault.azure.net", "https://vault.azure.net/.default", id="proxy.go scope no slash"
        ),
        pytest.param("api://x/.default", "api://x/.default", id="proxy.go scope already .default"),
    ],
)
def test_scope(resource: str, want: str) -> None:
    assert scope(resource) == want
