"""The IMDS model for callers NMI never sees (hostNetwork pods, host processes; nmi-semantics §3).

Their packets to 169.254.169.254 leave through OUTPUT, never PREROUTING, so NMI's DNAT does not apply and
on a real node they would reach the real IMDS. This second listener answers them with the engine's IMDS
model instead (:func:`simulate_imds`, the answer ``nmisim request`` gives for a hostNetwork pod), at an
address the Azure SDKs can be pointed at: ``AZURE_POD_IDENTITY_AUTHORITY_HOST=http://<address>`` for
Python, JavaScript, Java and .NET (Go's azidentity has no such override).
"""

from __future__ import annotations

from nmisim.agent.nmi import engine_request, reply_of
from nmisim.agent.server import Peer, Reply
from nmisim.agent.wire import WireRequest
from nmisim.engine.routes import simulate_imds
from nmisim.engine.world import World


class HostImdsHandler:
    """IMDS on ``node``'s VM as the engine models it; no NMI routes, waits or logs."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node

    async def __call__(self, wire: WireRequest, peer: Peer) -> Reply:
        return reply_of(simulate_imds(self.world.config, engine_request(wire), self.node))
