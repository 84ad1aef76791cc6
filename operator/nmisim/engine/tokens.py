"""How NMI gets a token for the identity it chose (``GetTokens``, ``pkg/auth/auth.go``, go-autorest adal
v0.9.23; nmi-semantics §2 "GetTokens", §8.4, §8.5, §8.11), and adal's error texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urlencode, urljoin

from nmisim.engine.config import SimulationConfig, UserAssignedIdentity, VMIdentities
from nmisim.engine.http import Explanation
from nmisim.engine.identities import redact_client_id
from nmisim.engine.imds import IMDS_HOST, TOKEN_PATH, fake_token, imds_token, token_subject
from nmisim.engine.models import (
    TYPE_SERVICE_PRINCIPAL,
    TYPE_SERVICE_PRINCIPAL_CERTIFICATE,
    TYPE_USER_ASSIGNED_MSI,
    AzureIdentity,
    placeholder_in,
)

#: adal's default AAD endpoint (pkg/auth/auth.go ``defaultActiveDirectoryEndpoint``)
AAD_ENDPOINT: Final = "https://login.microsoftonline.com/"
#: what AAD says to a client-credentials request with no tenant (approximation of AAD's text)
ERR_AAD_NO_TENANT: Final = (
    "AADSTS50059: No tenant-identifying information found in either the request or implied by any "
    "provided credentials."
)


def adal_error(status: int, body: str, client_id: str, resource: str) -> str:
    """The go-autorest adal error text for a non-200 IMDS answer (approximation of its format)."""
    endpoint = adal_msi_endpoint(client_id, resource)
    return (
        f"adal: Refresh request failed. Status Code = '{status}'. Response body: {body} Endpoint {endpoint}"
    )


@lru_cache(maxsize=256)
def adal_msi_endpoint(client_id: str, resource: str) -> str:
    """The IMDS token URL adal asks (its query sorted, ``client_id`` only when non-empty). Memoised: a
    pure function of its arguments, the same for every exempt pod's default request."""
    params = {"api-version": "2018-02-01", "resource": resource}
    if client_id:
        params["client_id"] = client_id
    return f"http://{IMDS_HOST}{TOKEN_PATH}?{urlencode(sorted(params.items()))}"


@dataclass(frozen=True, slots=True)
class Tokens:
    tokens: list[dict[str, str]]
    error: str | None
    status: int


def _aad_refresh_error(identity: AzureIdentity) -> str:
    """adal's TokenRefreshError text for AAD's 400 to a client-credentials request with no tenant.

    The endpoint is the token URL of ``adal.NewOAuthConfig`` (go-autorest adal v0.9.23 ``config.go``): it
    always passes API version ``1.0``, and the URL is the AD endpoint resolved against
    ``<tenant>/oauth2/token?api-version=1.0`` (``url.URL.Parse``: with the empty tenant this refusal
    needs, an absolute path that replaces the endpoint's own). ``refreshInternal`` prints
    ``req.URL.String()``, for single- and multi-tenant identities alike (nmi-semantics §8.4)."""
    endpoint = urljoin(identity.ad_endpoint or AAD_ENDPOINT, "/oauth2/token?api-version=1.0")
    body = json.dumps(
        {"error": "invalid_request", "error_description": ERR_AAD_NO_TENANT}, separators=(",", ":")
    )
    return f"adal: Refresh request failed. Status Code = '400'. Response body: {body} Endpoint {endpoint}"


def _service_principal_tokens(identity: AzureIdentity, resource: str, t: Explanation) -> Tokens:
    """``auth.GetServicePrincipalToken`` / ``...WithCertificate`` (pkg/auth/auth.go, adal v0.9.23).

    The Kubernetes secret is assumed to exist and be valid. What is decided by the AzureIdentity alone:
    adal refuses an empty clientID before any request (``parameter 'clientID' cannot be empty``) and more
    than three auxiliary tenants (``must specify one to three auxiliary tenants``): not TokenRefreshErrors,
    so 503. With no tenantID AAD itself refuses the request (AADSTS50059): a single-tenant identity gets
    adal's TokenRefreshError, 403; a multi-tenant one gets it wrapped with ``%w`` by
    ``MultiTenantServicePrincipalToken.RefreshWithContext`` (token_1.13.go), which
    ``auth.IsTokenRefreshError`` (a plain type assertion, pkg/auth/errors.go) does not see through, so
    503 (nmi-semantics §8.5).
    """
    aux = identity.auxiliary_tenant_ids
    multi = identity.type == TYPE_SERVICE_PRINCIPAL and bool(aux)
    kind = "service principal" if identity.type == TYPE_SERVICE_PRINCIPAL else "service principal certificate"
    if multi and len(aux) > 3:
        t.add(f"type 1 with {len(aux)} auxiliaryTenantIDs: adal accepts one to three -> 503")
        return Tokens([], "must specify one to three auxiliary tenants", 503)
    if not identity.client_id:
        t.add(f"type {identity.type} ({kind}) with no clientID: adal refuses before asking AAD -> 503")
        return Tokens([], "parameter 'clientID' cannot be empty", 503)
    tenants = [identity.tenant_id, *aux] if multi else [identity.tenant_id]
    for i, tenant in enumerate(tenants):
        if tenant:
            continue
        which = "primary" if i == 0 else "auxiliary"
        err = _aad_refresh_error(identity)
        if multi:
            t.add(
                f"the {which} tenant ID is empty: AAD refuses the request (AADSTS50059); adal wraps the "
                "refresh error with %w for multi-tenant identities, so it is not a TokenRefreshError -> 503"
            )
            return Tokens([], f"failed to refresh {which} token: {err}", 503)
        t.add("spec.tenantID is empty: AAD refuses the request (AADSTS50059), a TokenRefreshError -> 403")
        return Tokens([], err, 403)
    if multi:
        t.add(f"type 1 (service principal) with auxiliaryTenantIDs: {len(tenants)} tokens, primary first")
    elif identity.type == TYPE_SERVICE_PRINCIPAL:
        t.add("type 1 (service principal): AAD client-credentials token (secret assumed valid)")
    else:
        t.add("type 2 (service principal certificate): AAD token (certificate assumed valid)")
    return Tokens(
        [fake_token(resource, token_subject(identity.client_id, tenant_id=tenant)) for tenant in tenants],
        None,
        200,
    )


def get_tokens(
    identity: AzureIdentity, resource: str, vm: VMIdentities, cfg: SimulationConfig, t: Explanation
) -> Tokens:
    """NMI's ``GetTokens`` (``standard.go``/``managed.go``; nmi-semantics §2 "GetTokens", step 8).

    Type 0 asks IMDS for the identity's own clientID; adal adds ``client_id`` only when it is non-empty
    (``token.go`` ``newServicePrincipalTokenFromMSI``), so an identity with no clientID leaves the choice
    to IMDS's default-identity rules (§8.11). The identity is on the VM when MIC put it there (standard
    mode: MIC assigns by resourceID, ``mic.go`` ``updateUserMSI``) or, in managed mode, when ``spec.imds``
    lists it; a managed-mode ``spec.imds`` that describes no VM means the admin assigned every bound
    identity (§8, product decision). IMDS's ``Identity not found`` then is a TokenRefreshError -> 403.
    Types 1/2: :func:`_service_principal_tokens`. Other types: ``unsupported identity type N`` -> 503.
    """
    if identity.type == TYPE_USER_ASSIGNED_MSI:
        cid = identity.client_id
        if not cfg.managed:
            on_vm, who = True, "MIC assigned"
        elif not cfg.imds.describes_vms:
            on_vm, who = True, "managed mode and spec.imds describes no VM: assumed the admin assigned"
        else:
            on_vm, who = False, ""
        if on_vm and placeholder_in(cid):
            # the identity on the VM (assigned by resourceID) has its real clientID, not this placeholder
            on_vm = False
            t.add(f"AzureIdentity {identity.key}'s clientID '{cid}' is a placeholder: no VM identity has it")
        if on_vm and (cid or identity.resource_id):
            extra = UserAssignedIdentity(client_id=cid, resource_id=identity.resource_id)
            vm = VMIdentities(system_assigned=vm.system_assigned, user_assigned=(*vm.user_assigned, extra))
            named = f"clientID {redact_client_id(cid)}" if cid else f"resourceID {identity.resource_id}"
            t.add(f"type 0 (user-assigned MSI): {who} {named} to the node's VM")
        if not cid:
            t.add(
                f"AzureIdentity {identity.key} has no clientID: adal asks IMDS without client_id, so IMDS's "
                "default-identity rules pick the identity"
            )
        ans = imds_token(vm, resource=resource, client_id=cid)
        shown = f"clientID {redact_client_id(cid)}" if cid else "no client_id"
        if not ans.ok:
            t.add(f"IMDS answered {ans.status} for {shown}: {ans.error} -> 403")
            return Tokens([], adal_error(ans.status, ans.error_body(), cid, resource), 403)
        t.add(f"IMDS issued a token for {ans.identity if not cid else shown}")
        return Tokens([ans.token], None, 200)
    if identity.type in (TYPE_SERVICE_PRINCIPAL, TYPE_SERVICE_PRINCIPAL_CERTIFICATE):
        return _service_principal_tokens(identity, resource, t)
    t.add(f"AzureIdentity {identity.key} has spec.type {identity.type}: NMI cannot fetch a token -> 503")
    return Tokens([], f"unsupported identity type {identity.type}", 503)
