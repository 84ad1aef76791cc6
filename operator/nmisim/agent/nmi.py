"""NMI's listener: every request answered with what the engine says, after the wait it says.

The answer is :meth:`World.request` for the caller's source IP on this node, the same call ``nmisim
request`` makes; this module only turns the wire request into the engine's :class:`HttpRequest`, waits
``wait_seconds`` for real (an asyncio sleep: other callers are served meanwhile), writes NMI's per-request
log line with the measured duration and records NMI's metrics.

During a wait NMI keeps polling (every ``findIdentityRetryInterval`` for identities, every 300 ms for the
pod): when a poll would now succeed, NMI answers at once. So does the agent: at each of NMI's polls it asks
the engine again, and a 200 with no wait is answered then; a pod that appears during the pod-lookup
retries starts the engine's plan for it afresh. Otherwise the first answer stands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from nmisim.agent.metrics import Metrics
from nmisim.agent.server import Peer, Reply
from nmisim.agent.wire import WireRequest
from nmisim.engine.http import SERVED_BY_IMDS, TARGET_NMI, HttpRequest, RequestResult
from nmisim.engine.models import TYPE_SERVICE_PRINCIPAL, TYPE_SERVICE_PRINCIPAL_CERTIFICATE
from nmisim.engine.paths import go_parse_query
from nmisim.engine.router import ROUTE_HOST_TOKEN, ROUTE_TOKEN
from nmisim.engine.routes import nmi_status_line
from nmisim.engine.world import World

log = logging.getLogger("nmisim.agent.nmi")

POD_LIST_EMPTY: Final = "pod list is empty"
#: NMI's pod-lookup retry spacing (nmi-semantics §2 "Finding the pod")
POD_LOOKUP_POLL: Final = 0.3
#: extra attempts NMI makes after the first failed pod lookup: each failure is counted
POD_LOOKUP_ATTEMPTS: Final = 5
#: answers kept per world generation (a client asking again for the same token gets it from here)
ANSWER_CACHE_SIZE: Final = 4096


def engine_request(req: WireRequest) -> HttpRequest:
    """The engine's view of a wire request: path as sent, ``URL.Query()``, the headers but ``Host``
    (``net/http`` moves it to ``req.Host``)."""
    return HttpRequest(
        method=req.method,
        path=req.path,
        query=go_parse_query(req.raw_query),
        headers=tuple((k, v) for k, v in req.headers if k.lower() != "host"),
        raw=req.raw_query,
    )


def reply_of(res: RequestResult) -> Reply:
    """The engine's answer as the handler writes it; ``Connection: close`` marks one ``net/http`` writes
    itself (a malformed escape: no handler ran)."""
    raw = res.headers.get("Connection") == "close"
    return Reply(res.status or 500, res.headers, res.body.encode("utf-8", "surrogateescape"), raw=raw)


class NmiHandler:
    """Answers requests on NMI's listen address as NMI on ``node`` would."""

    def __init__(self, world: World, node: str, metrics: Metrics) -> None:
        self.world = world
        self.node = node
        self.metrics = metrics
        self._answers: dict[tuple[WireRequest, str], tuple[HttpRequest, RequestResult]] = {}
        self._generation = world.generation
        #: polls made during waits so far, each a fresh look at the world (NMI's retries)
        self.polls = 0

    @property
    def waiting(self) -> int:
        """Callers inside NMI's wait right now (the ``nmisim_serve_waiting_requests`` gauge)."""
        return self.metrics.waiting

    def simulate(self, req: HttpRequest, ip: str) -> RequestResult:
        """What NMI answers: whatever reaches its listener (DNATed from a pod, or sent to its port by a
        host process) is looked up by source IP, hostNetwork pods included (§8.4)."""
        return self.world.request(req, ip=ip, node=self.node, target=TARGET_NMI)

    def answer(self, wire: WireRequest, ip: str) -> tuple[HttpRequest, RequestResult]:
        """The engine's answer, computed once per world generation for the same request and caller (the
        engine is a pure function of the world; any change to it starts afresh)."""
        if self._generation != self.world.generation:
            self._answers.clear()
            self._generation = self.world.generation
        key = (wire, ip)
        hit = self._answers.get(key)
        if hit is not None:
            return hit
        req = engine_request(wire)
        res = self.simulate(req, ip)
        if len(self._answers) >= ANSWER_CACHE_SIZE:
            self._answers.clear()
        self._answers[key] = (req, res)
        return req, res

    def immediate(self, wire: WireRequest, peer: Peer) -> Reply | None:
        """The answer when the engine has it at once (no wait), for the server to write without a task;
        None when NMI would wait (then the server awaits :meth:`__call__`)."""
        started = time.monotonic()
        req, res = self.answer(wire, peer.ip)
        if res.wait_seconds > 0:
            return None
        self._record(req, peer.ip, res, time.monotonic() - started)
        return reply_of(res)

    async def __call__(self, wire: WireRequest, peer: Peer) -> Reply:
        started = time.monotonic()
        req, res = self.answer(wire, peer.ip)
        if res.wait_seconds > 0:
            self.metrics.waiting += 1
            try:
                waited = await self._wait(req, peer, res, started)
            finally:
                self.metrics.waiting -= 1
            if waited is None:
                self._record(req, peer.ip, res, time.monotonic() - started, cancelled=True)
                return reply_of(res)
            res = waited
        self._record(req, peer.ip, res, time.monotonic() - started)
        return reply_of(res)

    async def _wait(
        self, req: HttpRequest, peer: Peer, res: RequestResult, started: float
    ) -> RequestResult | None:
        """Wait out ``res``'s wait, polling as NMI polls; None when the client went away."""
        loop = asyncio.get_running_loop()
        deadline = started + res.wait_seconds
        while True:
            now = time.monotonic()
            if now >= deadline:
                return res
            lookup = res.error == POD_LIST_EMPTY
            poll = (
                POD_LOOKUP_POLL
                if lookup
                else float(self.world.config.nmi.find_identity_retry_interval_seconds)
            )
            step = min(deadline - now, poll if poll > 0 else deadline - now)
            gone = loop.create_task(peer.gone.wait())
            try:
                done, _ = await asyncio.wait({gone}, timeout=step)
            finally:
                gone.cancel()
            if done:
                return None
            # NMI polls again now (its last poll is at the deadline): a success is answered at once
            self.polls += 1
            fresh = self.simulate(req, peer.ip)
            if fresh.status == 200 and fresh.wait_seconds == 0:
                return fresh
            if lookup and fresh.error != POD_LIST_EMPTY:
                res = fresh
                deadline = time.monotonic() + fresh.wait_seconds

    def _record(
        self, req: HttpRequest, ip: str, res: RequestResult, seconds: float, *, cancelled: bool = False
    ) -> None:
        if not res.nmi_log:
            return  # only the token and /host/token handlers log and measure (§8.12)
        path = req.url_path() or req.path
        if res.nmi_log[0].startswith("panic"):
            log.error("%s", res.nmi_log[0])
            return
        line = nmi_status_line(res.status, round(seconds * 1e9), req.method, path, ip)
        if cancelled:
            log.info("%s (client went away: context canceled)", line)
        else:
            log.info("%s", line)
        if res.route == ROUTE_HOST_TOKEN:
            namespace = req.header("podns")
        else:
            found = self.world.pods_at(self.node, ip)
            namespace = found[0].namespace if len(found) == 1 else ""
        self.metrics.nmi_operation(path, res.status, namespace, req.q("resource"), seconds)
        if res.error == POD_LIST_EMPTY:
            self.metrics.kubernetes_error("get_pod_list", POD_LOOKUP_ATTEMPTS)
        self._imds_metrics(req, res)

    def _imds_metrics(self, req: HttpRequest, res: RequestResult) -> None:
        """NMI's calls to IMDS/AAD (``pkg/auth``): the exempt/MIC token fetch, and GetTokens."""
        if res.route == ROUTE_TOKEN and res.served_by == SERVED_BY_IMDS:
            op = "adal_token_msi_userassignedid" if req.q("client_id") else "adal_token_msi"
        elif res.azure_identity is not None:
            ident = res.azure_identity
            if ident.type in (TYPE_SERVICE_PRINCIPAL, TYPE_SERVICE_PRINCIPAL_CERTIFICATE):
                op = "adal_token"
            elif ident.type == 0:
                op = "adal_token_msi_userassignedid" if ident.client_id else "adal_token_msi"
            else:
                return
        else:
            return
        self.metrics.imds_operation(op, res.status == 200, 0.0)
