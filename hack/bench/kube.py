"""The benchmark's own cluster (hack/cluster.sh with an audit log) and how it talks to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from bench.config import AUDIT_POLICY, Paths
from nmisim.kube.client import APIClient, StaticCredentials


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """TLS settings of a kopf ``ConnectionInfo`` (the benchmark logs in as kopf does)."""
    if info.insecure:
        return False
    ctx = ssl.create_default_context()
    if info.ca_path:
        ctx.load_verify_locations(cafile=info.ca_path)
    elif info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        ctx.load_verify_locations(cadata=data)
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(info.certificate_path, info.private_key_path)
    return ctx


def client(info: kopf.ConnectionInfo, **limits: Any) -> APIClient:
    """The operator's client, with the benchmark's fixed credentials."""
    creds = StaticCredentials(str(info.server).rstrip("/"), ssl_context(info), dict(info.as_http_headers()))
    return APIClient(creds, **limits)


def cluster_env(paths: Paths, environ: dict[str, str]) -> dict[str, str]:
    """hack/cluster.sh's environment for the benchmark's cluster: its own directory, the audit log on."""
    return {
        **environ,
        "NMISIM_CLUSTER_DIR": str(paths.cluster),
        "NMISIM_REAL_NODE": "0",  # kwok's fake nodes only: the benchmark measures the operator, not pods
        "NMISIM_APISERVER_EXTRA_ARGS": (
            f"--audit-policy-file={paths.cluster / 'audit-policy.yaml'} --audit-log-path={paths.audit_log}"
            " --audit-log-maxsize=2000 --audit-log-maxbackup=1"
        ),
    }


def cluster_up(paths: Paths, environ: dict[str, str]) -> None:
    paths.cluster.mkdir(parents=True, exist_ok=True)
    (paths.cluster / "audit-policy.yaml").write_text(AUDIT_POLICY)
    subprocess.run(
        [str(paths.root / "hack" / "cluster.sh"), "up"], check=True, env=cluster_env(paths, environ)
    )


def cluster_down(paths: Paths, environ: dict[str, str]) -> None:
    env = {**environ, "NMISIM_CLUSTER_DIR": str(paths.cluster)}
    subprocess.run([str(paths.root / "hack" / "cluster.sh"), "down"], check=False, env=env)


def kubectl(paths: Paths, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        [paths.kubectl, "--kubeconfig", str(paths.kubeconfig), *args],
        input=input, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def login(kubeconfig: Path) -> kopf.ConnectionInfo:
    """Credentials from this kubeconfig (not KUBECONFIG, which the kubernetes client reads once, when it is
    imported), loaded by the kubernetes client as kopf's login_via_client would."""
    import kubernetes.client  # noqa: PLC0415 - only when logging in
    import kubernetes.config  # noqa: PLC0415

    cfg = kubernetes.client.Configuration()
    load: Callable[..., None] = kubernetes.config.load_kube_config  # the client has no annotations
    load(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme=scheme or None,
        token=token or None,
    )


def token_kubeconfig(paths: Paths) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount, for the operator under test."""
    cfg = yaml.safe_load(paths.kubeconfig.read_text())
    token = kubectl(paths, "create", "token", "nmisim", "-n", "nmisim-system", "--duration=6h").strip()
    path = paths.cluster / "operator.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cfg["clusters"][0]["cluster"]}],
                "users": [{"name": "nmisim", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nmisim"}}],
                "current-context": "c",
            }
        )
    )
    return path


PLURALS = {
    "Pod": "pods",
    "AzurePodIdentityException": "azurepodidentityexceptions",
    "AzureIdentity": "azureidentities",
    "AzureIdentityBinding": "azureidentitybindings",
}


def api_path(obj: dict[str, Any], name: bool = False) -> str:
    group_version = obj["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{obj['metadata']['namespace']}/{PLURALS[obj['kind']]}"
    return f"{path}/{obj['metadata']['name']}" if name else path


async def create(api: APIClient, obj: dict[str, Any], path: str | None = None) -> None:
    """POST, retried until the API server has it (201, or 409: already there from an earlier try)."""
    err = ""
    for attempt in range(10):
        try:
            resp = await api.request("POST", path or api_path(obj), obj)
        except (aiohttp.ClientError, TimeoutError) as exc:
            err = str(exc)
        else:
            if resp.ok or resp.status == 409:
                return
            err = f"HTTP {resp.status}: {resp.message}"
        await asyncio.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"cannot create {obj['kind']} {obj['metadata'].get('name')}: {err}")


async def merge_patch(api: APIClient, path: str, body: dict[str, Any]) -> None:
    await api.request("PATCH", path, body, content_type="application/merge-patch+json")


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


Callback = Callable[[float, str, dict[str, Any]], None]


class Watcher:
    """Streams a watch and calls every callback with (when seen, event type, object)."""

    def __init__(self, info: kopf.ConnectionInfo, path: str) -> None:
        self.info, self.path = info, path
        self.callbacks: list[Callback] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, api: APIClient) -> None:
        resp = await api.request("GET", f"{self.path}?limit=1")
        rv = resp.body["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        headers = {"User-Agent": "nmisim-bench-watcher", **self.info.as_http_headers()}
        conn = aiohttp.TCPConnector(ssl=ssl_context(self.info))
        async with aiohttp.ClientSession(headers=headers, connector=conn) as s:
            while True:
                url = f"{self.info.server}{self.path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                    async for line in resp.content:
                        now = time.monotonic()
                        ev = json.loads(line)
                        obj = ev["object"]
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            for cb in self.callbacks:
                                cb(now, ev["type"], obj)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
