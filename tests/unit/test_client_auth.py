"""The one API client reads its credentials again on a 401 (nmisim.kube.client), and the credentials come
from the kubernetes client's own loaders (nmisim.sources.credentials): a kubeconfig whose token file is
rewritten is picked up without a restart. Against a real aiohttp server that accepts one token at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import yaml
from aiohttp import web

from nmisim.kube.client import APIClient, StaticCredentials
from nmisim.sources.cluster import Target
from nmisim.sources.credentials import ClientCredentials


class Rotating:
    """Credentials whose token the test replaces; ``refresh`` reads the replacement."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.ssl = False
        self.current = "old"
        self.next = "old"
        self.refreshes = 0

    def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.current}"}

    def refresh(self) -> bool:
        self.refreshes += 1
        changed = self.next != self.current
        self.current = self.next
        return changed


async def serve(accepted: list[str]) -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if auth != f"Bearer {accepted[0]}":
            return web.json_response({"kind": "Status", "code": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "Pod", "metadata": {"name": "p"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}", seen


def test_a_401_reads_the_credentials_again_and_the_request_goes_through() -> None:
    async def go() -> tuple[int, int, int, list[str]]:
        accepted = ["old"]
        runner, url, seen = await serve(accepted)
        creds = Rotating(url)
        client = APIClient(creds)
        try:
            first = await client.request("PATCH", "/x", {"a": 1})
            accepted[0] = creds.next = "new"  # the old token stops working; the new one is in place
            second = await client.request("PATCH", "/x", {"a": 2})
            resp = await client.get("/y", 5)  # the informers' GETs too
            third = resp.status
            resp.release()
        finally:
            await client.close()
            await runner.cleanup()
        return first.status, second.status, third, seen

    first, second, third, seen = asyncio.run(go())
    assert (first, second, third) == (200, 200, 200)
    assert seen == ["Bearer old", "Bearer old", "Bearer new", "Bearer new"]


def test_credentials_that_did_not_change_give_the_401_back() -> None:
    async def go() -> tuple[int, int]:
        runner, url, seen = await serve(["other"])
        client = APIClient(StaticCredentials(url, False, {"Authorization": "Bearer old"}))
        try:
            resp = await client.request("GET", "/x")
        finally:
            await client.close()
            await runner.cleanup()
        return resp.status, len(seen)

    assert asyncio.run(go()) == (401, 1)  # asked once: nothing new to send


def test_client_credentials_reread_a_rewritten_token_file(tmp_path: Path) -> None:
    """The kubernetes client's kubeconfig loader reads ``tokenFile``; refresh() runs it again."""
    token = tmp_path / "token"
    token.write_text("first-token")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"tokenFile": str(token)}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    creds = ClientCredentials(Target(kubeconfig=str(kubeconfig)))
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.headers() == {"Authorization": "Bearer first-token"}
    assert creds.refresh() is False  # nothing changed
    token.write_text("second-token")
    assert creds.refresh() is True
    assert creds.headers() == {"Authorization": "Bearer second-token"}
