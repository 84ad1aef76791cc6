"""A model of the Azure Instance Metadata Service (IMDS) behind one node (nmi-semantics §7).

NMI does not implement IMDS's default-identity rules; IMDS does. They matter when NMI is not in the way
(hostNetwork callers, route ``direct``), when NMI forwards an exempt pod's request with only ``resource``
and ``client_id`` (§2 step 6), and when NMI proxies a non-token path (§2 default path).

Rules (Azure managed-identity FAQ, product.md §2):

* an identity named by ``client_id`` / ``object_id`` / ``msi_res_id`` / ``mi_res_id`` must be one of the
  VM's user-assigned identities, else ``Identity not found``;
* with none named: the system-assigned identity if enabled; else the single user-assigned identity;
  else, with several, ``Multiple user assigned identities exist, please specify the clientId / resourceId
  of the identity in the token request``; with none at all, ``Identity not found``.

IMDS error texts other than those two and the metadata-header one are approximations (the spec does not
give them). Tokens are obviously fake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from nmisim.engine.config import UserAssignedIdentity, VMIdentities
from nmisim.engine.fold import equal_fold

IMDS_HOST: Final = "169.254.169.254"
TOKEN_PATH: Final = "/metadata/identity/oauth2/token"
SYSTEM_ASSIGNED: Final = "system-assigned"
FAKE_TOKEN_PREFIX: Final = "nmisim-simulated-token.NOT-A-REAL-CREDENTIAL"

ERR_IDENTITY_NOT_FOUND: Final = "Identity not found"
ERR_MULTIPLE_USER_ASSIGNED: Final = (
    "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity "
    "in the token request"
)
ERR_METADATA_HEADER: Final = "Required metadata header not specified"
ERR_NO_RESOURCE: Final = "Required audience parameter not specified"
ERR_NO_API_VERSION: Final = "Required api-version parameter not specified"

JSON_CT: Final = "application/json; charset=utf-8"


def token_subject(client_id: str, resource_id: str = "", tenant_id: str = "") -> str:
    """Whom a fake token names, by one rule on every path (NMI-served, exempt, hostNetwork, proxied):
    the client ID of the identity it was issued to (what a real token's ``appid`` claim carries); an
    identity known only by its resource ID is named by that; a service principal's token adds the tenant
    it was issued in (``<clientID>.<tenant>``, so multi-tenant tokens differ). The VM's system-assigned
    identity is :data:`SYSTEM_ASSIGNED`."""
    who = client_id or resource_id
    return f"{who}.{tenant_id}" if tenant_id else who


def fake_token(resource: str, subject: str) -> dict[str, str]:
    """An msiResponse-shaped token (nmi-semantics §2 step 9: all string fields) that is obviously fake.

    Deterministic: the same subject and resource give the same body. Never JWT-shaped. ``subject`` comes
    from :func:`token_subject`.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in subject)
    return {
        "access_token": f"{FAKE_TOKEN_PREFIX}.{safe}",
        "refresh_token": "",
        "expires_in": "86399",
        "expires_on": "86399",
        "not_before": "0",
        "resource": resource,
        "token_type": "Bearer",
    }


@dataclass(frozen=True, slots=True)
class ImdsTokenAnswer:
    """IMDS's answer to a token request: 200 with ``identity`` set, or 400 with ``error`` set."""

    status: int
    identity: str | None = None
    error: str | None = None
    token: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def error_body(self) -> str:
        return json.dumps(
            {"error": "invalid_request", "error_description": self.error}, separators=(",", ":")
        )


def _find_user_assigned(
    vm: VMIdentities, client_id: str, object_id: str, res_id: str
) -> UserAssignedIdentity | None:
    for ua in vm.user_assigned:
        if client_id and equal_fold(ua.client_id, client_id):
            return ua
        if not client_id and object_id and ua.object_id and equal_fold(ua.object_id, object_id):
            return ua
        if not client_id and not object_id and res_id and equal_fold(ua.resource_id, res_id):
            return ua
    return None


def imds_token(
    vm: VMIdentities,
    *,
    resource: str,
    client_id: str = "",
    object_id: str = "",
    res_id: str = "",
) -> ImdsTokenAnswer:
    """IMDS token issuance for one VM (nmi-semantics §7)."""
    if not resource:
        return ImdsTokenAnswer(400, error=ERR_NO_RESOURCE)
    if client_id or object_id or res_id:
        ua = _find_user_assigned(vm, client_id, object_id, res_id)
        if ua is None:
            return ImdsTokenAnswer(400, error=ERR_IDENTITY_NOT_FOUND)
        who = ua.client_id or ua.resource_id
        return ImdsTokenAnswer(
            200, identity=who, token=fake_token(resource, token_subject(ua.client_id, ua.resource_id))
        )
    if vm.system_assigned:
        return ImdsTokenAnswer(200, identity=SYSTEM_ASSIGNED, token=fake_token(resource, SYSTEM_ASSIGNED))
    if len(vm.user_assigned) == 1:
        ua = vm.user_assigned[0]
        who = ua.client_id or ua.resource_id
        return ImdsTokenAnswer(
            200, identity=who, token=fake_token(resource, token_subject(ua.client_id, ua.resource_id))
        )
    if len(vm.user_assigned) > 1:
        return ImdsTokenAnswer(400, error=ERR_MULTIPLE_USER_ASSIGNED)
    return ImdsTokenAnswer(400, error=ERR_IDENTITY_NOT_FOUND)


@dataclass(frozen=True, slots=True)
class ImdsHttpAnswer:
    status: int
    headers: dict[str, str]
    body: str
    identity: str | None = None
    explanation: str = ""
    error: str | None = None


def _first(query: Mapping[str, list[str]], key: str) -> str:
    values = query.get(key)
    return values[0] if values else ""


def imds_http(
    vm: VMIdentities,
    *,
    path: str,
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
) -> ImdsHttpAnswer:
    """IMDS answering a raw HTTP request (routes ``direct`` and ``proxy``).

    ``headers`` keys must be canonical (``Metadata``); ``query`` maps each key to its values in order.
    """
    if not path.lower().startswith("/metadata"):
        return _imds_error(404, "Not found", "IMDS has no such path", raw='{"error":"Not found"}')
    if headers.get("Metadata", "").lower() != "true":
        return _imds_error(400, ERR_METADATA_HEADER, "IMDS requires the header Metadata: true")
    if not _first(query, "api-version"):
        return _imds_error(400, ERR_NO_API_VERSION, "IMDS requires the query parameter api-version")
    rest = path[len("/metadata") :]
    if rest.rstrip("/") == "/identity/oauth2/token":
        ans = imds_token(
            vm,
            resource=_first(query, "resource"),
            client_id=_first(query, "client_id"),
            object_id=_first(query, "object_id"),
            res_id=_first(query, "msi_res_id") or _first(query, "mi_res_id"),
        )
        if ans.ok:
            body = json.dumps(ans.token, separators=(",", ":"))
            why = f"IMDS issued a token for {ans.identity}"
            return ImdsHttpAnswer(200, _headers(body), body, ans.identity, why)
        assert ans.error is not None
        return _imds_error(400, ans.error, f"IMDS: {ans.error}")
    if rest.startswith("/instance"):
        body = json.dumps({"compute": {"name": "nmisim-simulated-vm"}, "network": {}}, separators=(",", ":"))
        return ImdsHttpAnswer(200, _headers(body), body, None, "IMDS instance metadata (simulated)")
    return _imds_error(404, "Not found", "IMDS has no such path", raw='{"error":"Not found"}')


def _imds_error(status: int, error: str, why: str, raw: str | None = None) -> ImdsHttpAnswer:
    body = raw or json.dumps({"error": "invalid_request", "error_description": error}, separators=(",", ":"))
    return ImdsHttpAnswer(status, _headers(body), body, None, why, error)


def _headers(body: str) -> dict[str, str]:
    # IMDS sends Content-Length; NMI's proxy copies IMDS's headers (server.go copyHeader)
    return {"Content-Type": JSON_CT, "Content-Length": str(len(body.encode()))}
