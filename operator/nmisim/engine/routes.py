"""One HTTP request to ``169.254.169.254:80`` through NMI's routes (nmi-semantics §2, §3, §7).

A request sent to ``169.254.169.254:80`` (target ``imds``, the default) either never reaches NMI (a
hostNetwork caller: route ``direct``, IMDS answers; §3) or is DNATed to NMI. A request sent to NMI's own
listen address and port (target ``nmi``: a host process, or anything that binds the node IP) is NMI's
like any other: NMI looks the caller up by its source IP and ignores hostNetwork (§8.4).

Go's ``net/http`` decodes the path (a malformed ``%`` escape: ``400 Bad Request`` from the server
itself) and gorilla/mux cleans it first: a path that is not clean (``//``, ``.`` or ``..``
segments) is answered 301 to the cleaned path before any route is tried (§8.1). Then the router checks,
in order (§2 "Routes"):

1. ``/{metadata}/identity/oauth2/token`` prefix, ``metadata`` case-insensitive -> token handler;
2. ``/(?i:metadata)/identity(.*?)oauth2(.*?)token`` anywhere -> 400 ``Invalid request``;
3. ``/host/token`` prefix -> host handler;
4. with ``--block-instance-metadata``, ``/{metadata}/instance`` prefix -> 403;
5. everything else -> transparent proxy to IMDS (after the Metadata header check).

The result carries the chain of decisions in plain words, each naming the object or flag that decided.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Protocol
from urllib.parse import urlencode, urljoin

from nmisim.engine.config import SimulationConfig, UserAssignedIdentity, VMIdentities
from nmisim.engine.identities import (
    PANIC_INDEX_OUT_OF_RANGE,
    Selection,
    identity_is_namespaced,
    redact_client_id,
)
from nmisim.engine.imds import (
    ERR_METADATA_HEADER,
    IMDS_HOST,
    TOKEN_PATH,
    fake_token,
    imds_http,
    imds_token,
    token_subject,
)
from nmisim.engine.models import (
    TYPE_SERVICE_PRINCIPAL,
    TYPE_SERVICE_PRINCIPAL_CERTIFICATE,
    TYPE_USER_ASSIGNED_MSI,
    AzureIdentity,
    Pod,
    placeholder_in,
)
from nmisim.engine.paths import go_unescape_path, mux_clean_path, mux_redirect_location

ROUTE_TOKEN: Final = "token"
ROUTE_INVALID: Final = "invalid-path"
ROUTE_HOST_TOKEN: Final = "host-token"
ROUTE_BLOCKED: Final = "instance-blocked"
ROUTE_PROXY: Final = "proxy"
ROUTE_DIRECT: Final = "direct"
ROUTE_REDIRECT: Final = "redirect"
ROUTE_BAD_REQUEST: Final = "bad-request"

DEFAULT_QUERY: Final = (("api-version", "2018-02-01"), ("resource", "https://management.azure.com/"))
DEFAULT_HEADERS: Final = (("Metadata", "true"),)

_TOKEN_RE: Final = re.compile(r"^/(?i:metadata)/identity/oauth2/token")
_INVALID_RE: Final = re.compile(r"/(?i:metadata)/identity(.*?)oauth2(.*?)token")
_INSTANCE_RE: Final = re.compile(r"^/(?i:metadata)/instance")

#: pod lookup retries (nmi-semantics §2 "Finding the pod"): 4 more attempts, 300 ms apart
POD_LOOKUP_WAIT_SECONDS: Final = 1.2
RETRY_AFTER_SECONDS: Final = "20"

TEXT_CT: Final = "text/plain; charset=utf-8"
JSON_UTF8_CT: Final = "application/json; charset=utf-8"

SERVED_BY_NMI: Final = "nmi"
SERVED_BY_IMDS: Final = "imds"

#: where the caller sends the request: IMDS's address (DNATed to NMI from pod network namespaces only)
TARGET_IMDS: Final = "imds"
#: NMI's own listen address and port, reached without the DNAT (``--nmi-listen-address``/``--nmi-port``)
TARGET_NMI: Final = "nmi"
TARGETS: Final = (TARGET_IMDS, TARGET_NMI)

#: net/http buffers this much of a handler's body before it must choose between Content-Length and
#: chunked encoding (``server.go`` ``bufferBeforeChunkingSize``)
GO_BUFFER_BEFORE_CHUNKING: Final = 2048
#: adal's default AAD endpoint (pkg/auth/auth.go ``defaultActiveDirectoryEndpoint``)
AAD_ENDPOINT: Final = "https://login.microsoftonline.com/"
#: what AAD says to a client-credentials request with no tenant (approximation of AAD's text)
ERR_AAD_NO_TENANT: Final = (
    "AADSTS50059: No tenant-identifying information found in either the request or implied by any "
    "provided credentials."
)


@lru_cache(maxsize=256)
def canonical_header(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey`` for ASCII names: ``metadata`` -> ``Metadata``.
    Memoised: a pure function of the name, asked for the same few names by every request."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request as the caller sends it. ``query`` and ``headers`` keep order and repeats.

    ``path`` is the path of the request target exactly as sent (escaped form: ``//``, ``..`` and ``%2e``
    reach NMI as they are); :meth:`url_path` is Go's ``URL.Path``, the decoded form routes match on.
    """

    method: str = "GET"
    path: str = TOKEN_PATH
    query: tuple[tuple[str, str], ...] = DEFAULT_QUERY
    headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS
    #: the query string exactly as sent, when known (``URL.RawQuery``); else ``query`` url-encoded
    raw: str | None = None

    def query_values(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.query:
            out.setdefault(k, []).append(v)
        return out

    def q(self, key: str) -> str:
        """``r.URL.Query().Get(key)``: the first value or ``""``."""
        for k, v in self.query:
            if k == key:
                return v
        return ""

    def header(self, name: str) -> str:
        """``r.Header.Get(name)``: names compare canonically, first value wins."""
        want = canonical_header(name)
        for k, v in self.headers:
            if canonical_header(k) == want:
                return v
        return ""

    def canonical_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.headers:
            out.setdefault(canonical_header(k), v)
        return out

    def raw_query(self) -> str:
        return self.raw if self.raw is not None else urlencode(list(self.query))

    def url_path(self) -> str | None:
        """Go's ``URL.Path`` for this target: percent-decoded; None for a malformed escape."""
        return go_unescape_path(self.path)

    def url(self) -> str:
        qs = self.raw_query()
        return f"http://{IMDS_HOST}{self.path}" + (f"?{qs}" if qs else "")


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What the caller gets back (product.md §4 ``nmisim request``)."""

    route: str
    status: int | None
    headers: dict[str, str]
    body: str
    served_by: str | None
    identity: str | None
    wait_seconds: float
    explanation: tuple[str, ...]
    #: the error text the caller sees, if any (plain text without the trailing newline)
    error: str | None = None
    #: the AzureIdentity NMI chose, if any (for findings)
    azure_identity: AzureIdentity | None = field(default=None, compare=False)
    #: NMI's per-request log line(s): only the token and /host/token routes write one (§8.12)
    nmi_log: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "status": self.status,
            "headers": dict(sorted(self.headers.items())),
            "body": self.body,
            "servedBy": self.served_by,
            "identity": self.identity,
            "waitSeconds": json_number(self.wait_seconds),
            "explanation": list(self.explanation),
        }


def json_number(value: float) -> int | float:
    """Integral seconds print as integers (80, not 80.0)."""
    return int(value) if float(value).is_integer() else round(value, 3)


class Cluster(Protocol):
    """What route simulation needs from the world (implemented by :class:`nmisim.engine.world.World`)."""

    @property
    def config(self) -> SimulationConfig: ...

    def pods_at(self, node: str, ip: str) -> list[Pod]: ...

    def get_pod(self, namespace: str, name: str) -> Pod | None: ...

    def matching_exceptions(self, pod: Pod) -> list[str]: ...

    def is_mic(self, pod: Pod) -> bool: ...

    def select_identity(
        self, pod: Pod, client_id: str, res_id: str, node: str | None = None
    ) -> Selection: ...


def with_framing(headers: Mapping[str, str], body: str) -> dict[str, str]:
    """The body framing Go's ``net/http`` adds when the handler returns (``server.go``
    ``chunkWriter.writeHeader``): a handler that set no Content-Length gets one when its whole body fit in
    the 2048-byte buffer (even ``0``), else ``Transfer-Encoding: chunked``. ``Date`` is also added at serve
    time; nmisim leaves it out to stay deterministic."""
    out = dict(headers)
    if "Content-Length" in out or "Transfer-Encoding" in out:
        return out
    size = len(body.encode("utf-8", "surrogateescape"))
    if size <= GO_BUFFER_BEFORE_CHUNKING:
        out["Content-Length"] = str(size)
    else:
        out["Transfer-Encoding"] = "chunked"
    return out


class _Trace:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.wait = 0.0
        self.log: tuple[str, ...] = ()

    def add(self, step: str) -> None:
        self.steps.append(step)

    def result(  # noqa: PLR0917
        self,
        route: str,
        status: int,
        headers: Mapping[str, str],
        body: str,
        served_by: str | None,
        identity: str | None = None,
        error: str | None = None,
        azure_identity: AzureIdentity | None = None,
        *,
        framed: bool = True,
    ) -> RequestResult:
        return RequestResult(
            route,
            status,
            with_framing(headers, body) if framed else dict(headers),
            body,
            served_by,
            identity,
            self.wait,
            tuple(self.steps),
            error,
            azure_identity,
            self.log,
        )

    def http_error(
        self,
        route: str,
        status: int,
        message: str,
        extra: Mapping[str, str] | None = None,
        served_by: str = SERVED_BY_NMI,
    ) -> RequestResult:
        """Go ``http.Error``: plain-text body = message + newline."""
        headers = {"Content-Type": TEXT_CT, "X-Content-Type-Options": "nosniff", **(extra or {})}
        return self.result(route, status, headers, message + "\n", served_by, error=message)


def _metadata_header_error(t: _Trace, route: str) -> RequestResult:
    # server.go metadataNotSpecifiedError writes with fmt.Fprintln: the JSON object and a newline (§8.3)
    body = (
        json.dumps(
            {"error": "invalid_request", "error_description": ERR_METADATA_HEADER}, separators=(",", ":")
        )
        + "\n"
    )
    return t.result(
        route, 400, {"Content-Type": JSON_UTF8_CT}, body, SERVED_BY_NMI, error=ERR_METADATA_HEADER
    )


def _metadata_ok(req: HttpRequest, cfg: SimulationConfig, t: _Trace) -> bool:
    if not cfg.nmi.metadata_header_required:
        t.add("metadataHeaderRequired is false: NMI does not check the Metadata header")
        return True
    value = req.header("Metadata")
    if value == "true":
        t.add("header Metadata is exactly 'true' (metadataHeaderRequired)")
        return True
    shown = repr(value) if value else "missing"
    t.add(f"header Metadata is {shown}, not exactly 'true' (case-sensitive; metadataHeaderRequired) -> 400")
    return False


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


def _ok_json(payload: object) -> tuple[dict[str, str], str]:
    body = json.dumps(payload, separators=(",", ":"))
    return {"Content-Type": "application/json", "Content-Length": str(len(body.encode()))}, body


@dataclass(frozen=True, slots=True)
class _Tokens:
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


def _service_principal_tokens(identity: AzureIdentity, resource: str, t: _Trace) -> _Tokens:
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
        return _Tokens([], "must specify one to three auxiliary tenants", 503)
    if not identity.client_id:
        t.add(f"type {identity.type} ({kind}) with no clientID: adal refuses before asking AAD -> 503")
        return _Tokens([], "parameter 'clientID' cannot be empty", 503)
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
            return _Tokens([], f"failed to refresh {which} token: {err}", 503)
        t.add("spec.tenantID is empty: AAD refuses the request (AADSTS50059), a TokenRefreshError -> 403")
        return _Tokens([], err, 403)
    if multi:
        t.add(f"type 1 (service principal) with auxiliaryTenantIDs: {len(tenants)} tokens, primary first")
    elif identity.type == TYPE_SERVICE_PRINCIPAL:
        t.add("type 1 (service principal): AAD client-credentials token (secret assumed valid)")
    else:
        t.add("type 2 (service principal certificate): AAD token (certificate assumed valid)")
    return _Tokens(
        [fake_token(resource, token_subject(identity.client_id, tenant_id=tenant)) for tenant in tenants],
        None,
        200,
    )


def get_tokens(
    identity: AzureIdentity, resource: str, vm: VMIdentities, cfg: SimulationConfig, t: _Trace
) -> _Tokens:
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
            return _Tokens([], adal_error(ans.status, ans.error_body(), cid, resource), 403)
        t.add(f"IMDS issued a token for {ans.identity if not cid else shown}")
        return _Tokens([ans.token], None, 200)
    if identity.type in (TYPE_SERVICE_PRINCIPAL, TYPE_SERVICE_PRINCIPAL_CERTIFICATE):
        return _service_principal_tokens(identity, resource, t)
    t.add(f"AzureIdentity {identity.key} has spec.type {identity.type}: NMI cannot fetch a token -> 503")
    return _Tokens([], f"unsupported identity type {identity.type}", 503)


def simulate_request(
    cluster: Cluster,
    req: HttpRequest,
    *,
    pod: Pod | None = None,
    ip: str | None = None,
    node: str | None = None,
    assume_found: bool = False,
    target: str = TARGET_IMDS,
) -> RequestResult:
    """Simulate ``req`` from ``pod`` (its IP, to the NMI on its node) or from ``ip`` on ``node``.

    ``target`` is where the caller sends it: :data:`TARGET_IMDS` (``169.254.169.254:80``; a hostNetwork
    caller's traffic never passes PREROUTING, so IMDS answers it) or :data:`TARGET_NMI` (NMI's own port:
    NMI looks every caller up by IP, hostNetwork or not, ``pkg/k8s/client.go`` ``getPodList``; §8.4).
    ``assume_found`` skips NMI's pod lookup by IP (used for a pod's own verdict, so that one pod's result
    does not depend on which other pods share its IP); ``--pod`` requests do the real lookup when the pod
    has an IP, and assume the pod is found when it has none (a manifest).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    cfg = cluster.config
    t = _Trace()
    if pod is not None:
        node = pod.node_name
        ip = pod.pod_ip
        where = f"node {node}" if node else "its node (not scheduled yet)"
        t.add(f"request from Pod {pod.namespace}/{pod.name} ({ip or 'no pod IP yet'}) on {where}")
    else:
        node = node or ""
        ip = ip or ""
        t.add(f"request from {ip or 'an empty address'} on node {node}")
    vm = cfg.imds.vm_for(node)

    if target == TARGET_IMDS and ip != "127.0.0.1":
        host_caller = (
            pod.host_network if pod is not None else any(p.host_network for p in cluster.pods_at(node, ip))
        )
        if host_caller:
            who = f"Pod {pod.namespace}/{pod.name}" if pod is not None else f"a hostNetwork pod with IP {ip}"
            t.add(
                f"{who} uses spec.hostNetwork: its traffic leaves through OUTPUT, not PREROUTING, so NMI's "
                "aad-metadata DNAT rule never sees it and IMDS answers directly (sent to NMI's own port "
                "instead, target nmi, NMI would look the caller up by IP)"
            )
            return _direct(t, req, vm)
    if ip == "127.0.0.1":
        t.add("source 127.0.0.1: a host process talking to NMI's listen address 127.0.0.1:2579 directly")
    elif target == TARGET_NMI:
        t.add(
            "sent to NMI's own listen address and port, not through the DNAT: NMI looks the caller up by "
            f"its source IP {ip or '(none)'} like any pod's, hostNetwork or not (getPodList filters on "
            "status.podIP and phase only)"
        )
    else:
        t.add("iptables nat chain aad-metadata DNATs 169.254.169.254:80 to NMI at 127.0.0.1:2579")

    path, route = routed_path(req.path, cfg.nmi.block_instance_metadata)
    if path is None:
        # net/http server.go (*conn).serve writes this response itself: no Content-Length
        t.add(f"path {req.path} has a malformed %-escape: Go's net/http answers 400 before NMI's router runs")
        headers = {"Content-Type": TEXT_CT, "Connection": "close"}
        msg = "400 Bad Request"
        return t.result(ROUTE_BAD_REQUEST, 400, headers, msg, SERVED_BY_NMI, error=msg, framed=False)
    if path != req.path:
        t.add(f"Go decodes the path {req.path} to {path} (URL.Path), which the router cleans and matches")
    if route == ROUTE_REDIRECT:
        location = mux_redirect_location(path, req.raw_query())
        assert location is not None
        t.add(
            f"path {path} is not clean ('//', '.' or '..' segments): gorilla/mux answers 301 to "
            f"{mux_clean_path(path)} before any route, so no NMI handler runs"
        )
        return t.result(ROUTE_REDIRECT, 301, {"Location": location}, "", SERVED_BY_NMI)
    if route == ROUTE_TOKEN:
        t.add(f"path {path} matches NMI's token route /{{metadata}}/identity/oauth2/token")
        res = _token_route(cluster, req, t, pod, ip, node, vm, assume_found)
        return _logged(res, req, path, ip)
    if route == ROUTE_INVALID:
        t.add(f"path {path} looks like a token path but is not the token route -> 400 (NMI #1325)")
        return t.http_error(ROUTE_INVALID, 400, "Invalid request")
    if route == ROUTE_HOST_TOKEN:
        t.add(f"path {path} matches NMI's /host/token route")
        return _logged(_host_route(cluster, req, t, ip, node, vm), req, path, ip)
    if route == ROUTE_BLOCKED:
        t.add(f"path {path} is instance metadata and blockInstanceMetadata is true -> 403")
        return t.http_error(ROUTE_BLOCKED, 403, "Request blocked by AAD Pod Identity NMI")
    t.add(f"path {path} goes to NMI's default route: transparent proxy to IMDS")
    if not _metadata_ok(req, cfg, t):
        return _metadata_header_error(t, ROUTE_PROXY)
    ans = imds_http(vm, path=path, query=req.query_values(), headers=req.canonical_headers())
    t.add(ans.explanation)
    return t.result(ROUTE_PROXY, ans.status, ans.headers, ans.body, SERVED_BY_IMDS, ans.identity, ans.error)


def _direct(t: _Trace, req: HttpRequest, vm: VMIdentities) -> RequestResult:
    ans = imds_http(vm, path=req.path, query=req.query_values(), headers=req.canonical_headers())
    t.add(ans.explanation)
    return t.result(ROUTE_DIRECT, ans.status, ans.headers, ans.body, SERVED_BY_IMDS, ans.identity, ans.error)


def simulate_imds(config: SimulationConfig, req: HttpRequest, node: str) -> RequestResult:
    """IMDS itself answering ``req`` on ``node``'s VM, with NMI not in the way: what a hostNetwork pod
    gets (route ``direct``, §3), the same answer :func:`simulate_request` gives for such a pod."""
    t = _Trace()
    t.add(f"request to IMDS on node {node or '(any)'} directly: NMI is not in the way")
    return _direct(t, req, config.imds.vm_for(node))


def nmi_status_line(status: int | None, took_ns: int, method: str, path: str, ip: str) -> str:
    """NMI's per-request log line (``server.go`` ``appHandler.ServeHTTP``, sic ``reg.path``; §4 Logging)."""
    return (
        f"status ({status}) took {took_ns} ns for req.method={method} reg.path={path} "
        f"req.remote={_remote_ip(ip)}"
    )


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


def _logged(res: RequestResult, req: HttpRequest, path: str, ip: str) -> RequestResult:
    """``appHandler.ServeHTTP``: the token and /host/token handlers log one status line per request
    (§8.12); a recovered panic skips it (the deferred recover runs instead). ``took`` is nmisim's
    simulated wait, not a measured latency."""
    if res.status == 500 and res.error == PANIC_INDEX_OUT_OF_RANGE:
        line = f"panic processing request: {res.error} res.status=500"
    else:
        line = nmi_status_line(res.status, round(res.wait_seconds * 1e9), req.method, path, ip)
    return RequestResult(
        res.route, res.status, res.headers, res.body, res.served_by, res.identity, res.wait_seconds,
        (*res.explanation, f"NMI logs: {line}"), res.error, res.azure_identity, (line,),
    )  # fmt: skip


def _remote_ip(ip: str) -> str:
    # NMI takes the text before the first ':' of RemoteAddr; IPv6 remotes end up empty (§2).
    return "" if ":" in ip else ip


def _lookup_pod(  # noqa: PLR0917
    cluster: Cluster, t: _Trace, pod: Pod | None, ip: str, node: str, assume_found: bool
) -> Pod | RequestResult:
    if pod is not None and (assume_found or not pod.pod_ip):
        t.add(
            f"NMI finds Pod {pod.namespace}/{pod.name} by its IP "
            f"(assumed: {'no pod IP yet' if not pod.pod_ip else 'verdict'})"
        )
        return pod
    matches = cluster.pods_at(node, ip)
    if not matches:
        t.wait += POD_LOOKUP_WAIT_SECONDS
        t.add(
            f"no Pending/Running pod on node {node} has IP {ip}: NMI retries 4 times 300 ms apart, then 500"
        )
        return t.http_error(ROUTE_TOKEN, 500, "pod list is empty")
    if len(matches) > 1:
        names = " ".join(f"{p.namespace}/{p.name}" for p in matches)
        t.add(
            f"{len(matches)} Pending/Running pods on node {node} share "
            f"IP {ip}: NMI cannot tell them apart -> 500"
        )
        t.add(
            "NMI prints each pod in full (v1.Pod's String(), about 6 KB a pod), so its body passes Go's "
            "2048-byte buffer and is sent chunked; nmisim lists the pods by name"
        )
        # pkg/k8s/client.go GetPodInfo: fmt %v of []*v1.Pod (§8.4); the framing is that of NMI's length
        msg = f"failed to match pod IP {ip} with [{names}]"
        return t.http_error(ROUTE_TOKEN, 500, msg, {"Transfer-Encoding": "chunked"})
    found = matches[0]
    t.add(f"NMI finds Pod {found.namespace}/{found.name} by IP {ip} on node {node}")
    return found


def _token_route(  # noqa: PLR0917
    cluster: Cluster,
    req: HttpRequest,
    t: _Trace,
    pod: Pod | None,
    ip: str,
    node: str,
    vm: VMIdentities,
    assume_found: bool,
) -> RequestResult:
    """``msiHandler`` in its exact order of checks (nmi-semantics §2 steps 1-9)."""
    cfg = cluster.config
    if not _metadata_ok(req, cfg, t):
        return _metadata_header_error(t, ROUTE_TOKEN)
    remote = _remote_ip(ip)
    if pod is not None and not pod.pod_ip:
        remote = "<pod IP>"  # a manifest: it will have an IP once running
    if not remote:
        t.add("the remote address gives no IPv4 address -> 500")
        return t.http_error(ROUTE_TOKEN, 500, "request remote address is empty")
    resource = req.q("resource")
    client_id = req.q("client_id")
    res_id = req.q("msi_res_id") or req.q("mi_res_id")
    if not resource:
        t.add("query parameter resource is missing or empty -> 400")
        return t.http_error(ROUTE_TOKEN, 400, "parameter resource cannot be empty")
    if req.q("object_id") and not client_id and not res_id:
        t.add("object_id is not supported by NMI: the request counts as naming no identity")
    found = _lookup_pod(cluster, t, pod, remote, node, assume_found)
    if isinstance(found, RequestResult):
        return found
    caller = found
    excs = cluster.matching_exceptions(caller)
    mic = cluster.is_mic(caller)
    if excs or mic:
        if excs:
            t.add(
                f"AzurePodIdentityException {caller.namespace}/{excs[0]} matches a pod label: "
                "NMI fetches the token from IMDS itself"
            )
        else:
            t.add(
                f"MIC shortcut: namespace {caller.namespace} is micNamespace and ReplicaSet "
                f"{caller.owner_replicaset} starts with 'mic': NMI fetches the token from IMDS itself"
            )
        dropped = [k for k in ("msi_res_id", "mi_res_id", "object_id") if req.q(k)]
        if dropped:
            t.add(f"NMI forwards only resource and client_id: {', '.join(dropped)} dropped")
        if client_id:
            t.add(f"IMDS is asked for client_id {redact_client_id(client_id)}")
        else:
            t.add("no client_id: IMDS applies its own default-identity rules")
        ans = imds_token(vm, resource=resource, client_id=client_id)
        if ans.ok:
            t.add(f"IMDS on node {node or '(any)'} issued a token for {ans.identity}")
            headers, body = _ok_json(ans.token)
            return t.result(ROUTE_TOKEN, 200, headers, body, SERVED_BY_IMDS, ans.identity)
        t.add(f"IMDS on node {node or '(any)'} answered 400 ({ans.error}); NMI turns it into 403")
        detail = adal_error(400, ans.error_body(), client_id, resource)
        msg = f"failed to get service principal token, error: {detail}"
        return t.http_error(ROUTE_TOKEN, 403, msg, served_by=SERVED_BY_IMDS)
    t.add(
        f"no AzurePodIdentityException in namespace {caller.namespace} "
        "matches and the MIC shortcut does not apply"
    )
    return _serve_identity(cluster, t, caller, ROUTE_TOKEN, client_id, res_id, resource, vm, host=False)


def _serve_identity(  # noqa: PLR0917
    cluster: Cluster,
    t: _Trace,
    pod: Pod,
    route: str,
    client_id: str,
    res_id: str,
    resource: str,
    vm: VMIdentities,
    host: bool,
    node: str | None = None,
) -> RequestResult:
    cfg = cluster.config
    sel = cluster.select_identity(pod, client_id, res_id, node)
    for step in sel.steps:
        t.add(step)
    t.wait += sel.wait_seconds
    if sel.identity is None:
        assert sel.error is not None
        if sel.status == 500:
            return t.http_error(route, 500, sel.error)
        if sel.wait_seconds:
            t.add(f"NMI kept the caller waiting {json_number(sel.wait_seconds)} s before answering")
        if cfg.nmi.set_retry_after_header and not host:
            t.add("setRetryAfterHeader is true: 503 with Retry-After: 20 instead of 404")
            return t.http_error(route, 503, sel.error, {"Retry-After": RETRY_AFTER_SECONDS})
        return t.http_error(route, 404, sel.error)
    ident = sel.identity
    if (
        identity_is_namespaced(ident, cfg.nmi) and ident.namespace != pod.namespace
    ):  # pragma: no cover - guarded
        t.add("identity from another namespace despite namespaced mode")
    toks = get_tokens(ident, resource, vm, cfg, t)
    if toks.error is not None:
        res = t.http_error(route, toks.status, toks.error)
        return RequestResult(
            res.route, res.status, res.headers, res.body, res.served_by, ident.key, res.wait_seconds,
            res.explanation, res.error, ident,
        )  # fmt: skip
    payload: object
    if host:
        payload = {"token": toks.tokens[0], "clientid": ident.client_id}
    else:
        payload = toks.tokens[0] if len(toks.tokens) == 1 else toks.tokens
    headers, body = _ok_json(payload)
    return t.result(route, 200, headers, body, SERVED_BY_NMI, ident.key, azure_identity=ident)


def _host_route(  # noqa: PLR0917
    cluster: Cluster, req: HttpRequest, t: _Trace, ip: str, node: str, vm: VMIdentities
) -> RequestResult:
    """``hostHandler`` (nmi-semantics §2 "/host/token", §8.9): no Metadata or exception checks, and only
    what NMI on this node can see: standard mode reads only AzureAssignedIdentities labelled
    ``nodename=<node>`` (``crd.go`` ``NewCRDClientLite``/``NodeNameFilter``, ``--enableScaleFeatures``),
    managed mode only pods on this node (``k8s/client.go`` pod informer, field selector spec.nodeName)."""
    podns, podname = req.header("podns"), req.header("podname")
    if not podns or not podname:
        t.add("headers podns and podname are required on /host/token -> 400")
        return t.http_error(ROUTE_HOST_TOKEN, 400, "missing 'podname' and 'podns' from request header")
    if _remote_ip(ip) != "127.0.0.1":
        t.add(f"/host/token only serves 127.0.0.1, the request came from {ip or 'an empty address'} -> 500")
        return t.http_error(ROUTE_HOST_TOKEN, 500, "request remote address is not from a host")
    resource = req.q("resource")
    if not resource:
        t.add("query parameter resource is missing or empty -> 400")
        return t.http_error(ROUTE_HOST_TOKEN, 400, "parameter resource cannot be empty")
    target = cluster.get_pod(podns, podname)
    t.add(f"NMI trusts the headers and acts for pod {podns}/{podname}")
    elsewhere = target is not None and bool(target.node_name) and bool(node) and target.node_name != node
    managed = cluster.config.managed
    if target is None or elsewhere:
        if target is None:
            t.add(f"Pod {podns}/{podname} is not in the input: it has no assigned identities")
        elif managed:
            t.add(
                f"Pod {podns}/{podname} runs on node {target.node_name}: NMI on node {node} caches only its "
                "own node's pods"
            )
        else:
            t.add(
                f"Pod {podns}/{podname} runs on node {target.node_name}: NMI on node {node} sees only "
                f"AzureAssignedIdentities labelled nodename={node} (enableScaleFeatures)"
            )
        if managed:
            msg = f"failed to get pod {podns}/{podname}, error: pod {podns}/{podname} doesn't exist"
            return t.http_error(ROUTE_HOST_TOKEN, 404, msg)
        if target is None:
            target = Pod(namespace=podns, name=podname)
    res_id = req.q("msi_res_id") or req.q("mi_res_id")
    return _serve_identity(
        cluster, t, target, ROUTE_HOST_TOKEN, req.q("client_id"), res_id, resource, vm, host=True, node=node
    )
