"""Prometheus metrics of the operator, served on ``/metrics``."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PODS: Final = Gauge("nmisim_pods", "Pods by namespace and NMI verdict", ["namespace", "verdict"])
FINDINGS: Final = Gauge("nmisim_findings", "Findings across all pods, by code", ["code"])
RECONCILE: Final = Histogram(
    "nmisim_reconcile_seconds",
    "Time from a watch event to its writes being done",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS: Final = Counter(
    "nmisim_api_requests_total", "Requests the operator sent to the API server", ["kind", "verb", "code"]
)
API_LATENCY: Final = Histogram(
    "nmisim_api_request_seconds",
    "API request latency",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WRITES: Final = Counter("nmisim_api_writes_total", "Writes that changed something, by object kind", ["kind"])
QUEUE: Final = Gauge("nmisim_queue_depth", "Keys waiting to be written")


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Start the /metrics HTTP server in a thread (port 0 disables it)."""
    if port:
        start_http_server(port, addr=addr)
