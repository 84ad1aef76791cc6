"""The operator's kopf handlers: start-up, login, clean-up. kopf is the framework (settings, login,
liveness, peering); it watches nothing of nmisim's: every kind is read by the operator's own informers
(:mod:`nmisim.controller.controller`), which keep parsed models only. kopf's watch of pods held every
pod's whole body (an unpaginated first LIST and a worker per object), and the operator's memory with it:
480 MiB at 10,000 pods against a target of 250 (docs/performance.md).

No handler writes anything: kopf never puts its annotations or finalizers on anybody's objects.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from nmisim.controller import metrics
from nmisim.controller.controller import Controller, Options
from nmisim.controller.peering import PeeringGate
from nmisim.controller.writer import Writer
from nmisim.kube.client import APIClient
from nmisim.sources.cluster import Target
from nmisim.sources.credentials import ClientCredentials

log = logging.getLogger(__name__)


def _observe(kind: str, verb: str, code: str) -> None:
    metrics.API_REQUESTS.labels(kind=kind, verb=verb, code=code).inc()


def _latency(verb: str, seconds: float) -> None:
    metrics.API_LATENCY.labels(verb=verb).observe(seconds)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # our own Events only, on transitions (events.py)
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace listing: least privilege
    # With --peering: a replica killed without saying goodbye blocks the others until its keep-alive
    # expires. 30 s (kopf: 60) keeps a handover within a minute, for one keep-alive PATCH every 20-25 s.
    settings.peering.lifetime = 30
    options: Options = memo.get("options") or Options()
    memo["controller"] = Controller(options=options)
    memo["gate"] = PeeringGate(
        name=settings.peering.name,
        identity=str(memo.get("identity") or ""),
        priority=int(settings.peering.priority or 0),
        standalone=bool(settings.peering.standalone),
        mandatory=bool(settings.peering.mandatory),
    )
    try:
        metrics.serve(options.metrics_port)
    except OSError as exc:  # the operator works without /metrics; say so once and go on
        log.error("cannot serve /metrics on port %s: %s", options.metrics_port, exc)
    await start(memo, memo["controller"])


@kopf.on.login()
async def login(memo: kopf.Memo, logger: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
    """kopf's own login, for kopf's requests (peering). The operator's informers and writes go through
    its one client (:func:`start`, at start-up), whose credentials the kubernetes client's loaders read,
    and read again on a 401: kopf re-logs in only for its own requests."""
    return kopf.login_via_client(logger=logger, settings=settings, **kwargs)


async def start(memo: kopf.Memo, ctl: Controller) -> None:
    """The operator's one API client, from the same kubeconfig or service account kopf's login finds."""
    o = ctl.options
    creds = await asyncio.to_thread(ClientCredentials, Target())
    memo["client"] = client = APIClient(
        creds, concurrency=o.concurrency, qps=o.qps, burst=o.burst, observe=_observe, latency=_latency
    )
    ctl.writer = Writer(client)
    ctl.start(client, memo["gate"])


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctl: Controller | None = memo.get("controller")
    if ctl is not None:
        await ctl.stop()
    client: APIClient | None = memo.get("client")
    if client is not None:
        await client.close()
