"""The agent's NMI listener in a thread of its own, and a raw HTTP client, for the agent's unit tests.

Callers are told apart by source address: every 127.0.0.0/8 address is loopback on Linux, so a client
bound to 127.0.0.5 reaches the listener on 127.0.0.1 and NMI sees 127.0.0.5, the pod IP of a fixture pod.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from nmisim.agent.metrics import Metrics
from nmisim.agent.nmi import NmiHandler, engine_request
from nmisim.agent.server import HttpServer
from nmisim.agent.wire import WireError, parse_head
from nmisim.engine.http import TARGET_NMI, HttpRequest, RequestResult
from nmisim.engine.world import World

T = TypeVar("T")
NODE = "node-1"
#: what net/http adds at serve time, which the engine leaves out (http.with_framing)
SERVE_TIME_HEADERS = frozenset({"date", "connection"})


class AgentThread:
    """An event loop in a thread serving NMI's listener for ``world`` on an ephemeral port."""

    def __init__(self, world: World, node: str = NODE) -> None:
        self.world = world
        self.metrics = Metrics(world.counts)
        self.handler = NmiHandler(world, node, self.metrics)
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(self.handler, "127.0.0.1", 0, "nmi")
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> AgentThread:
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the agent's loop (to change the world between requests, as a watch would)."""
        fut: Future[T] = Future()

        def go() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # pragma: no cover - reported to the test
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(go)
        return fut.result(10)


@dataclass
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    closed: bool
    raw: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def engine_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers if k.lower() not in SERVE_TIME_HEADERS}


def build(
    method: str = "GET",
    target: str = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
    headers: list[tuple[str, str]] | None = None,
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> bytes:
    hs = [("Host", "169.254.169.254")] if headers is None else headers
    lines = [f"{method} {target} {version}", *(f"{k}: {v}" for k, v in hs)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def _read_response(sock: socket.socket, head_only: bool) -> tuple[bytes, bool]:
    data = b""
    closed = False
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data, True
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hs = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in lines[1:] if ":" in ln}
    if head_only and not (hs.get("connection") == "close" and "content-length" not in hs):
        return data, False
    if head_only:  # net/http's own error answer: a body even for HEAD, then the connection closes
        while chunk := sock.recv(65536):
            data += chunk
        return data, True
    if "content-length" in hs:
        need = int(hs["content-length"])
        while len(rest) < need:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            rest += chunk
        return head + b"\r\n\r\n" + rest, closed
    if hs.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return head + b"\r\n\r\n" + rest, True
            rest += chunk
        return head + b"\r\n\r\n" + rest, closed
    while True:  # no framing: the body ends when the connection does
        chunk = sock.recv(65536)
        if not chunk:
            return head + b"\r\n\r\n" + rest, True
        rest += chunk


def parse_answer(raw: bytes, seconds: float, closed: bool) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    _, code, reason = [*lines[0].split(" ", 2), "", ""][:3]
    headers = [(ln.split(":", 1)[0], ln.split(":", 1)[1].strip()) for ln in lines[1:] if ":" in ln]
    if any(k.lower() == "transfer-encoding" and v == "chunked" for k, v in headers):
        out = b""
        rest = body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        body = out
    return Answer(int(code), reason, headers, body, seconds, closed, raw)


def send(
    port: int,
    data: bytes,
    src: str = "127.0.0.5",
    timeout: float = 30,
    head_only: bool = False,
) -> Answer:
    """Send raw bytes from ``src``; the first response, and whether the server closed afterwards."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0)) as s:
        started = time.monotonic()
        s.sendall(data)
        raw, closed = _read_response(s, head_only)
        seconds = time.monotonic() - started
        if not closed:
            s.settimeout(0.05)
            try:
                closed = s.recv(1) == b""
            except TimeoutError:
                closed = False
    return parse_answer(raw, seconds, closed)


def expected(world: World, data: bytes, src: str, node: str = NODE) -> RequestResult | WireError:
    """What the engine answers for these bytes from ``src`` (or the error net/http answers itself)."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    try:
        wire = parse_head(head)
    except WireError as err:
        return err
    return world.request(engine_request(wire), ip=src, node=node, target=TARGET_NMI)


def engine_answer(world: World, req: HttpRequest, src: str, node: str = NODE) -> RequestResult:
    """``nmisim request --ip SRC --node NODE --to nmi``: what reaches the agent's listener is NMI's."""
    return world.request(req, ip=src, node=node, target=TARGET_NMI)


def assert_same(ans: Answer, res: RequestResult, method: str = "GET") -> None:
    """The agent's answer on the wire is the engine's: status, headers (but Date/Connection), body."""
    assert ans.status == res.status, (ans.raw[:400], res.explanation)
    want_headers = {k: v for k, v in res.headers.items() if k.lower() not in SERVE_TIME_HEADERS}
    assert ans.engine_headers() == want_headers, (ans.headers, res.headers)
    raw = res.headers.get("Connection") == "close"
    want = b"" if method == "HEAD" and not raw else res.body.encode("utf-8", "surrogateescape")
    assert ans.body == want
    if raw:
        assert ans.header("Date") is None  # net/http's own answer
        assert ans.closed
    else:
        assert ans.header("Date") is not None
