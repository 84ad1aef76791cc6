"""One HTTP request to ``169.254.169.254:80`` through NMI's routes (nmi-semantics §2, §3, §7).

A request sent to ``169.254.169.254:80`` (target ``imds``, the default) either never reaches NMI (a
hostNetwork caller: route ``direct``, IMDS answers; §3) or is DNATed to NMI. A request sent to NMI's own
listen address and port (target ``nmi``: a host process, or anything that binds the node IP) is NMI's
like any other: NMI looks the caller up by its source IP and ignores hostNetwork (§8.4).

Go's ``net/http`` decodes the path (a malformed ``%`` escape: ``400 Bad Request`` from the server
itself), then NMI's router (:mod:`nmisim.engine.router`) picks the route, and this module runs its
handler: the token handler (``msiHandler``), the host handler (``hostHandler``), the 403 of
``--block-instance-metadata``, or the transparent proxy to IMDS (after the Metadata header check). The
token itself comes from :mod:`nmisim.engine.tokens`; the request and answer types are
:mod:`nmisim.engine.http`'s.

The result carries the chain of decisions in plain words, each naming the object or flag that decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Protocol

from nmisim.engine.config import SimulationConfig, VMIdentities
from nmisim.engine.http import (
    JSON_UTF8_CT,
    SERVED_BY_IMDS,
    SERVED_BY_NMI,
    TARGET_IMDS,
    TARGET_NMI,
    TARGETS,
    TEXT_CT,
    Explanation,
    HttpRequest,
    RequestResult,
    json_number,
)
from nmisim.engine.identities import (
    PANIC_INDEX_OUT_OF_RANGE,
    Selection,
    identity_is_namespaced,
    redact_client_id,
)
from nmisim.engine.imds import ERR_METADATA_HEADER, imds_http, imds_token
from nmisim.engine.models import Pod
from nmisim.engine.paths import mux_clean_path, mux_redirect_location
from nmisim.engine.router import (
    ROUTE_BAD_REQUEST,
    ROUTE_BLOCKED,
    ROUTE_DIRECT,
    ROUTE_HOST_TOKEN,
    ROUTE_INVALID,
    ROUTE_PROXY,
    ROUTE_REDIRECT,
    ROUTE_TOKEN,
    routed_path,
)
from nmisim.engine.tokens import adal_error, get_tokens

#: pod lookup retries (nmi-semantics §2 "Finding the pod"): 4 more attempts, 300 ms apart
POD_LOOKUP_WAIT_SECONDS: Final = 1.2
RETRY_AFTER_SECONDS: Final = "20"


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


@dataclass(frozen=True, slots=True)
class _Call:
    """One request being answered by NMI's handlers: the world, the request, the caller's address and node,
    the VM behind that node's NMI, and the explanation being written."""

    cluster: Cluster
    req: HttpRequest
    t: Explanation
    ip: str
    node: str
    vm: VMIdentities


def _metadata_header_error(t: Explanation, route: str) -> RequestResult:
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


def _metadata_ok(req: HttpRequest, cfg: SimulationConfig, t: Explanation) -> bool:
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


def _ok_json(payload: object) -> tuple[dict[str, str], str]:
    body = json.dumps(payload, separators=(",", ":"))
    return {"Content-Type": "application/json", "Content-Length": str(len(body.encode()))}, body


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
    t = Explanation()
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
        res = _token_route(_Call(cluster, req, t, ip, node, vm), pod, assume_found)
        return _logged(res, req, path, ip)
    if route == ROUTE_INVALID:
        t.add(f"path {path} looks like a token path but is not the token route -> 400 (NMI #1325)")
        return t.http_error(ROUTE_INVALID, 400, "Invalid request")
    if route == ROUTE_HOST_TOKEN:
        t.add(f"path {path} matches NMI's /host/token route")
        return _logged(_host_route(_Call(cluster, req, t, ip, node, vm)), req, path, ip)
    if route == ROUTE_BLOCKED:
        t.add(f"path {path} is instance metadata and blockInstanceMetadata is true -> 403")
        return t.http_error(ROUTE_BLOCKED, 403, "Request blocked by AAD Pod Identity NMI")
    t.add(f"path {path} goes to NMI's default route: transparent proxy to IMDS")
    if not _metadata_ok(req, cfg, t):
        return _metadata_header_error(t, ROUTE_PROXY)
    ans = imds_http(vm, path=path, query=req.query_values(), headers=req.canonical_headers())
    t.add(ans.explanation)
    return t.result(
        ROUTE_PROXY, ans.status, ans.headers, ans.body, SERVED_BY_IMDS, identity=ans.identity, error=ans.error
    )


def _direct(t: Explanation, req: HttpRequest, vm: VMIdentities) -> RequestResult:
    ans = imds_http(vm, path=req.path, query=req.query_values(), headers=req.canonical_headers())
    t.add(ans.explanation)
    return t.result(
        ROUTE_DIRECT,
        ans.status,
        ans.headers,
        ans.body,
        SERVED_BY_IMDS,
        identity=ans.identity,
        error=ans.error,
    )


def simulate_imds(config: SimulationConfig, req: HttpRequest, node: str) -> RequestResult:
    """IMDS itself answering ``req`` on ``node``'s VM, with NMI not in the way: what a hostNetwork pod
    gets (route ``direct``, §3), the same answer :func:`simulate_request` gives for such a pod."""
    t = Explanation()
    t.add(f"request to IMDS on node {node or '(any)'} directly: NMI is not in the way")
    return _direct(t, req, config.imds.vm_for(node))


def nmi_status_line(status: int | None, took_ns: int, method: str, path: str, ip: str) -> str:
    """NMI's per-request log line (``server.go`` ``appHandler.ServeHTTP``, sic ``reg.path``; §4 Logging)."""
    return (
        f"status ({status}) took {took_ns} ns for req.method={method} reg.path={path} "
        f"req.remote={_remote_ip(ip)}"
    )


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


def _lookup_pod(c: _Call, pod: Pod | None, ip: str, assume_found: bool) -> Pod | RequestResult:
    """NMI's pod lookup by the caller's address ``ip`` (``<pod IP>`` for a manifest's pod)."""
    cluster, t, node = c.cluster, c.t, c.node
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


def _token_route(c: _Call, pod: Pod | None, assume_found: bool) -> RequestResult:
    """``msiHandler`` in its exact order of checks (nmi-semantics §2 steps 1-9)."""
    cluster, req, t, ip, node, vm = c.cluster, c.req, c.t, c.ip, c.node, c.vm
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
    found = _lookup_pod(c, pod, remote, assume_found)
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
            return t.result(ROUTE_TOKEN, 200, headers, body, SERVED_BY_IMDS, identity=ans.identity)
        t.add(f"IMDS on node {node or '(any)'} answered 400 ({ans.error}); NMI turns it into 403")
        detail = adal_error(400, ans.error_body(), client_id, resource)
        msg = f"failed to get service principal token, error: {detail}"
        return t.http_error(ROUTE_TOKEN, 403, msg, served_by=SERVED_BY_IMDS)
    t.add(
        f"no AzurePodIdentityException in namespace {caller.namespace} "
        "matches and the MIC shortcut does not apply"
    )
    return _serve_identity(
        c, caller, ROUTE_TOKEN, client_id=client_id, res_id=res_id, resource=resource, host=False
    )


def _serve_identity(
    c: _Call,
    pod: Pod,
    route: str,
    *,
    client_id: str,
    res_id: str,
    resource: str,
    host: bool,
    node: str | None = None,
) -> RequestResult:
    """Select the pod's identity as NMI on ``node`` (default: the pod's own) and get its token."""
    cluster, t, vm = c.cluster, c.t, c.vm
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
    return t.result(route, 200, headers, body, SERVED_BY_NMI, identity=ident.key, azure_identity=ident)


def _host_route(c: _Call) -> RequestResult:
    """``hostHandler`` (nmi-semantics §2 "/host/token", §8.9): no Metadata or exception checks, and only
    what NMI on this node can see: standard mode reads only AzureAssignedIdentities labelled
    ``nodename=<node>`` (``crd.go`` ``NewCRDClientLite``/``NodeNameFilter``, ``--enableScaleFeatures``),
    managed mode only pods on this node (``k8s/client.go`` pod informer, field selector spec.nodeName)."""
    cluster, req, t, ip, node = c.cluster, c.req, c.t, c.ip, c.node
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
        c,
        target,
        ROUTE_HOST_TOKEN,
        client_id=req.q("client_id"),
        res_id=res_id,
        resource=resource,
        host=True,
        node=node,
    )
