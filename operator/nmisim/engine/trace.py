"""Why a pod got its verdict: the rules that decided, each with the objects it looked at.

:meth:`World.evaluate` with ``trace=True`` attaches these :class:`Decision` s to the :class:`PodResult`;
``nmisim explain`` only prints them (the :class:`nmisim.engine.verdict.Decision` type lives with the result it
is part of). Every lookup goes through the world's own matching (exceptions,
``isMIC``, the bindings NMI considers in the configured mode, the pod's AzureAssignedIdentities), so what
is printed is what decided, not a second derivation of it.
"""

from __future__ import annotations

from typing import Final, Protocol

from nmisim.engine.config import SimulationConfig
from nmisim.engine.fold import equal_fold
from nmisim.engine.models import (
    AzureAssignedIdentity,
    AzureIdentity,
    AzureIdentityBinding,
    Pod,
    PodIdentityException,
)
from nmisim.engine.verdict import VERDICT_BYPASS, VERDICT_EXEMPT, VERDICT_INACTIVE, Decision, PodResult

#: the rules a decision can name
RULE_HOST_NETWORK: Final = "hostNetwork"
RULE_INACTIVE: Final = "inactive"
RULE_EXCEPTION: Final = "exception"
RULE_NO_EXCEPTION: Final = "noException"
RULE_MIC_SHORTCUT: Final = "micShortcut"
RULE_NOT_MIC_NAMESPACE: Final = "notMicNamespace"
RULE_NO_BINDING_LABEL: Final = "noBindingLabel"
RULE_BINDING: Final = "binding"
RULE_ASSIGNED: Final = "assignedIdentity"
RULE_MODE: Final = "operationMode"
RULE_RETRIES: Final = "retries"
RULE_RETRY_AFTER: Final = "retryAfter"
RULE_VM_IDENTITIES: Final = "vmIdentities"


class TraceWorld(Protocol):
    """What the decision trace reads from the world (:class:`nmisim.engine.world.World`)."""

    @property
    def config(self) -> SimulationConfig: ...

    def get_exception(self, namespace: str, name: str) -> PodIdentityException | None: ...

    def exceptions(self, namespace: str | None = None) -> list[PodIdentityException]: ...

    def mic_owned(self, pod: Pod) -> bool: ...

    def candidate_bindings(self, pod: Pod) -> list[AzureIdentityBinding]: ...

    def get_identity(self, namespace: str, name: str) -> AzureIdentity | None: ...

    def assigned_for(self, pod: Pod) -> list[AzureAssignedIdentity]: ...


def _matched_labels(pod: Pod, pod_labels: dict[str, str]) -> str:
    pairs = [
        f"{k}={v}" for k, v in sorted(pod_labels.items()) if k in pod.labels and equal_fold(pod.labels[k], v)
    ]
    return ", ".join(pairs) or "?"


def _vm(world: TraceWorld, pod: Pod, why: str = "") -> Decision:
    vm = world.config.imds.vm_for(pod.node_name)
    return Decision(
        RULE_VM_IDENTITIES,
        f"SimulationConfig spec.imds for node {pod.node_name or '(unscheduled)'}: systemAssigned="
        f"{str(vm.system_assigned).lower()}, {len(vm.user_assigned)} user-assigned identities{why}",
        ("SimulationConfig default",),
    )


def decision_trace(world: TraceWorld, pod: Pod, result: PodResult) -> tuple[Decision, ...]:
    """The decisions behind ``result`` (the pod's evaluation in ``world``), in the order they apply."""
    cfg = world.config.nmi
    key = f"{pod.namespace}/{pod.name}"
    if result.verdict == VERDICT_BYPASS:
        return (
            Decision(
                RULE_HOST_NETWORK,
                f"Pod {key} spec.hostNetwork=true: NMI's iptables rule is in PREROUTING, so this traffic "
                "goes straight to IMDS",
                (f"Pod {key}",),
            ),
            _vm(world, pod),
        )
    if result.verdict == VERDICT_INACTIVE:
        return (
            Decision(
                RULE_INACTIVE,
                f"Pod {key} status.phase={pod.phase}: NMI ignores finished pods",
                (f"Pod {key}",),
            ),
        )
    out: list[Decision] = []
    if result.verdict == VERDICT_EXEMPT:
        for name in result.exceptions:
            exc = world.get_exception(pod.namespace, name)
            if exc is None:  # pragma: no cover - result comes from this world
                continue
            out.append(
                Decision(
                    RULE_EXCEPTION,
                    f"AzurePodIdentityException {exc.namespace}/{exc.name} (matched podLabels: "
                    f"{_matched_labels(pod, exc.pod_labels)})",
                    (f"AzurePodIdentityException {exc.namespace}/{exc.name}", f"Pod {key}"),
                )
            )
        if result.mic_shortcut:
            out.append(
                Decision(
                    RULE_MIC_SHORTCUT,
                    f"MIC shortcut: namespace {pod.namespace} is micNamespace={cfg.mic_namespace} and owner "
                    f"ReplicaSet {pod.owner_replicaset} starts with 'mic'",
                    (f"Pod {key}", "SimulationConfig default"),
                )
            )
        out.append(_vm(world, pod, " (IMDS's default-identity rules decide when no client_id is sent)"))
        return tuple(out)
    # intercepted
    present = [e.name for e in world.exceptions(pod.namespace)]
    if present:
        out.append(
            Decision(
                RULE_NO_EXCEPTION,
                f"AzurePodIdentityExceptions in namespace {pod.namespace} ({', '.join(present)}): none "
                "matches the pod's labels",
                tuple(f"AzurePodIdentityException {pod.namespace}/{n}" for n in present),
            )
        )
    else:
        out.append(
            Decision(
                RULE_NO_EXCEPTION,
                f"no AzurePodIdentityException in namespace {pod.namespace} "
                "(NMI never looks at other namespaces)",
            )
        )
    if world.mic_owned(pod) and not result.mic_shortcut:
        out.append(
            Decision(
                RULE_NOT_MIC_NAMESPACE,
                f"MIC shortcut: namespace {pod.namespace} is not micNamespace={cfg.mic_namespace}",
                (f"Pod {key}", "SimulationConfig default"),
            )
        )
    if not pod.binding_label:
        out.append(
            Decision(RULE_NO_BINDING_LABEL, f"Pod {key} has no aadpodidbinding label", (f"Pod {key}",))
        )
    for b in world.candidate_bindings(pod):
        target = f"{b.namespace}/{b.azure_identity}"
        exists = world.get_identity(b.namespace, b.azure_identity) is not None
        out.append(
            Decision(
                RULE_BINDING,
                f"AzureIdentityBinding {b.namespace}/{b.name} (selector {b.selector!r}) -> AzureIdentity "
                f"{target}{'' if exists else ' (does not exist)'}",
                (f"AzureIdentityBinding {b.namespace}/{b.name}", f"AzureIdentity {target}"),
            )
        )
    for a in world.assigned_for(pod):
        node = f" on node {a.node_label}" if a.node_label else ""
        out.append(
            Decision(
                RULE_ASSIGNED,
                f"AzureAssignedIdentity {a.namespace}/{a.name}: status {a.status or '(none)'}{node}",
                (f"AzureAssignedIdentity {a.namespace}/{a.name}",),
            )
        )
    mode = f"operationMode={cfg.operation_mode}"
    if cfg.force_namespaced:
        mode += ", forceNamespaced=true"
    out.append(Decision(RULE_MODE, mode, ("SimulationConfig default",)))
    if result.token_request.wait_seconds:
        out.append(
            Decision(
                RULE_RETRIES,
                f"retryAttemptsForCreated={cfg.retry_attempts_for_created}, retryAttemptsForAssigned="
                f"{cfg.retry_attempts_for_assigned}, findIdentityRetryIntervalSeconds="
                f"{cfg.find_identity_retry_interval_seconds}",
                ("SimulationConfig default",),
            )
        )
    if cfg.set_retry_after_header:
        out.append(
            Decision(
                RULE_RETRY_AFTER,
                "setRetryAfterHeader=true: 'no identity' answers are 503 with Retry-After",
                ("SimulationConfig default",),
            )
        )
    return tuple(out)
