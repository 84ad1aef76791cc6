"""What the Workload Identity side reads: a pod's spec as the webhook sees it, ServiceAccounts, namespaces'
Pod Security levels (workload-identity.md §1.2, §2.1). Parsed from plain Kubernetes dicts, strict about
types (errors name the field path) and lenient about absent fields, as :mod:`nmisim.engine.models` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nmisim.engine.models import (
    ModelError,
    get_bool,
    get_int,
    get_map,
    get_str,
    get_str_map,
    parse_metadata,
)

USE_LABEL: Final = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION: Final = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION: Final = "azure.workload.identity/tenant-id"
EXPIRATION_ANNOTATION: Final = "azure.workload.identity/service-account-token-expiration"
SKIP_CONTAINERS_ANNOTATION: Final = "azure.workload.identity/skip-containers"
INJECT_PROXY_ANNOTATION: Final = "azure.workload.identity/inject-proxy-sidecar"
PROXY_PORT_ANNOTATION: Final = "azure.workload.identity/proxy-sidecar-port"
PSA_ENFORCE_LABEL: Final = "pod-security.kubernetes.io/enforce"
DEFAULT_SERVICE_ACCOUNT: Final = "default"


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str = ""
    #: env entries by name: the literal value, or None for valueFrom
    env: Mapping[str, str | None] = field(default_factory=dict)
    #: command, args and env values: where a hard-coded token path would show
    texts: tuple[str, ...] = ()
    run_as_user: int | None = None
    #: a native sidecar (an init container with restartPolicy: Always)
    sidecar: bool = False


def _container(obj: Any, path: str) -> Container:
    if not isinstance(obj, Mapping):
        raise ModelError(path, "expected a map")
    env: dict[str, str | None] = {}
    texts: list[str] = []
    raw_env = obj.get("env")
    if raw_env is not None:
        if not isinstance(raw_env, list):
            raise ModelError(f"{path}.env", "expected a list")
        for i, item in enumerate(raw_env):
            ip = f"{path}.env[{i}]"
            if not isinstance(item, Mapping):
                raise ModelError(ip, "expected a map")
            name = get_str(item, "name", ip)
            if name in env:
                continue  # the first entry of a name is the one the webhook sees as present
            value = item.get("value")
            if value is not None and not isinstance(value, str):
                raise ModelError(f"{ip}.value", "expected a string")
            env[name] = value if "valueFrom" not in item else None
            if value:
                texts.append(value)
    for key in ("command", "args"):
        raw = obj.get(key)
        if isinstance(raw, list):
            texts.extend(str(x) for x in raw)
    sc = get_map(obj, "securityContext", path)
    run_as = sc.get("runAsUser")
    return Container(
        name=get_str(obj, "name", path),
        image=get_str(obj, "image", path),
        env=env,
        texts=tuple(texts),
        run_as_user=run_as if isinstance(run_as, int) and not isinstance(run_as, bool) else None,
        sidecar=get_str(obj, "restartPolicy", path) == "Always",
    )


def _containers(spec: Mapping[str, Any], key: str) -> tuple[Container, ...]:
    raw = spec.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ModelError(f"spec.{key}", "expected a list")
    return tuple(_container(c, f"spec.{key}[{i}]") for i, c in enumerate(raw))


@dataclass(frozen=True, slots=True)
class PodSpec:
    """A pod as the Workload Identity webhook and the proxy see it."""

    namespace: str
    name: str
    generate_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    host_network: bool = False
    windows: bool = False
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    run_as_user: int | None = None
    #: the controller owner's kind (``Job`` matters to the proxy), "" for a bare pod
    owner_kind: str = ""
    owner_name: str = ""
    #: created by the API server (a live pod) rather than a manifest's pod-to-be
    live: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def workload(self) -> tuple[str, str, str]:
        """The pod's top-level controller as far as the pod alone tells: a ReplicaSet named
        ``<deployment>-<pod-template-hash>`` is taken for its Deployment; any other controller owner is the
        workload; a bare pod is its own (``Pod``). Without the owners themselves (the operator does not watch
        them) a CronJob's Job stays a Job."""
        if not self.owner_kind:
            return "Pod", self.namespace, self.name
        hash_ = self.labels.get("pod-template-hash", "")
        if self.owner_kind == "ReplicaSet" and hash_ and self.owner_name.endswith("-" + hash_):
            return "Deployment", self.namespace, self.owner_name[: -len(hash_) - 1]
        return self.owner_kind, self.namespace, self.owner_name

    @property
    def labelled(self) -> bool:
        """The webhook's objectSelector: ``azure.workload.identity/use`` exactly ``"true"``."""
        return self.labels.get(USE_LABEL) == "true"

    @property
    def mutated(self) -> bool:
        """The pod already carries what the webhook injects (a live pod it admitted)."""
        return any("AZURE_FEDERATED_TOKEN_FILE" in c.env for c in (*self.containers, *self.init_containers))

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PodSpec:
        meta = parse_metadata(obj)
        md = get_map(obj, "metadata", "")
        spec = get_map(obj, "spec", "")
        owner_kind = owner_name = ""
        refs = md.get("ownerReferences")
        if isinstance(refs, list):
            for ref in refs:
                if isinstance(ref, Mapping) and ref.get("controller") is True:
                    owner_kind, owner_name = str(ref.get("kind", "")), str(ref.get("name", ""))
        node_selector = get_str_map(spec, "nodeSelector", "spec")
        sc = get_map(spec, "securityContext", "spec")
        run_as = sc.get("runAsUser")
        sa = get_str(spec, "serviceAccountName", "spec") or get_str(spec, "serviceAccount", "spec")
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            generate_name=get_str(md, "generateName", "metadata"),
            labels=meta.labels,
            annotations=meta.annotations,
            service_account=sa or DEFAULT_SERVICE_ACCOUNT,
            host_network=get_bool(spec, "hostNetwork", "spec"),
            windows=node_selector.get("kubernetes.io/os") == "windows",
            containers=_containers(spec, "containers"),
            init_containers=_containers(spec, "initContainers"),
            run_as_user=run_as if isinstance(run_as, int) and not isinstance(run_as, bool) else None,
            owner_kind=owner_kind,
            owner_name=owner_name,
            live=bool(meta.uid) or "status" in obj,
        )


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    namespace: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def client_id(self) -> str:
        return self.annotations.get(CLIENT_ID_ANNOTATION, "")

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> ServiceAccount:
        meta = parse_metadata(obj)
        return cls(meta.namespace, meta.name, meta.annotations)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod_security(self) -> str:
        """The enforced Pod Security level (``privileged`` when unlabelled)."""
        return self.labels.get(PSA_ENFORCE_LABEL, "privileged")

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Namespace:
        meta = parse_metadata(obj, namespaced=False)
        return cls(meta.name, meta.labels)


def generation_of(obj: Mapping[str, Any]) -> int:
    return get_int(get_map(obj, "metadata", ""), "generation", "metadata")
