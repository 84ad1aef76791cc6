"""Workloads as pods-to-be: the pods Kubernetes' controllers would create from a workload's template.

Nearly every manifest a team keeps is a Deployment, a StatefulSet or a chart, not a Pod. NMI sees only pods,
so a workload is turned into the pods its controller would create, as that controller builds them: the
template's labels and annotations plus the labels the controller adds, the workload's namespace, the
template's ``hostNetwork`` and an owner reference (a Deployment's pods are owned by its ReplicaSet
``<name>-<pod-template-hash>``, so NMI's ``isMIC`` shortcut decides exactly as for live pods).

Names follow each controller's shape (kube-controller-manager v1.3x):

- Deployment → ReplicaSet ``<name>-<hash>`` → pods ``<rs>-<5 chars>`` (the pod-template-hash label too);
- ReplicaSet, ReplicationController → ``<name>-<5 chars>``;
- StatefulSet → ``<name>-<ordinal>`` from ``spec.ordinals.start`` (default 0);
- DaemonSet → one pod per node, ``<name>-<5 chars>`` (one representative pod: nodes are not in manifests);
- Job → ``<name>-<5 chars>`` (Indexed: ``<name>-<index>-<5 chars>``), ``min(parallelism, completions)`` pods;
- CronJob → Job ``<name>-<minutes since the epoch of the scheduled time>`` → as a Job;
- PodTemplate → one pod named as the template.

Differences from the real controllers (docs/differences.md): the pod-template-hash has the same *shape*
(FNV-32a, then Kubernetes' safe alphabet) but hashed over the template's canonical JSON, not over Go's
printing of the struct, so its value differs from the cluster's; the random 5-character suffixes are derived
from the owner's name and the replica's index, so they are stable from run to run; a CronJob's scheduled
time is a fixed minute (:data:`CRONJOB_SCHEDULED_MINUTE`), not the clock's. No NMI decision depends on these
values: NMI's ``isMIC`` reads the ReplicaSet's name prefix, which is the Deployment's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.engine import findings as F
from nmisim.engine.findings import Finding
from nmisim.engine.models import (
    BINDING_LABEL,
    KIND_POD,
    ModelError,
    get_int,
    get_map,
    get_str_map,
    parse_metadata,
)

KIND_DEPLOYMENT: Final = "Deployment"
KIND_REPLICASET: Final = "ReplicaSet"
KIND_STATEFULSET: Final = "StatefulSet"
KIND_DAEMONSET: Final = "DaemonSet"
KIND_JOB: Final = "Job"
KIND_CRONJOB: Final = "CronJob"
KIND_REPLICATION_CONTROLLER: Final = "ReplicationController"
KIND_POD_TEMPLATE: Final = "PodTemplate"
WORKLOAD_KINDS: Final = (
    KIND_DEPLOYMENT,
    KIND_REPLICASET,
    KIND_STATEFULSET,
    KIND_DAEMONSET,
    KIND_JOB,
    KIND_CRONJOB,
    KIND_REPLICATION_CONTROLLER,
    KIND_POD_TEMPLATE,
)
#: the apiVersion of each workload kind (a PodTemplate's is v1)
API_VERSIONS: Final = {
    KIND_DEPLOYMENT: "apps/v1",
    KIND_REPLICASET: "apps/v1",
    KIND_STATEFULSET: "apps/v1",
    KIND_DAEMONSET: "apps/v1",
    KIND_JOB: "batch/v1",
    KIND_CRONJOB: "batch/v1",
    KIND_REPLICATION_CONTROLLER: "v1",
}

#: k8s.io/apimachinery/pkg/util/rand: the alphabet of generated names and SafeEncodeString (no vowels, no
#: look-alikes)
SAFE_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
#: apiserver names.SimpleNameGenerator: generateName is cut to 63 - 5 characters before the suffix
MAX_GENERATE_NAME_BASE: Final = 58
#: the scheduled time used for a CronJob's Job name, in minutes since the epoch (2026-01-01T00:00Z)
CRONJOB_SCHEDULED_MINUTE: Final = 29_432_160

LABEL_POD_TEMPLATE_HASH: Final = "pod-template-hash"
LABEL_CONTROLLER_REVISION_HASH: Final = "controller-revision-hash"
LABEL_POD_TEMPLATE_GENERATION: Final = "pod-template-generation"
LABEL_STS_POD_NAME: Final = "statefulset.kubernetes.io/pod-name"
LABEL_POD_INDEX: Final = "apps.kubernetes.io/pod-index"
LABEL_JOB_NAME: Final = "batch.kubernetes.io/job-name"
LABEL_JOB_NAME_LEGACY: Final = "job-name"
LABEL_CONTROLLER_UID: Final = "batch.kubernetes.io/controller-uid"
LABEL_CONTROLLER_UID_LEGACY: Final = "controller-uid"
LABEL_JOB_INDEX: Final = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload and the pods its controller would create (as Pod manifests, parsed like any other)."""

    kind: str
    namespace: str
    name: str
    #: replicas asked for; None for a DaemonSet (one pod per node)
    replicas: int | None
    pods: tuple[Mapping[str, Any], ...]
    annotations: Mapping[str, str]
    findings: tuple[Finding, ...] = ()
    #: where the pod template is in the workload (errors in it are named from there)
    template_path: str = "spec.template"

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def replicas_text(self) -> str:
        return "per node" if self.replicas is None else str(self.replicas)


def fnv32a(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """apimachinery rand.SafeEncodeString: every byte mapped into :data:`SAFE_ALPHABET`."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in text.encode())


def template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """The pod-template-hash's shape: FNV-32a of the template (and the collision count), safe-encoded."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    return safe_encode(str(fnv32a(data)))


def generated_name(base: str, seed: str) -> str:
    """``generateName`` + 5 characters, as the API server names a pod; the suffix is derived from ``seed``."""
    h = fnv32a(seed.encode())
    suffix = ""
    for _ in range(5):
        suffix += SAFE_ALPHABET[h % len(SAFE_ALPHABET)]
        h //= len(SAFE_ALPHABET)
    return base[:MAX_GENERATE_NAME_BASE] + suffix


def is_workload(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") in WORKLOAD_KINDS


def _template(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    tpl = get_map(spec, "template", "spec")
    if not tpl:
        raise ModelError("spec.template", "required (the pod template)")
    return tpl


def _replicas(spec: Mapping[str, Any], key: str, prefix: str, default: int = 1) -> int:
    n = get_int(spec, key, prefix, default)
    if n < 0:
        raise ModelError(f"{prefix}.{key}", f"must be 0 or more, got {n}")
    return n


def _pod(
    template: Mapping[str, Any],
    tpath: str,
    namespace: str,
    name: str,
    *,
    extra_labels: Mapping[str, str],
    owner: tuple[str, str, str] | None,
    extra_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod manifest from a template, as the controller would post it (no status: not yet scheduled)."""
    tmeta = get_map(template, "metadata", tpath)
    labels = {**get_str_map(tmeta, "labels", f"{tpath}.metadata"), **extra_labels}
    annotations = {
        **get_str_map(tmeta, "annotations", f"{tpath}.metadata"),
        **(extra_annotations or {}),
    }
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if owner is not None:
        api_version, kind, owner_name = owner
        meta["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec = get_map(template, "spec", tpath)
    return {"apiVersion": "v1", "kind": KIND_POD, "metadata": meta, "spec": dict(spec)}


def _label_findings(
    kind: str, meta_labels: Mapping[str, str], template_labels: Mapping[str, str]
) -> tuple[Finding, ...]:
    """The workload carries ``aadpodidbinding`` on its own metadata but not on its pod template: the pods,
    which are what MIC and NMI read, get no label (upstream issue #1074: 404 after NMI's wait)."""
    value = meta_labels.get(BINDING_LABEL)
    if value is None or BINDING_LABEL in template_labels:
        return ()
    return (
        Finding(
            F.BINDING_LABEL_ON_WORKLOAD,
            f"the {kind}'s metadata.labels has {BINDING_LABEL}={value} but its pod template does not: "
            f"MIC and NMI read the pod's labels; move the label to spec.template.metadata.labels",
        ),
    )


def expand(obj: Mapping[str, Any]) -> Workload:
    """The pods ``obj`` (a workload of :data:`WORKLOAD_KINDS`) would have. Raises :class:`ModelError`."""
    kind = str(obj.get("kind"))
    meta = parse_metadata(obj)
    ns, name = meta.namespace, meta.name
    api_version = API_VERSIONS.get(kind, "v1")
    spec = get_map(obj, "spec", "")
    pods: list[dict[str, Any]] = []
    replicas: int | None

    if kind == KIND_POD_TEMPLATE:
        tpl = get_map(obj, "template", "")
        tpath = "template"
        pods.append(_pod(tpl, tpath, ns, name, extra_labels={}, owner=None))
        replicas = 1
    elif kind == KIND_CRONJOB:
        job_tpl = get_map(spec, "jobTemplate", "spec")
        job_spec = get_map(job_tpl, "spec", "spec.jobTemplate")
        tpl = get_map(job_spec, "template", "spec.jobTemplate.spec")
        tpath = "spec.jobTemplate.spec.template"
        if not tpl:
            raise ModelError(tpath, "required (the pod template)")
        job_name = f"{name}-{CRONJOB_SCHEDULED_MINUTE}"
        replicas = _job_pods(
            pods, job_spec, "spec.jobTemplate.spec", tpl=tpl, tpath=tpath, ns=ns, job=job_name
        )
    else:
        tpl, tpath = _template(spec), "spec.template"
        if kind in (KIND_DEPLOYMENT, KIND_REPLICASET, KIND_REPLICATION_CONTROLLER):
            # a Deployment's pods are its ReplicaSet's: owned by <name>-<pod-template-hash>, which they carry
            replicas = _replicas(spec, "replicas", "spec")
            owner: tuple[str, str, str] = (api_version, kind, name)
            extra: dict[str, str] = {}
            if kind == KIND_DEPLOYMENT:
                status = get_map(obj, "status", "")
                h = template_hash(tpl, get_int(status, "collisionCount", "status"))
                owner, extra = ("apps/v1", KIND_REPLICASET, f"{name}-{h}"), {LABEL_POD_TEMPLATE_HASH: h}
            base = owner[2]
            for i in range(replicas):
                pods.append(
                    _pod(
                        tpl,
                        tpath,
                        ns,
                        generated_name(f"{base}-", f"{base}/{i}"),
                        extra_labels=extra,
                        owner=owner,
                    )
                )
        elif kind == KIND_STATEFULSET:
            replicas = _replicas(spec, "replicas", "spec")
            start = get_int(get_map(spec, "ordinals", "spec"), "start", "spec.ordinals")
            revision = f"{name}-{template_hash(tpl)}"
            for i in range(start, start + replicas):
                pod_name = f"{name}-{i}"
                labels = {
                    LABEL_CONTROLLER_REVISION_HASH: revision,
                    LABEL_STS_POD_NAME: pod_name,
                    LABEL_POD_INDEX: str(i),
                }
                pods.append(
                    _pod(tpl, tpath, ns, pod_name, extra_labels=labels, owner=(api_version, kind, name))
                )
        elif kind == KIND_DAEMONSET:
            replicas = None
            labels = {
                LABEL_CONTROLLER_REVISION_HASH: template_hash(tpl),
                LABEL_POD_TEMPLATE_GENERATION: str(max(meta.generation, 1)),
            }
            pods.append(
                _pod(
                    tpl,
                    tpath,
                    ns,
                    generated_name(f"{name}-", f"{name}/0"),
                    extra_labels=labels,
                    owner=(api_version, kind, name),
                )
            )
        elif kind == KIND_JOB:
            replicas = _job_pods(pods, spec, "spec", tpl=tpl, tpath=tpath, ns=ns, job=name, uid=meta.uid)
        else:
            raise ModelError("kind", f"not a workload kind: {kind}")

    tmeta_labels = get_str_map(get_map(tpl, "metadata", tpath), "labels", f"{tpath}.metadata")
    return Workload(
        kind=kind,
        namespace=ns,
        name=name,
        replicas=replicas,
        pods=tuple(pods),
        annotations=meta.annotations,
        findings=_label_findings(kind, meta.labels, tmeta_labels),
        template_path=tpath,
    )


def _job_pods(
    pods: list[dict[str, Any]],
    job_spec: Mapping[str, Any],
    prefix: str,
    *,
    tpl: Mapping[str, Any],
    tpath: str,
    ns: str,
    job: str,
    uid: str = "",
) -> int:
    """A Job's running pods: ``min(parallelism, completions)`` (each 1 by default)."""
    parallelism = _replicas(job_spec, "parallelism", prefix)
    completions = job_spec.get("completions")
    n = parallelism if completions is None else min(parallelism, _replicas(job_spec, "completions", prefix))
    indexed = job_spec.get("completionMode") == "Indexed"
    controller_uid = uid or f"nmisim-{template_hash({'job': job, 'ns': ns})}"
    for i in range(n):
        labels = {
            LABEL_CONTROLLER_UID: controller_uid,
            LABEL_CONTROLLER_UID_LEGACY: controller_uid,
            LABEL_JOB_NAME: job,
            LABEL_JOB_NAME_LEGACY: job,
        }
        annotations: dict[str, str] = {}
        base = f"{job}-"
        if indexed:
            labels[LABEL_JOB_INDEX] = str(i)
            annotations[LABEL_JOB_INDEX] = str(i)
            base = f"{job}-{i}-"
        pods.append(
            _pod(
                tpl,
                tpath,
                ns,
                generated_name(base, f"{job}/{i}"),
                extra_labels=labels,
                owner=("batch/v1", KIND_JOB, job),
                extra_annotations=annotations,
            )
        )
    return n
