"""One HTTP request from a pod after the migration (``nmisim request --after``), in the shape of today's
answer (:class:`nmisim.engine.http.RequestResult`) so the two read side by side.

Where the request goes (as :mod:`.classify` decides for the request shapes): nowhere when the pod is not
admitted; to the application's SDK, which exchanges the projected token with Entra, when it can and the
webhook injected the variables; to the proxy sidecar when the pod has one; else to IMDS's address — NMI
in the ``parallel`` phase, the node's IMDS once NMI is ``removed``.
"""

from __future__ import annotations

import json
from typing import Final

from nmisim.engine.http import JSON_UTF8_CT, HttpRequest, RequestResult
from nmisim.engine.imds import fake_token, imds_http, token_subject
from nmisim.engine.migration import proxy as proxy_sidecar
from nmisim.engine.migration import sdk
from nmisim.engine.migration.assess import MigrationInput, PodAssessment
from nmisim.engine.migration.classify import PHASE_PARALLEL, exchange_error
from nmisim.engine.migration.webhook import ENV_CLIENT_ID, ENV_TENANT_ID, ENV_TOKEN_FILE, PROXY_CONTAINER

ROUTE_BLOCKED: Final = "not-admitted"
ROUTE_WORKLOAD_IDENTITY: Final = "workload-identity"
ROUTE_NODE_IMDS: Final = "node-imds"
SERVED_BY_ENTRA: Final = "entra"
SERVED_BY_PROXY: Final = "azwi-proxy"


def request_after(inp: MigrationInput, pod: PodAssessment, req: HttpRequest, phase: str) -> RequestResult:
    """What ``req`` from ``pod`` gets after the migration in ``phase`` (``parallel`` or ``removed``)."""
    state, nmi_pod = pod.state, pod.pod
    assert state is not None and nmi_pod is not None
    wi = inp.config
    adm = state.admission
    why: list[str] = []
    if adm.denied:
        why.append(f"the API server refuses the pod at CREATE: {adm.denied}")
        return RequestResult(ROUTE_BLOCKED, None, {}, "", None, None, 0.0, tuple(why), error=adm.denied)
    if adm.called:
        why.append(f"the webhook mutated the pod (ServiceAccount {state.spec.service_account})")
    else:
        why.append(f"the webhook did not mutate the pod: {adm.not_called_because}")
    app = adm.env.get(state.spec.containers[0].name, {}) if state.spec.containers else {}
    cap = sdk.CAP_WORKLOAD_IDENTITY if state.capability == sdk.CAP_UNKNOWN else state.capability
    is_token = proxy_sidecar.is_token_path(req)
    if (
        is_token
        and adm.mutated
        and sdk.exchanges_token(cap)
        and app.get(ENV_TOKEN_FILE)
        and app.get(ENV_TENANT_ID)
        and (req.q("client_id") or app.get(ENV_CLIENT_ID))
    ):
        client_id = req.q("client_id") or app.get(ENV_CLIENT_ID, "")
        sdks = ", ".join(s.text for s in state.sdks) or "undeclared, assumed capable"
        why.append(
            f"the application's SDK ({sdks}) "
            f"exchanges {app.get(ENV_TOKEN_FILE)} with Entra for {client_id} instead of calling IMDS"
        )
        if req.q("msi_res_id") or req.q("mi_res_id"):
            why.append("a resource ID cannot be named: the SDK asks for AZURE_CLIENT_ID's identity")
        problem = exchange_error(state, wi, client_id)
        if problem:
            why.append(f"Entra refuses: {problem}")
            body = json.dumps({"error": "invalid_request", "error_description": problem})
            return RequestResult(
                ROUTE_WORKLOAD_IDENTITY,
                400,
                {"Content-Type": JSON_UTF8_CT},
                body,
                SERVED_BY_ENTRA,
                None,
                0.0,
                tuple(why),
                error=problem,
            )
        why.append("a federated credential matches issuer, subject and audience: Entra issues the token")
        body = json.dumps(fake_token(req.q("resource"), token_subject(client_id)), separators=(",", ":"))
        return RequestResult(
            ROUTE_WORKLOAD_IDENTITY,
            200,
            {"Content-Type": JSON_UTF8_CT},
            body,
            SERVED_BY_ENTRA,
            client_id.lower(),
            0.0,
            tuple(why),
        )
    if adm.mutated and adm.proxy is not None and PROXY_CONTAINER not in adm.skipped:
        penv = adm.env.get(PROXY_CONTAINER, {})
        why.append(f"azwi-proxy-init redirects 169.254.169.254:80 to the proxy on port {adm.proxy.port}")

        ans = proxy_sidecar.handle(
            req,
            env_client_id=penv.get(ENV_CLIENT_ID, ""),
            env_tenant_id=penv.get(ENV_TENANT_ID, ""),
            exchange=lambda client_id: exchange_error(state, wi, client_id),
        )
        if ans.route != proxy_sidecar.ROUTE_PROXY_FORWARD:
            why.append(f"the proxy answers ({ans.route}): " + (ans.error or f"token for {ans.identity}"))
            return RequestResult(
                ans.route,
                ans.status,
                ans.headers,
                ans.body,
                SERVED_BY_PROXY,
                ans.identity or None,
                0.0,
                tuple(why),
                error=ans.error or None,
            )
        why.append("the proxy forwards other paths to IMDS")
    if phase == PHASE_PARALLEL:
        why.append("the request goes to 169.254.169.254, where NMI still answers (today's answer)")
        today = inp.world.request(req, pod=nmi_pod)
        return RequestResult(
            today.route,
            today.status,
            today.headers,
            today.body,
            today.served_by,
            today.identity,
            today.wait_seconds,
            (*why, *today.explanation),
            error=today.error,
        )
    if wi.pod_link_local_access == "None" and not nmi_pod.host_network:
        why.append("NMI is gone and podLinkLocalAccess: None: the pod cannot reach 169.254.169.254")
        return RequestResult(ROUTE_NODE_IMDS, None, {}, "", None, None, 0.0, tuple(why), error="unreachable")
    vm = inp.world.config.imds.vm_for(nmi_pod.node_name)
    ans2 = imds_http(
        vm, path=req.url_path() or req.path, query=req.query_values(), headers=req.canonical_headers()
    )
    why.append("NMI is gone: the node's IMDS answers with the VM's identities")
    why.append(ans2.explanation)
    return RequestResult(
        ROUTE_NODE_IMDS,
        ans2.status,
        ans2.headers,
        ans2.body,
        "imds",
        ans2.identity,
        0.0,
        tuple(why),
        error=ans2.error,
    )
