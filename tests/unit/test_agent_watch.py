"""The agent's informers against a fake API server: own-node pods only (field selector), the
aad-pod-identity kinds, SimulationConfig/default with the command-line flags over it, events, a 410
relist that drops what disappeared, a kind whose CRD is missing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from factories import CID1, pod_body, serve_app
from tests.support import eventually_async

from nmisim.agent.watch import ClusterWatch, StaticCredentials, WorldSink, effective_config
from nmisim.engine.config import SimulationConfig
from nmisim.engine.world import World

NODE = "node-1"


def pod(name: str, ip: str, node: str = NODE, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return pod_body(name, "ns", dict(labels or {}), node=node, ip=ip, rv="1")


CONFIG = {
    "apiVersion": "nmisim.dev/v1alpha1",
    "kind": "SimulationConfig",
    "metadata": {"name": "default", "resourceVersion": "1"},
    "spec": {"nmi": {"blockInstanceMetadata": True, "retryAttemptsForCreated": 3}},
}
IDENTITY = {
    "kind": "AzureIdentity",
    "metadata": {"name": "id", "namespace": "ns", "resourceVersion": "1"},
    "spec": {"type": 0, "clientID": CID1, "resourceID": "/subscriptions/s/resourcegroups/r/providers/x/y/id"},
}


class FakeApi:
    def __init__(self) -> None:
        self.pods = [pod("mine", "10.0.0.1"), pod("elsewhere", "10.0.0.2", node="node-2")]
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.selectors: list[str] = []
        self.gone_once = True
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        sel = request.query.get("fieldSelector", "")
        if path == "/api/v1/pods":
            self.selectors.append(sel)
            items = [p for p in self.pods if sel != f"spec.nodeName={NODE}" or p["spec"]["nodeName"] == NODE]
            if request.query.get("watch"):
                if self.gone_once and request.query.get("resourceVersion") == "10":
                    self.gone_once = False
                    return web.json_response({"kind": "Status", "code": 410}, status=410)
                resp = web.StreamResponse()
                await resp.prepare(request)
                while True:
                    ev = await self.events.get()
                    await resp.write(json.dumps(ev).encode() + b"\n")
            return web.json_response({"items": items, "metadata": {"resourceVersion": "10"}})
        if path.endswith("/azureidentities"):
            return await self._static(request, [IDENTITY])
        if path.endswith("/simulationconfigs"):
            self.selectors.append(sel)
            return await self._static(request, [CONFIG])
        if "aadpodidentity" in path and path.endswith("/azureassignedidentities"):
            return web.json_response({"kind": "Status", "code": 404}, status=404)  # CRD not installed
        return await self._static(request, [])

    async def _static(self, request: web.Request, items: list[dict[str, Any]]) -> web.StreamResponse:
        if request.query.get("watch"):
            await asyncio.sleep(3600)
        return web.json_response({"items": items, "metadata": {"resourceVersion": "5"}})


async def _scenario() -> None:
    api = FakeApi()
    runner, port = await serve_app(api.app)
    world = World()
    store = WorldSink(world, {"set_retry_after_header": True})
    watch = ClusterWatch(StaticCredentials(f"http://127.0.0.1:{port}"), NODE, store)
    try:
        await watch.start(timeout=10)
        assert f"spec.nodeName={NODE}" in api.selectors and "metadata.name=default" in api.selectors
        assert [p.name for p in world.pods()] == ["mine"]
        assert [i.name for i in world.identities()] == ["id"]
        cfg = world.config.nmi
        # SimulationConfig/default's fields, with the flag given on the command line over them
        assert (cfg.block_instance_metadata, cfg.retry_attempts_for_created, cfg.set_retry_after_header) == (
            True,
            3,
            True,
        )
        # the first watch got 410: relisted; now events flow
        api.pods = [pod("mine", "10.0.0.1")]
        await api.events.put({"type": "ADDED", "object": pod("new", "10.0.0.3", labels={"a": "b"})})
        await api.events.put({"type": "DELETED", "object": pod("mine", "10.0.0.1")})
        await api.events.put(
            {"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "bad"}, "spec": []}}
        )
        await eventually_async(lambda: [p.name for p in world.pods()] == ["new"], what="the events applied")
        assert world.pods_at(NODE, "10.0.0.3")[0].labels == {"a": "b"}
        assert not api.gone_once and watch.informers[0].lists == 2  # the 410 was answered by a relist
    finally:
        await watch.close()
        await runner.cleanup()


def test_informers_fill_the_world() -> None:
    asyncio.run(_scenario())


def test_effective_config_flags_over_simulation_config() -> None:
    base = SimulationConfig.from_k8s(CONFIG)
    cfg = effective_config(base, {"block_instance_metadata": False})
    assert (cfg.nmi.block_instance_metadata, cfg.nmi.retry_attempts_for_created) == (False, 3)
    assert effective_config(None, {}) == SimulationConfig.default()
    import pytest  # noqa: PLC0415

    with pytest.raises(ValueError, match="managed mode not intialized in force namespaced mode"):
        effective_config(None, {"operation_mode": "managed"})
    with pytest.raises(ValueError, match="operation mode bogus not supported"):
        effective_config(None, {"operation_mode": "bogus"})
