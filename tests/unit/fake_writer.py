"""A fake of the controller's Writer (``nmisim.controller.writer.WriterLike``) for the reconciler tests:
it records every write and answers as told."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factories import UID

from nmisim.engine.models import Pod
from nmisim.kube.client import Response


def verdict_body(owner: str, status: Mapping[str, Any] | None = None, rv: str = "7") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "resourceVersion": rv,
            "ownerReferences": [{"kind": "Pod", "uid": owner}],
        },
        "status": dict(status or {}),
    }


class FakeWriter:
    """Records every write; answers as told (default: success, echoing a body)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Response] = {}
        self.existing: dict[str, Any] | None = None  # what GET nmiverdict returns
        self.events: list[dict[str, Any]] = []  # what list_events returns: Events of earlier runs
        self.list_error: Exception | None = None  # what list_events raises instead (a 403: WriteError)

    def _answer(self, op: str, body: Any) -> Response:
        return self.answers.get(op) or Response(201 if op == "create" else 200, body)

    async def create_verdict(self, pod: Pod) -> Response:
        self.calls.append(("create", pod.name))
        return self._answer("create", verdict_body(pod.uid, rv="8"))

    async def get_verdict(self, namespace: str, name: str) -> Response:
        self.calls.append(("get", name))
        return Response(200, self.existing) if self.existing else Response(404, {})

    async def patch_verdict_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("patch", dict(status)))
        return self._answer("patch", verdict_body(UID, status, rv="9"))

    async def delete_verdict(self, namespace: str, name: str, uid: str | None = None) -> Response:
        self.calls.append(("delete", name))
        return Response(200, {})

    async def patch_exception_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("exception", dict(status)))
        return Response(
            200,
            {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "20"}, "status": status},
        )

    async def patch_config_status(self, name: str, status: Mapping[str, Any]) -> Response:
        self.calls.append(("config", dict(status)))
        return Response(200, {"metadata": {"name": name, "resourceVersion": "30"}, "status": status})

    async def list_events(self) -> list[dict[str, Any]]:
        if self.list_error is not None:
            raise self.list_error
        return list(self.events)

    async def post_event(self, *, name: str, reason: str, **_: Any) -> Response:
        self.calls.append(("event", (name, reason)))
        return Response(201, {})

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]
