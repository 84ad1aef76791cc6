"""Every kopf decorator of the operator. Thin: each handler hands its object to the reconciler.

Only low-level event handlers are used, for every kind: no create/update/resume handlers, so kopf never
writes its annotations or finalizers onto anybody's objects, Pods least of all. Every handler is
``async``: kopf runs sync handlers in threads, and the reconciler's state belongs to the loop.

The in-memory indexes are the engine's (``World``: exceptions by namespace and (key, folded value),
bindings by selector, pods by node and IP, assigned identities by pod), seeded by one paginated LIST of
every kind at start and kept by these handlers; kopf's own ``@kopf.index`` is not used because its
readiness bookkeeping costs O(n^2) in the number of objects (see ``Controller.load_lists``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from nmisim.controller import metrics
from nmisim.controller.api import KubeAPI
from nmisim.controller.reconciler import CONFIG_NAME, Controller, ObjectRecord, Options, parse
from nmisim.controller.writer import Writer
from nmisim.engine.models import (
    KIND_ASSIGNED,
    KIND_BINDING,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    PodIdentityException,
)
from nmisim.engine.resources import KIND_VERDICT, resource


def _gvp(kind: str) -> tuple[str, str, str]:
    """kopf's (group, version, plural) of a kind, from :mod:`nmisim.engine.resources`."""
    r = resource(kind)
    return r.group, r.version, r.plural


log = logging.getLogger(__name__)


async def _controller(memo: kopf.Memo) -> Controller:
    ctl: Controller = memo["controller"]
    if not ctl.seeded:
        await ctl.ensure_seeded()
    return ctl


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # our own Events only, on transitions (writer.py)
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace listing: least privilege
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330  # detect a silent watch stream
    settings.watching.connect_timeout = 10
    # With --peering: a replica killed without saying goodbye blocks the others until its keep-alive
    # expires. 30 s (kopf: 60) keeps a handover within a minute, for one keep-alive PATCH every 20-25 s.
    settings.peering.lifetime = 30
    settings.batching.batch_window = 0.02
    settings.batching.idle_timeout = 30.0
    options: Options = memo.get("options") or Options()
    memo["controller"] = Controller(options=options)
    try:
        metrics.serve(options.metrics_port)
    except OSError as exc:  # the operator works without /metrics; say so once and go on
        log.error("cannot serve /metrics on port %s: %s", options.metrics_port, exc)


@kopf.on.login()
async def login(memo: kopf.Memo, logger: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
    """kopf's own client-library login; the same credentials serve the operator's writes."""
    info = kopf.login_via_client(logger=logger, settings=settings, **kwargs)
    ctl: Controller | None = memo.get("controller")
    if info is not None and ctl is not None:
        old = ctl.writer
        o = ctl.options
        ctl.writer = Writer(KubeAPI(info, concurrency=o.concurrency, qps=o.qps, burst=o.burst))
        if isinstance(old, Writer):
            await old.api.close()
        else:
            ctl.start()
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctl: Controller | None = memo.get("controller")
    if ctl is not None:
        await ctl.stop()
        if isinstance(ctl.writer, Writer):
            await ctl.writer.api.close()


@kopf.on.event(*_gvp(KIND_POD))
async def pod_event(
    event: kopf.RawEvent, namespace: str | None, name: str, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    ctl = await _controller(memo)
    if event["type"] is None:
        ctl.listed(KIND_POD)
    pod = parse(KIND_POD, event["object"]) if event["type"] != "DELETED" else None
    if not isinstance(pod, Pod):
        ctl.pod_deleted(namespace or "", name)
    else:
        ctl.pod_changed(pod, terminating=meta.get("deletionTimestamp") is not None)


@kopf.on.event(*_gvp(KIND_EXCEPTION))
async def exception_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    ctl = await _controller(memo)
    if event["type"] is None:
        ctl.listed(KIND_EXCEPTION)
    exc = parse(KIND_EXCEPTION, event["object"]) if event["type"] != "DELETED" else None
    if not isinstance(exc, PodIdentityException):
        await ctl.exception_deleted(namespace or "", name)
    else:
        await ctl.exception_changed(exc, ObjectRecord.from_body(event["object"]))


async def _identity_kind_event(
    kind: str, event: kopf.RawEvent, memo: kopf.Memo, kwargs: dict[str, Any]
) -> None:
    ctl = await _controller(memo)
    if event["type"] is None:
        ctl.listed(kind)
    namespace, name = kwargs["namespace"] or "", kwargs["name"]
    obj = parse(kind, event["object"]) if event["type"] != "DELETED" else None
    if not isinstance(obj, AzureIdentity | AzureIdentityBinding | AzureAssignedIdentity):
        await ctl.identity_object_deleted(kind, namespace, name)
    else:
        await ctl.identity_object_changed(obj)


@kopf.on.event(*_gvp(KIND_IDENTITY))
async def identity_event(event: kopf.RawEvent, memo: kopf.Memo, **kw: Any) -> None:
    await _identity_kind_event(KIND_IDENTITY, event, memo, kw)


@kopf.on.event(*_gvp(KIND_BINDING))
async def binding_event(event: kopf.RawEvent, memo: kopf.Memo, **kw: Any) -> None:
    await _identity_kind_event(KIND_BINDING, event, memo, kw)


@kopf.on.event(*_gvp(KIND_ASSIGNED))
async def assigned_event(event: kopf.RawEvent, memo: kopf.Memo, **kw: Any) -> None:
    await _identity_kind_event(KIND_ASSIGNED, event, memo, kw)


@kopf.on.event(*_gvp(KIND_VERDICT))
async def verdict_event(event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
    ctl = await _controller(memo)
    if event["type"] is None:
        ctl.listed(KIND_VERDICT)
    ctl.verdict_observed(event["object"], deleted=event["type"] == "DELETED")


@kopf.on.event(*_gvp(KIND_CONFIG))
async def config_event(event: kopf.RawEvent, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    ctl = await _controller(memo)
    if event["type"] is None:
        ctl.listed(KIND_CONFIG)
    if name != CONFIG_NAME:
        return
    if event["type"] == "DELETED":
        await ctl.config_changed(None)
    else:
        await ctl.config_changed(event["object"])
