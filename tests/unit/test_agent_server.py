"""``nmisim serve``'s NMI listener over real sockets: for every route and case the answer on the wire is
the engine's (``nmisim request``) for the same objects, and waits are real without holding up others."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from agent_support import NODE, AgentThread, Answer, assert_same, build, engine_answer, send
from factories import CID1, CID2, binding, config, exc, ident, pod, world
from tests.support import eventually

from nmisim.agent.app import Agent, Options
from nmisim.agent.hostimds import HostImdsHandler
from nmisim.engine.http import HttpRequest, RequestResult
from nmisim.engine.models import Pod
from nmisim.engine.paths import go_parse_query
from nmisim.engine.routes import simulate_imds
from nmisim.engine.world import World

BOUND, UNBOUND, EXEMPT, TWO = "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
MD = [("Host", "169.254.169.254"), ("Metadata", "true")]
#: a short NMI schedule: C=1, A=1 attempts 1 s apart
SHORT = {"retryAttemptsForCreated": 1, "retryAttemptsForAssigned": 1, "findIdentityRetryIntervalSeconds": 1}


def fixture_world(nmi: dict[str, object] | None = None, imds: dict[str, object] | None = None) -> World:
    return world(
        ident("id1", "ns", CID1),
        ident("id2", "ns", CID2),
        binding("b1", "ns", "id1", "one"),
        binding("b2a", "ns", "id1", "two"),
        binding("b2b", "ns", "id2", "two"),
        pod("bound", "ns", {"aadpodidbinding": "one"}, ip=BOUND),
        pod("unbound", "ns", {}, ip=UNBOUND),
        pod("exempt", "ns", {"app": "custom"}, ip=EXEMPT),
        pod("two", "ns", {"aadpodidbinding": "two"}, ip=TWO),
        exc("test-exception", "ns", {"app": "custom"}),
        cfg=config({**SHORT, **(nmi or {})}, imds),
    )


@pytest.fixture
def agent() -> Iterator[AgentThread]:
    with AgentThread(fixture_world()) as a:
        yield a


def req(target: str = TOKEN, headers: list[tuple[str, str]] | None = None) -> HttpRequest:
    path, _, raw = target.partition("?")
    hs = tuple((k, v) for k, v in (MD if headers is None else headers) if k != "Host")
    return HttpRequest(path=path, query=go_parse_query(raw), headers=hs, raw=raw)


def roundtrip(
    a: AgentThread, src: str, target: str = TOKEN, headers: list[tuple[str, str]] | None = None
) -> tuple[Answer, RequestResult]:
    hs = MD if headers is None else headers
    ans = send(a.port, build(target=target, headers=hs), src=src)
    res = engine_answer(a.world, req(target, hs), src)
    assert_same(ans, res)
    return ans, res


def test_bound_pod_gets_nmi_token_json(agent: AgentThread) -> None:
    ans, _ = roundtrip(agent, BOUND)
    assert ans.status == 200 and ans.header("Content-Type") == "application/json"
    token = json.loads(ans.body)
    for key in (
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    ):
        assert isinstance(token[key], str), key
    assert token["resource"] == "https://management.azure.com/"
    assert CID1 in token["access_token"] and "NOT-A-REAL-CREDENTIAL" in token["access_token"]
    assert ans.seconds < 0.5


@pytest.mark.parametrize("cid", [CID1, CID2])
def test_client_id_selects_among_identities(agent: AgentThread, cid: str) -> None:
    ans, _ = roundtrip(agent, TWO, TOKEN + f"&client_id={cid}")
    assert ans.status == 200 and cid in json.loads(ans.body)["access_token"]


def test_unbound_pod_waits_then_404(agent: AgentThread) -> None:
    ans, res = roundtrip(agent, UNBOUND)
    assert ans.status == 404 and res.wait_seconds > 0
    assert res.wait_seconds <= ans.seconds < res.wait_seconds + 1.0
    assert ans.body.decode().startswith("getting assigned identities for pod ns/unbound")


def test_retry_after_503_when_configured() -> None:
    with AgentThread(fixture_world({"setRetryAfterHeader": True})) as a:
        ans, res = roundtrip(a, UNBOUND)
    assert (ans.status, ans.header("Retry-After")) == (503, "20")
    assert ans.seconds >= res.wait_seconds > 0


def test_exempt_pod_answered_by_imds_model_identity_not_found(agent: AgentThread) -> None:
    ans, _ = roundtrip(agent, EXEMPT)
    assert ans.status == 403 and b"Identity not found" in ans.body


def test_exempt_pod_system_assigned_200() -> None:
    with AgentThread(fixture_world(imds={"systemAssigned": True})) as a:
        ans, _ = roundtrip(a, EXEMPT)
    assert ans.status == 200 and b"system-assigned" in ans.body


def test_missing_metadata_header_400_exact_body(agent: AgentThread) -> None:
    ans, _ = roundtrip(agent, BOUND, headers=[("Host", "169.254.169.254")])
    assert ans.status == 400
    assert (
        ans.body
        == b'{"error":"invalid_request","error_description":"Required metadata header not specified"}\n'
    )
    assert ans.header("Content-Type") == "application/json; charset=utf-8"


def test_blocked_instance_metadata_403() -> None:
    with AgentThread(fixture_world({"blockInstanceMetadata": True})) as a:
        ans, _ = roundtrip(a, BOUND, "/metadata/instance?api-version=2021-02-01")
    assert (ans.status, ans.body) == (403, b"Request blocked by AAD Pod Identity NMI\n")


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//metadata/identity/oauth2/token?resource=r", "/metadata/identity/oauth2/token?resource=r"),
        ("/metadata/identity/oauth2/token/../token?resource=r", "/metadata/identity/oauth2/token?resource=r"),
        ("/metadata/./instance/compute", "/metadata/instance/compute"),
    ],
)
def test_unclean_paths_301(agent: AgentThread, target: str, location: str) -> None:
    ans, _ = roundtrip(agent, BOUND, target)
    assert (ans.status, ans.header("Location"), ans.header("Content-Length")) == (301, location, "0")


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/identity\\oauth2\\token?resource=r",  # invalid-path 400
        "/metadata/instance?api-version=2021-02-01",  # proxy -> IMDS model
        "/latest/meta-data",  # proxy: header check first
        "/metadata/identity/oauth2/token?api-version=2018-02-01",  # no resource -> 400
        "/metadata/identity/oauth2/token%zz",  # malformed escape: net/http's own 400, closed
        "/metadata/identity/oauth2/token?resource=r&msi_res_id=x",
        "/host/token?resource=r",  # /host/token from a pod address
    ],
)
def test_other_routes_equal_engine(agent: AgentThread, target: str) -> None:
    roundtrip(agent, BOUND, target)


def test_host_token_from_loopback(agent: AgentThread) -> None:
    hs = [*MD, ("podns", "ns"), ("podname", "bound")]
    ans, _ = roundtrip(agent, "127.0.0.1", "/host/token?resource=r", hs)
    assert ans.status == 200 and json.loads(ans.body)["clientid"] == CID1


def test_unknown_ip_pod_list_is_empty_after_lookup_retries(agent: AgentThread) -> None:
    ans, res = roundtrip(agent, "127.0.0.99")
    assert (ans.status, ans.body) == (500, b"pod list is empty\n")
    assert ans.seconds >= res.wait_seconds == pytest.approx(1.2)


@pytest.mark.parametrize("method", ["HEAD", "POST", "DELETE", "FOO"])
def test_methods(agent: AgentThread, method: str) -> None:
    ans = send(agent.port, build(method=method, headers=MD), src=BOUND, head_only=method == "HEAD")
    res = engine_answer(agent.world, HttpRequest(method=method), BOUND)
    assert_same(ans, res, method)


def test_http10_closes_and_keeps_nmi_answer(agent: AgentThread) -> None:
    ans = send(agent.port, build(headers=MD, version="HTTP/1.0"), src=BOUND)
    assert ans.raw.startswith(b"HTTP/1.0 200 OK") and ans.closed
    assert_same(ans, engine_answer(agent.world, HttpRequest(), BOUND))


def waiting(a: AgentThread) -> int:
    """Callers inside NMI's wait right now, read in the agent's own loop."""
    return a.call(lambda: a.handler.waiting)


def test_one_waiting_caller_does_not_hold_up_another(agent: AgentThread) -> None:
    waiter: list[Answer] = []
    t = threading.Thread(target=lambda: waiter.append(send(agent.port, build(headers=MD), UNBOUND)))
    t.start()
    eventually(lambda: waiting(agent) == 1, timeout=10, what="the unbound caller inside NMI's wait")
    served = [send(agent.port, build(headers=MD), BOUND) for _ in range(5)]
    still = waiting(agent)  # all five were answered while the first caller was still waiting
    gauge = agent.call(agent.metrics.render).splitlines()
    t.join()
    assert still == 1 and "nmisim_serve_waiting_requests 1" in gauge
    assert all(s.status == 200 for s in served)
    assert max(s.seconds for s in served) < 0.1, [s.seconds for s in served]
    assert waiter[0].status == 404 and waiter[0].seconds >= 1.0
    assert waiting(agent) == 0


def test_waiting_caller_answered_at_the_next_poll_once_bound() -> None:
    """NMI polls while it waits (every findIdentityRetryInterval, 1 s here, for 3 s): a binding that
    appears meanwhile is served at the next poll, not at once and not at the end of the wait."""
    done: list[tuple[Answer, float]] = []
    with AgentThread(fixture_world({"retryAttemptsForCreated": 3})) as a:
        assert engine_answer(a.world, HttpRequest(), UNBOUND).wait_seconds == 3.0
        t = threading.Thread(
            target=lambda: done.append((send(a.port, build(headers=MD), UNBOUND), time.monotonic()))
        )
        t.start()
        eventually(lambda: waiting(a) == 1, timeout=10, what="the unbound caller inside NMI's wait")
        relabelled = pod("unbound", "ns", {"aadpodidbinding": "one"}, ip=UNBOUND)

        def relabel() -> tuple[int, float]:  # in the agent's loop: no poll can fall in between
            polls = a.handler.polls
            a.world.upsert(relabelled)
            return polls, time.monotonic()

        polls, at = a.call(relabel)
        t.join()
        ans, answered = done[0]
        assert_same(ans, engine_answer(a.world, HttpRequest(), UNBOUND))
        assert ans.status == 200
        assert a.handler.polls == polls + 1  # the one poll after the relabel answered it
        assert answered - at < 1.0 + 0.5  # within one poll interval of the relabel
        assert ans.seconds < 2.0  # the first poll (1 s), not the wait's end (3 s)
        assert waiting(a) == 0


def test_metrics_and_log_line(agent: AgentThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="nmisim.agent.nmi")
    roundtrip(agent, BOUND)
    roundtrip(agent, BOUND, "/metadata/instance")  # proxy: no line, no metric
    lines = [r.getMessage() for r in caplog.records if r.name == "nmisim.agent.nmi"]
    assert len(lines) == 1
    assert lines[0].startswith("status (200) took ")
    assert lines[0].endswith(
        " ns for req.method=GET reg.path=/metadata/identity/oauth2/token req.remote=127.0.0.5"
    )
    text = agent.metrics.render()
    assert (
        'aadpodidentity_nmi_operations_duration_seconds_count{namespace="ns",'
        'operation_type="/metadata/identity/oauth2/token",resource="https://management.azure.com/",'
        'status_code="200"} 1'
    ) in text
    assert 'operation_type="/metadata/instance"' not in text
    pods = sum(1 for _ in agent.world.pods())
    assert f'nmisim_serve_objects{{kind="Pod"}} {pods}' in text.splitlines()
    assert "nmisim_serve_waiting_requests 0" in text.splitlines()


def test_pipelined_requests_answered_in_order(agent: AgentThread) -> None:
    import socket  # noqa: PLC0415

    data = build(headers=MD) + build(target="/metadata/instance?api-version=2021-02-01", headers=MD)
    with socket.create_connection(("127.0.0.1", agent.port), source_address=(BOUND, 0), timeout=10) as s:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + 5
        while buf.count(b"HTTP/1.1 ") < 2 and time.monotonic() < deadline:
            buf += s.recv(65536)
    first, second = buf.split(b"HTTP/1.1 ")[1:3]
    assert first.startswith(b"200") and b"access_token" in first
    assert second.startswith(b"200") and b"nmisim-simulated-vm" in second


def test_world_lookup_by_ip_is_an_index(agent: AgentThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller is found through the World's (node, IP) index, never by listing the pods."""

    def no_scan() -> Iterator[object]:
        raise AssertionError("a request listed every pod")

    monkeypatch.setattr(agent.world, "pods", no_scan)
    roundtrip(agent, BOUND)
    assert NODE == "node-1"


def test_cached_answers_follow_every_change_of_the_world(agent: AgentThread) -> None:
    """The agent keeps answers per world generation: the same request again is served from the cache,
    and any change (here: the binding removed, then the configuration) is answered afresh."""
    first, _ = roundtrip(agent, BOUND)
    again, _ = roundtrip(agent, BOUND)
    assert first.status == again.status == 200 and first.body == again.body
    agent.call(lambda: agent.world.remove("AzureIdentityBinding", "ns", "b1"))
    gone, _ = roundtrip(agent, BOUND)  # roundtrip compares with the engine for the changed world
    assert gone.status != 200
    agent.call(lambda: agent.world.set_config(config({**SHORT, "setRetryAfterHeader": True})))
    retry, _ = roundtrip(agent, BOUND)
    assert retry.status == 503 and gone.status == 404


# --- nmi-semantics §8.4: a caller of NMI's own port from a hostNetwork pod's IP (pkg/k8s/client.go
# getPodList filters on status.podIP and the Pending/Running phase only, never on hostNetwork) ------------

NODE_IP = "127.0.0.9"  # the node's IP, which every hostNetwork pod on it reports as its pod IP


def host_world(*extra: Pod) -> World:
    return world(
        ident("id1", "ns", CID1),
        binding("b1", "ns", "id1", "one"),
        pod("host-bound", "ns", {"aadpodidbinding": "one"}, ip=NODE_IP, host_network=True),
        *extra,
        cfg=config(SHORT),
    )


def test_one_host_network_pod_on_the_node_ip_gets_its_bound_identity() -> None:
    """A host process binding the node IP reaches NMI's port: NMI serves that hostNetwork pod's identity,
    exactly as a DNATed pod's (200, NMI's application/json)."""
    with AgentThread(host_world()) as a:
        ans, res = roundtrip(a, NODE_IP)
    assert (ans.status, ans.header("Content-Type")) == (200, "application/json")
    assert (res.route, res.served_by, res.identity) == ("token", "nmi", "ns/id1")
    assert json.loads(ans.body)["access_token"].endswith(CID1)
    # the same pod's traffic to 169.254.169.254 never reaches NMI: IMDS answers it (route direct)
    direct = a.world.request(req(), ip=NODE_IP, node=NODE)
    assert (direct.route, direct.served_by) == ("direct", "imds")
    assert direct.headers["Content-Type"] == "application/json; charset=utf-8"


def test_two_host_network_pods_on_the_node_ip_are_500_chunked_like_go() -> None:
    """Several Pending/Running pods on the IP: 500 ``failed to match pod IP``; NMI prints each pod in full
    (about 6 KB a pod), so Go sends the body chunked whatever nmisim lists."""
    other = pod("kube-proxy", "kube-system", {}, ip=NODE_IP, host_network=True, phase="Pending")
    done = pod("old-job", "kube-system", {}, ip=NODE_IP, host_network=True, phase="Succeeded")
    with AgentThread(host_world(other, done)) as a:
        ans, _ = roundtrip(a, NODE_IP)
    assert ans.status == 500
    assert (
        ans.body == f"failed to match pod IP {NODE_IP} with [kube-system/kube-proxy ns/host-bound]\n".encode()
    )
    assert ans.header("Transfer-Encoding") == "chunked" and ans.header("Content-Length") is None
    assert ans.header("Content-Type") == "text/plain; charset=utf-8"


@pytest.mark.parametrize("src", [BOUND, UNBOUND, EXEMPT])
def test_nmi_removed_answers_every_pod_with_the_node_imds_model(src: str) -> None:
    """``--nmi-removed`` (the migration's removed phase): the intercepted port is the node's IMDS model,
    the answer ``nmisim request`` gives a hostNetwork caller; no NMI route, wait or binding applies."""
    opts = Options(
        node=NODE, nmi_port=0, http_probe_port=0, prometheus_port=0, iptables=False, nmi_removed=True
    )
    agent = Agent(opts)
    w = fixture_world(imds={"systemAssigned": True})
    agent.world = w
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(agent.start_servers(), loop).result(10)
        server = agent.server("nmi")
        assert isinstance(server.handler, HostImdsHandler)
        t0 = time.monotonic()
        ans = send(server.port, build(target=TOKEN, headers=MD), src=src)
        assert time.monotonic() - t0 < 1  # NMI's unbound pod would wait; the IMDS never does
        want = simulate_imds(w.config, req(), NODE)
        assert (ans.status, json.loads(ans.body)) == (want.status, json.loads(want.body))
        assert b"system-assigned" in ans.body
        for s in agent.servers:
            asyncio.run_coroutine_threadsafe(s.close(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
