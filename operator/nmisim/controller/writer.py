"""The operator's only writes: NMIVerdicts, three status subresources and Events. Never Pods."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, Final, Protocol

from nmisim.controller import metrics
from nmisim.engine.models import KIND_CONFIG, KIND_EXCEPTION, Pod
from nmisim.engine.resources import KIND_EVENT, KIND_VERDICT, resource
from nmisim.kube.client import APIClient, ListError, Response

MERGE: Final = "application/merge-patch+json"
COMPONENT: Final = "nmisim"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "nmisim"}


class WriteError(RuntimeError):
    """A write the API server refused for a reason retrying will not fix by itself."""

    def __init__(self, what: str, resp: Response) -> None:
        super().__init__(f"{what}: HTTP {resp.status}: {resp.message}")
        self.status = resp.status


def _instance() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def _verdicts(namespace: str, name: str = "") -> str:
    path = resource(KIND_VERDICT).path(namespace)
    return f"{path}/{name}" if name else path


def _check(what: str, resp: Response, *ok: int) -> Response:
    if resp.ok or resp.status in ok:
        return resp
    raise WriteError(what, resp)


class WriterLike(Protocol):
    """What the reconcilers write through (``Writer`` against the API server; a fake in the unit tests)."""

    async def create_verdict(self, pod: Pod) -> Response: ...
    async def get_verdict(self, namespace: str, name: str) -> Response: ...
    async def patch_verdict_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Response: ...
    async def delete_verdict(self, namespace: str, name: str, uid: str | None = None) -> Response: ...
    async def patch_exception_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Response: ...
    async def patch_config_status(self, name: str, status: Mapping[str, Any]) -> Response: ...
    async def list_events(self) -> list[dict[str, Any]]: ...
    async def post_event(
        self,
        *,
        name: str,
        namespace: str,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        warning: bool,
        timestamp: str,
    ) -> Response: ...


class Writer:
    """Typed writes on top of the one :class:`APIClient`, counting each one that changed something."""

    def __init__(self, api: APIClient) -> None:
        self.api = api

    async def create_verdict(self, pod: Pod) -> Response:
        """Create the pod's NMIVerdict (empty spec; status comes in a second write). 409 is returned."""
        body = {
            "apiVersion": resource(KIND_VERDICT).api_version,
            "kind": "NMIVerdict",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod.name,
                        "uid": pod.uid,
                        "blockOwnerDeletion": False,
                        "controller": False,
                    }
                ],
            },
            "spec": {},
        }
        resp = await self.api.request("POST", _verdicts(pod.namespace), body, kind="nmiverdicts")
        if resp.ok:
            metrics.WRITES.labels(kind="nmiverdicts").inc()
        return _check(f"create nmiverdict {pod.namespace}/{pod.name}", resp, 409)

    async def get_verdict(self, namespace: str, name: str) -> Response:
        return await self.api.request("GET", _verdicts(namespace, name), kind="nmiverdicts")

    async def patch_verdict_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        resp = await self.api.request(
            "PATCH", _verdicts(namespace, name) + "/status", {"status": status}, content_type=MERGE,
            kind="nmiverdicts/status",
        )  # fmt: skip
        if resp.ok:
            metrics.WRITES.labels(kind="nmiverdicts/status").inc()
        return _check(f"patch nmiverdict {namespace}/{name} status", resp, 404)

    async def delete_verdict(self, namespace: str, name: str, uid: str | None = None) -> Response:
        body = {"preconditions": {"uid": uid}} if uid else None
        resp = await self.api.request("DELETE", _verdicts(namespace, name), body, kind="nmiverdicts")
        if resp.ok:
            metrics.WRITES.labels(kind="nmiverdicts").inc()
        return _check(f"delete nmiverdict {namespace}/{name}", resp, 404, 409)

    async def patch_exception_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        path = resource(KIND_EXCEPTION).path(namespace, name, "status")
        resp = await self.api.request(
            "PATCH", path, {"status": status}, content_type=MERGE, kind="azurepodidentityexceptions/status"
        )
        if resp.ok:
            metrics.WRITES.labels(kind="azurepodidentityexceptions/status").inc()
        return _check(f"patch azurepodidentityexception {namespace}/{name} status", resp, 404)

    async def patch_config_status(self, name: str, status: Mapping[str, Any]) -> Response:
        path = resource(KIND_CONFIG).path(None, name, "status")
        resp = await self.api.request(
            "PATCH", path, {"status": status}, content_type=MERGE, kind="simulationconfigs/status"
        )
        if resp.ok:
            metrics.WRITES.labels(kind="simulationconfigs/status").inc()
        return _check(f"patch simulationconfig {name} status", resp, 404)

    async def list_events(self) -> list[dict[str, Any]]:
        """The Pod Events this operator posted (all namespaces), read page by page."""
        query = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnmisim"
        query += "&fieldSelector=involvedObject.kind%3DPod"
        path = f"{resource(KIND_EVENT).path()}?{query}"
        try:
            return [item async for page in self.api.pages(path, kind="events") for item in page]
        except ListError as exc:
            raise WriteError("list events", Response(exc.status, {"message": str(exc)})) from None

    async def post_event(
        self,
        *,
        name: str,
        namespace: str,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        warning: bool,
        timestamp: str,
    ) -> Response:
        """Post a core/v1 Event with a deterministic name: posting the same transition twice (after a
        run killed after the Event was posted but before it knew) answers 409 and leaves one Event."""
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": _instance(),
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        # an Event follows the status it reports (already written): it yields the rate limit to statuses
        resp = await self.api.request(
            "POST", resource(KIND_EVENT).path(namespace), body, kind="events", background=True
        )
        if resp.ok:
            metrics.WRITES.labels(kind="events").inc()
        return _check(f"post event {namespace}/{name}", resp, 409, 404, 403)
