"""Bad input on the wire: net/http's own answers (400/431/501/417) or a closed connection, never a crash
or a stall for other callers; and a fuzz test over path, query and headers (the answer is the engine's,
or a well-formed 4xx)."""

from __future__ import annotations

import socket
import string
import time
from collections.abc import Iterator

import pytest
from agent_support import AgentThread, Answer, assert_same, build, expected, send
from factories import CID1, binding, config, ident, pod, world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmisim.agent.wire import MAX_HEADER_BYTES, WireError, parse_head, parse_request_uri

SRC = "127.0.0.5"
MD = [("Host", "169.254.169.254"), ("Metadata", "true")]


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentThread]:
    # no waits at all (retry interval 0), so that every fuzzed request is answered at once
    w = world(
        ident("id1", "ns", CID1),
        binding("b1", "ns", "id1", "one"),
        pod("bound", "ns", {"aadpodidbinding": "one"}, ip=SRC),
        cfg=config({"findIdentityRetryIntervalSeconds": 0}),
    )
    with AgentThread(w) as a:
        yield a


def go_error(ans: Answer, status_line: str, body: str | None = None) -> None:
    """net/http's own answer: exact bytes, then the connection closed."""
    body = status_line if body is None else body
    headers = "Content-Type: text/plain; charset=utf-8\r\nConnection: close"
    want = f"HTTP/1.1 {status_line}\r\n{headers}\r\n\r\n{body}"
    assert ans.raw == want.encode()
    assert ans.closed


def still_serving(agent: AgentThread) -> float:
    ans = send(agent.port, build(headers=MD), SRC, timeout=5)
    assert ans.status == 200 and ans.seconds < 0.5
    return ans.seconds


@pytest.mark.parametrize(
    ("data", "status_line"),
    [
        (b"GARBAGE\r\n\r\n", "400 Bad Request"),
        (b"GET /\r\n\r\n", "400 Bad Request"),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),  # invalid method
        (b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", "400 Bad Request"),  # malformed version
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", "400 Bad Request: unsupported protocol version"),
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request: missing required Host header"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "400 Bad Request: malformed Host header"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno-colon\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", "400 Bad Request: invalid header value"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400 Bad Request"),
        (b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),  # invalid URI for request
        (b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),  # control byte in the URL
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400 Bad Request"),
    ],
)
def test_malformed_http_gets_go_400(agent: AgentThread, data: bytes, status_line: str) -> None:
    go_error(send(agent.port, data, SRC, timeout=5), status_line)
    still_serving(agent)


def test_unsupported_transfer_encoding_501(agent: AgentThread) -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    go_error(send(agent.port, data, SRC, timeout=5), "501 Not Implemented", "Unsupported transfer encoding")


def test_unknown_expectation_417(agent: AgentThread) -> None:
    ans = send(agent.port, build(headers=[*MD, ("Expect", "teapot")]), SRC, timeout=5)
    assert (ans.status, ans.header("Connection"), ans.header("Content-Length")) == (417, "close", "0")
    assert ans.closed


def test_huge_headers_431_and_others_unaffected(agent: AgentThread) -> None:
    big = [*MD, *((f"X-Pad-{i}", "a" * 8000) for i in range(140))]  # about 1.1 MB
    data = build(headers=big)
    assert len(data) > MAX_HEADER_BYTES
    go_error(send(agent.port, data, SRC, timeout=10), "431 Request Header Fields Too Large")
    still_serving(agent)


def test_large_headers_under_go_limit_are_served(agent: AgentThread) -> None:
    hs = [*MD, *((f"X-Pad-{i}", "a" * 8000) for i in range(100))]  # 800 KB: Go accepts it
    data = build(headers=hs)
    assert_same(send(agent.port, data, SRC, timeout=10), expected(agent.world, data, SRC))  # type: ignore[arg-type]


def test_huge_query_string(agent: AgentThread) -> None:
    target = "/metadata/identity/oauth2/token?resource=r&pad=" + "x" * 500_000
    data = build(target=target, headers=MD)
    ans = send(agent.port, data, SRC, timeout=10)
    assert ans.status == 200
    assert_same(ans, expected(agent.world, data, SRC))  # type: ignore[arg-type]


def test_non_utf8_path(agent: AgentThread) -> None:
    data = b"GET /metadata/\xff\xfe/x?r=\xc3 HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n"
    res = expected(agent.world, data, SRC)
    assert not isinstance(res, WireError)
    assert_same(send(agent.port, data, SRC, timeout=5), res)
    data = (
        b"GET /metadata/identity/oauth2/token%ff%fe?resource=r HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n"
    )
    res = expected(agent.world, data, SRC)
    assert not isinstance(res, WireError) and res.status == 200
    assert_same(send(agent.port, data, SRC, timeout=5), res)


def test_options_star(agent: AgentThread) -> None:
    ans = send(agent.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", SRC, timeout=5)
    assert (ans.status, ans.header("Content-Length"), ans.body) == (200, "0", b"")


def test_request_bodies_are_discarded_and_the_connection_kept(agent: AgentThread) -> None:
    chunked = build(
        method="POST", headers=[*MD, ("Transfer-Encoding", "chunked")], body=b"5\r\nhello\r\n0\r\n\r\n"
    )
    sized = build(method="POST", headers=[*MD, ("Content-Length", "3")], body=b"abc")
    with socket.create_connection(("127.0.0.1", agent.port), source_address=(SRC, 0), timeout=5) as s:
        s.sendall(chunked + sized + build(headers=MD))
        buf = b""
        deadline = time.monotonic() + 5
        while buf.count(b"HTTP/1.1 200 OK") < 3 and time.monotonic() < deadline:
            buf += s.recv(65536)
    assert buf.count(b"HTTP/1.1 200 OK") == 3


def test_body_over_256k_closes_after_answer(agent: AgentThread) -> None:
    data = build(method="POST", headers=[*MD, ("Content-Length", str(1 << 20))])
    ans = send(agent.port, data, SRC, timeout=5)
    assert ans.status == 200 and ans.header("Connection") == "close" and ans.closed


def test_many_idle_and_half_sent_connections_do_not_stall_others(agent: AgentThread) -> None:
    idle = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
            if i % 2:
                s.sendall(b"GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            idle.append(s)
        assert max(still_serving(agent) for _ in range(10)) < 0.1
    finally:
        for s in idle:
            s.close()
    still_serving(agent)


def test_client_gone_mid_request(agent: AgentThread) -> None:
    for cut in (5, 40, 90):
        with socket.create_connection(("127.0.0.1", agent.port), source_address=(SRC, 0), timeout=5) as s:
            s.sendall(build(headers=MD)[:cut])
    with socket.create_connection(("127.0.0.1", agent.port), source_address=(SRC, 0), timeout=5) as s:
        s.sendall(build(headers=MD))
        s.shutdown(socket.SHUT_WR)  # half-close right after the request: still answered
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
    still_serving(agent)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/b?c=d", "/a/b", "c=d"),
        ("/a?", "/a", ""),
        ("/a?b?c", "/a", "b?c"),
        ("*", "*", ""),
        ("http://169.254.169.254/metadata/x?y", "/metadata/x", "y"),
        ("http://h", "", ""),
        ("a:b", "", ""),
        ("//x/y", "//x/y", ""),
    ],
)
def test_parse_request_uri(target: str, path: str, query: str) -> None:
    assert parse_request_uri(target, "GET") == (path, query)


def test_parse_head_folds_and_trims() -> None:
    req = parse_head(b"GET / HTTP/1.1\nHost: x\nA:  one \n\t two\nConnection: Close\n\n")
    assert req.headers == (("Host", "x"), ("A", "one two"), ("Connection", "Close"))
    assert req.close


# ------------------------------------------------------------------------------------------- fuzz
_path_chars = st.sampled_from(
    [*(string.ascii_letters + string.digits + "/.%-_~:@!$&'()*+,;=\\"), "é", "\udcff"]
)
_segments = st.sampled_from(
    [
        "/metadata",
        "/Metadata",
        "/identity",
        "/oauth2",
        "/token",
        "/instance",
        "/host",
        "/..",
        "/.",
        "//",
        "/%2e",
        "/%zz",
    ]
)
paths = st.one_of(
    st.lists(_segments, max_size=6).map("".join),
    st.lists(_path_chars, max_size=40).map(lambda cs: "/" + "".join(cs)),
)
_q_keys = st.sampled_from(
    ["resource", "client_id", "msi_res_id", "mi_res_id", "object_id", "api-version", "x", ""]
)
_q_values = st.text(alphabet=string.ascii_letters + string.digits + "%+:/.-_;=&", max_size=20)
queries = st.lists(st.tuples(_q_keys, _q_values), max_size=5).map(
    lambda kv: "&".join(f"{k}={v}" for k, v in kv)
)
_h_names = st.sampled_from(["Metadata", "metadata", "METADATA", "podns", "podname", "X-Any", "Content-Type"])
_h_values = st.text(alphabet=string.printable.replace("\r", "").replace("\n", "") + "\x01é", max_size=20)
headers = st.lists(st.tuples(_h_names, _h_values), max_size=4)
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "PATCH", "X-ODD"])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, query=queries, hs=headers)
def test_fuzz_answer_is_engine_or_go_4xx(
    agent: AgentThread, method: str, path: str, query: str, hs: list[tuple[str, str]]
) -> None:
    target = path + ("?" + query if query else "")
    data = build(method=method, target=target, headers=[("Host", "169.254.169.254"), *hs])
    ans = send(agent.port, data, SRC, timeout=5, head_only=method == "HEAD")
    want = expected(agent.world, data, SRC)
    if isinstance(want, WireError):
        assert 400 <= want.status < 500 and ans.closed
        if method != "HEAD":
            assert ans.raw == want.render()
    else:
        assert_same(ans, want, method)
