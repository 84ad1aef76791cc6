"""hack/bench_serve.py without a cluster: the floor server answers every (pipelined) request head with
its fixed body, and the targets are judged from the figures, each one able to fail."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]


def bench_serve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "hack" / "bench_serve.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serve"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def side(p50: float, p99: float, rps: float) -> dict[str, Any]:
    return {"p50_ms": p50, "p99_ms": p99, "rps": rps, "sample_ms": [p50, p99]}


def test_the_floor_answers_each_pipelined_request() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "hack" / "bench_serve.py"), "--floor", str(port)])

    def connected() -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            return None

    try:
        conn: socket.socket = eventually(connected, timeout=20, interval=0.1, what="the floor server")
        with conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            buf = b""
            while buf.count(b"HTTP/1.1 200 OK") < 3:
                chunk = conn.recv(65536)
                assert chunk, buf
                buf += chunk
        assert buf.count(b'"token_type": "Bearer"') == 3
    finally:
        proc.terminate()
        proc.wait(10)


def test_targets_are_judged_from_the_figures() -> None:
    bs = bench_serve()
    r = bs.Results(date="2026-12-01", duration_s=1, cores=2, agent_rss_mib=80.0)
    r.cases = [
        bs.Case("1 client", side(0.1, 0.3, 6000), side(0.19, 0.5, 3000)),
        bs.Case("16 clients", side(0.7, 6.0, 15000), side(4.5, 10.0, 3500)),
        bs.Case("200 req/s", side(1.2, 2.5, 200), side(1.6, 25.0, 200)),
    ]
    bs.judge(r)
    met = {name: t["met"] for name, t in r.targets.items()}
    assert met == {
        "p50 1 client <= 2x floor": True,
        "p50 16 clients <= 2x floor": False,
        "p99 at 200 req/s <= 20 ms": False,
        "req/s 16 clients >= 1000": True,
        "agent RSS with 1,000 pods <= 100 MiB": True,
    }
