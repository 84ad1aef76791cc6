"""NMI's probe endpoint (``pkg/probes/probes.go``) and its Prometheus endpoint, on their own ports.

``/healthz`` always answers 200; the body is ``Active`` once the first iptables sync has finished, ``Not
Active`` before. Any other path gets Go's ``http.NotFound`` (``404 page not found``).
"""

from __future__ import annotations

from collections.abc import Callable

from nmisim.agent.metrics import Metrics
from nmisim.agent.server import Peer, Reply
from nmisim.agent.wire import WireRequest

TEXT = "text/plain; charset=utf-8"


def not_found() -> Reply:
    body = b"404 page not found\n"
    return Reply(404, {"Content-Type": TEXT, "X-Content-Type-Options": "nosniff"}, body)


def _path(req: WireRequest) -> str:
    return req.path


class HealthHandler:
    def __init__(self, active: Callable[[], bool]) -> None:
        self.active = active

    async def __call__(self, req: WireRequest, peer: Peer) -> Reply:
        if _path(req) != "/healthz":
            return not_found()
        body = b"Active" if self.active() else b"Not Active"
        return Reply(200, {"Content-Type": TEXT}, body)


class MetricsHandler:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, req: WireRequest, peer: Peer) -> Reply:
        if _path(req) != "/metrics":
            return not_found()
        body = self.metrics.render().encode()
        return Reply(200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, body)
