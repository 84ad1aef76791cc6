"""The shared informer (nmisim.kube.informer) against a fake API server: a paginated LIST, WATCH events
and bookmarks, a 410 (as an ERROR event) answered by a relist that deletes what is gone, a kind that is
not served; and the operator's controller fed by its informers: seeded once every kind is listed, a pod
deleted while the watch was away forgotten at the relist and its verdict deleted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web
from factories import UID, pod_body, serve_app
from fake_writer import FakeWriter
from tests.support import eventually_async

from nmisim.controller.controller import WATCHED, Controller
from nmisim.engine.resources import KIND_VERDICT, resource
from nmisim.kube.client import APIClient, StaticCredentials
from nmisim.kube.informer import Informer, Watched


def pod(name: str, rv: str = "1") -> dict[str, Any]:
    """A pod of namespace ns, its uid told by its name's length."""
    return pod_body(name, "ns", uid=f"{UID[:-1]}{len(name)}", rv=rv)


class FakeApi:
    """Pods: LIST in pages of ``page`` (continue tokens), WATCH from the queue ``events``; every other
    collection lists what ``others`` holds under its path (else nothing), and ``missing`` ones answer 404."""

    def __init__(
        self, pods: list[dict[str, Any]], page: int = 2, others: dict[str, list[dict[str, Any]]] | None = None
    ) -> None:
        self.pods = pods
        self.page = page
        self.others = others or {}
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.missing: set[str] = set()
        self.forbidden: set[str] = set()
        self.requests: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if any(request.path.endswith(m) for m in self.missing):
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if any(request.path.endswith(f) for f in self.forbidden):
            return web.json_response({"kind": "Status", "code": 403}, status=403)
        watching = request.query.get("watch") == "1"
        if request.path != "/api/v1/pods":
            if watching:
                await asyncio.sleep(3600)
            items = self.others.get(request.path, [])
            return web.json_response({"items": items, "metadata": {"resourceVersion": "5"}})
        if watching:
            resp = web.StreamResponse()
            await resp.prepare(request)
            while (ev := await self.events.get()) is not None:
                await resp.write(json.dumps(ev).encode() + b"\n")
            return resp
        start = int(request.query.get("continue") or 0)
        items = self.pods[start : start + self.page]
        more = start + self.page < len(self.pods)
        meta = {"resourceVersion": "10", "continue": str(start + self.page) if more else ""}
        return web.json_response({"items": items, "metadata": meta})


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def upsert(self, kind: str, body: Mapping[str, Any]) -> None:
        self.calls.append(("upsert", body["metadata"]["name"], body["metadata"]["resourceVersion"]))

    async def delete(self, kind: str, namespace: str, name: str, resource_version: str) -> None:
        self.calls.append(("delete", name, resource_version))

    async def synced(self, kind: str) -> None:
        self.calls.append(("synced",))


async def serve(api: FakeApi) -> tuple[web.AppRunner, APIClient]:
    runner, port = await serve_app(api.app)
    return runner, APIClient(StaticCredentials(f"http://127.0.0.1:{port}"))


async def _informer_scenario() -> None:
    api = FakeApi([pod("a"), pod("b"), pod("c")])
    runner, transport = await serve(api)
    sink = Recorder()
    informer = Informer(transport, Watched("Pod", "/api/v1/pods", field_selector="spec.nodeName=n1"), sink)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        # three pods in two pages, then synced once
        assert sink.calls == [("upsert", n, "1") for n in "abc"] + [("synced",)]
        assert sum("continue=2" in r for r in api.requests) == 1
        assert all("fieldSelector=spec.nodeName%3Dn1" in r for r in api.requests)
        await api.events.put({"type": "ADDED", "object": pod("d", "11")})
        await api.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}})
        await api.events.put({"type": "DELETED", "object": pod("a", "13")})
        await eventually_async(lambda: len(sink.calls) == 6)
        assert sink.calls[4:] == [("upsert", "d", "11"), ("delete", "a", "13")]
        # 410 as an ERROR event: relist; "b" is gone meanwhile, and is deleted at the list's version
        api.pods = [pod("c", "14"), pod("d", "14")]
        await api.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        await eventually_async(lambda: ("synced",) in sink.calls[6:])
        assert sink.calls[6:] == [
            ("upsert", "c", "14"),
            ("upsert", "d", "14"),
            ("delete", "b", "10"),
            ("synced",),
        ]
        assert informer.lists == 2 and informer.keys == {("ns", "c"), ("ns", "d")}
        # a watch from the list's resourceVersion, with bookmarks
        assert "resourceVersion=10" in api.requests[-1] and "allowWatchBookmarks=true" in api.requests[-1]
    finally:
        task.cancel()
        await api.events.put(None)
        await runner.cleanup()
        await transport.close()


def test_list_watch_bookmark_and_relist_after_410(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nmisim.kube.informer"):
        asyncio.run(_informer_scenario())
    # the line the fault suite counts (tests/faults/test_control_plane.py)
    assert "Pod: relisting after 410 Gone (the resourceVersion is too old)" in caplog.messages


async def _missing_scenario() -> None:
    api = FakeApi([pod("old")])
    runner, transport = await serve(api)
    sink = Recorder()
    informer = Informer(transport, Watched("Pod", "/api/v1/pods"), sink)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert sink.calls == [("upsert", "old", "1"), ("synced",)]
        await eventually_async(lambda: any("watch=1" in r for r in api.requests), what="the watch")
        # the kind stops being served (its CRD removed) while the watch is away: the relist gets 404
        api.missing.add("/pods")
        await api.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        await eventually_async(lambda: len(sink.calls) == 4, what="the relist")
        assert sink.calls[2:] == [("delete", "old", ""), ("synced",)]
        assert informer.keys == set()
    finally:
        task.cancel()
        await api.events.put(None)
        await runner.cleanup()
        await transport.close()


def test_a_kind_that_is_not_served_has_no_objects() -> None:
    asyncio.run(_missing_scenario())


async def _refused_watch_scenario() -> None:
    api = FakeApi([pod("old")])
    runner, transport = await serve(api)
    sink = Recorder()
    informer = Informer(transport, Watched("Pod", "/api/v1/pods"), sink)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        await eventually_async(lambda: any("watch=1" in r for r in api.requests), what="the watch")
        # the kind stops being served while the watch runs: the watch ends, the next one is refused (404)
        api.missing.add("/pods")
        await api.events.put(None)
        await eventually_async(lambda: len(sink.calls) == 4, timeout=10, what="the relist after the 404")
        assert sink.calls[2:] == [("delete", "old", ""), ("synced",)]
    finally:
        task.cancel()
        await runner.cleanup()
        await transport.close()


def test_a_refused_watch_relists_as_client_go_does() -> None:
    """Not only 410: a watch the API server refuses (here 404, the CRD removed) is followed by a relist,
    which forgets the kind's objects; retrying the watch from the old resourceVersion never would."""
    asyncio.run(_refused_watch_scenario())


async def _controller_scenario() -> None:
    # "bb" has its verdict from an earlier run (listed like every NMIVerdict); "a" has none yet
    api = FakeApi([pod("a"), pod("bb")], others={resource(KIND_VERDICT).path(): [_verdict("bb")]})
    api.missing.add("/simulationconfigs")
    runner, transport = await serve(api)
    fake = FakeWriter()
    ctl = Controller(writer=fake)
    await ctl.recorder.load()  # the Events of earlier runs: none
    ctl.informers = [Informer(transport, w, ctl.intake) for w in WATCHED]
    tasks = [asyncio.create_task(i.run()) for i in ctl.informers]
    try:
        # Private: Controller.start() would also run the workers, which take the keys looked at here;
        # seeding once every informer has listed has no public step of its own.
        await ctl._seed_when_synced()
        assert ctl.seeded and len(ctl.store) == 2 and ("ns", "bb") in ctl.store.verdicts
        assert sorted(k for k in ctl.queue.waiting() if k[0] == "verdict") == [
            ("verdict", "ns", "a"),
            ("verdict", "ns", "bb"),
        ]
        # "bb" is deleted while the watch is away (410): the relist forgets it, its verdict goes next
        api.pods = [pod("a")]
        await api.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        await eventually_async(lambda: ctl.store.world.get_pod("ns", "bb") is None, what="the relist")
        await ctl.reconcile(("verdict", "ns", "bb"))
        assert fake.ops() == ["delete"]
    finally:
        for t in tasks:
            t.cancel()
        await api.events.put(None)
        await runner.cleanup()
        await transport.close()


def _verdict(name: str) -> dict[str, Any]:
    """The NMIVerdict of pod ``name`` as an earlier run left it (owned by the pod, an older status)."""
    owner = {"kind": "Pod", "uid": pod(name)["metadata"]["uid"]}
    meta = {"name": name, "namespace": "ns", "resourceVersion": "3", "ownerReferences": [owner]}
    return {"kind": "NMIVerdict", "metadata": meta, "status": {"verdict": "intercepted"}}


def test_the_controller_seeds_from_its_informers_and_forgets_what_a_relist_lacks() -> None:
    asyncio.run(_controller_scenario())


async def _forbidden_scenario(forbidden: set[str]) -> bool:
    api = FakeApi([pod("a")])
    api.missing.add("/simulationconfigs")
    api.forbidden = forbidden
    runner, transport = await serve(api)
    ctl = Controller(writer=FakeWriter())
    await ctl.recorder.load()
    ctl.informers = [Informer(transport, w, ctl.intake) for w in WATCHED]
    tasks = [asyncio.create_task(i.run()) for i in ctl.informers]
    try:
        try:
            await asyncio.wait_for(ctl._seed_when_synced(), 3)
        except TimeoutError:
            return False
        return ctl.seeded and ctl.store.world.get_pod("ns", "a") is not None
    finally:
        for t in tasks:
            t.cancel()
        await api.events.put(None)
        await runner.cleanup()
        await transport.close()


def test_rbac_from_before_the_migration_holds_up_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """ServiceAccounts and Namespaces are read for the migration's status only: with a ClusterRole from
    before them (403 on their list) the operator still starts and serves verdicts; a kind it needs does
    hold it up (the contrast that makes the first assertion mean something)."""
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(_forbidden_scenario({"/serviceaccounts", "/namespaces"}))
    assert "ServiceAccount: list forbidden (403): going on without it" in caplog.text
    assert not asyncio.run(_forbidden_scenario({"/azureidentities"}))
