"""Loading objects from a live cluster (current kubeconfig) into engine models.

Reads what NMI reads: Pods, the four aad-pod-identity kinds, and nmisim's cluster-scoped
``SimulationConfig`` named ``default``. Every object goes through the same ``from_k8s`` parsers as
files (:func:`nmisim.engine.resources.parse`), so a live cluster and ``kubectl get -o yaml`` output
give the same results.

- Lists are paginated (``limit``/``continue``) and read raw JSON (no client-side model conversion), so the
  objects look exactly as ``kubectl get -o json`` prints them.
- A kind whose CRD is not installed (404) has no objects; an absent ``SimulationConfig/default`` means
  NMI's defaults.
- With a namespace, Pods and AzurePodIdentityExceptions come from that namespace only (NMI looks for
  exceptions only in the pod's own namespace); identities, bindings and assigned identities still come
  from all namespaces because standard mode matches bindings across namespaces and MIC keeps
  AzureAssignedIdentities in its own namespace. Without permission to list them cluster-wide (403), they
  are read from the namespace only, with a warning.
- An object the parsers reject is skipped with a warning naming it (the operator tolerates it too).
- An unreachable cluster, a bad kubeconfig or an authentication failure raises :class:`ClusterError`
  whose ``str()`` is one line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InsecureRequestWarning

from nmisim.engine.config import CONFIG_NAME, ConfigError, SimulationConfig
from nmisim.engine.models import (
    DEFAULT_NAMESPACE,
    KIND_CONFIG,
    KIND_EXCEPTION,
    KIND_IDENTITY,
    KIND_POD,
    AzureIdentity,
    ModelError,
    Pod,
)
from nmisim.engine.resources import AAD_KINDS as AAD_RESOURCE_KINDS
from nmisim.engine.resources import parse, resource
from nmisim.sources.files import ClusterError, Loaded, ignored_codes

__all__ = [
    "ClusterError",
    "LiveLoaded",
    "LiveReader",
    "PodNotFound",
    "Target",
    "context_namespace",
    "load_live",
]

AAD_GROUP: Final = resource(KIND_EXCEPTION).group
AAD_VERSION: Final = resource(KIND_EXCEPTION).version
NMISIM_GROUP: Final = resource(KIND_CONFIG).group
NMISIM_VERSION: Final = resource(KIND_CONFIG).version
CONFIG_PLURAL: Final = resource(KIND_CONFIG).plural
PAGE_SIZE: Final = 500
#: (connect, read) seconds for every API call
REQUEST_TIMEOUT: Final = (10.0, 60.0)

#: the aad-pod-identity kinds and their plurals, in loading order (:mod:`nmisim.engine.resources`)
AAD_KINDS: Final = tuple((kind, resource(kind).plural) for kind in AAD_RESOURCE_KINDS)

Warn = Callable[[str], None]

# the kubernetes client's config helpers carry no annotations
_new_client_from_config: Callable[..., k8s.ApiClient] = k8s_config.new_client_from_config
_load_incluster_config: Callable[..., None] = k8s_config.load_incluster_config
_list_contexts: Callable[..., tuple[list[dict[str, Any]], dict[str, Any]]] = (
    k8s_config.list_kube_config_contexts
)


class PodNotFound(LookupError):
    """The pod asked for does not exist (exit 2)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Which cluster: ``--kubeconfig`` (else ``KUBECONFIG``, else ``~/.kube/config``) and ``--context``."""

    kubeconfig: str | None = None
    context: str | None = None

    def config_file(self) -> str:
        return self.kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


@dataclass(slots=True)
class LiveLoaded(Loaded):
    """Objects read from the cluster; ``config`` is ``SimulationConfig/default`` if it exists and is valid."""

    config: SimulationConfig | None = None
    server: str = ""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _is_in_cluster() -> bool:
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


def api_client(target: Target) -> k8s.ApiClient:
    """An API client for the target; raises :class:`ClusterError` for a missing or bad kubeconfig."""
    path = target.config_file()
    try:
        if not target.kubeconfig and not os.environ.get("KUBECONFIG") and not Path(path).exists():
            if _is_in_cluster():
                cfg = k8s.Configuration()
                _load_incluster_config(client_configuration=cfg)
                return k8s.ApiClient(cfg)
            raise ClusterError(f"no kubeconfig: {path} does not exist (set KUBECONFIG or pass --kubeconfig)")
        api = _new_client_from_config(config_file=path, context=target.context, persist_config=False)
    except ClusterError:
        raise
    except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise ClusterError(f"kubeconfig {path}: {_one_line(exc)}") from None
    if not api.configuration.verify_ssl:
        # the kubeconfig asked for insecure-skip-tls-verify; like kubectl, do not warn on every request
        warnings.simplefilter("ignore", InsecureRequestWarning)
    return api


def context_namespace(target: Target) -> str:
    """The namespace of the kubeconfig context in use (``--context`` or the current one), or ``default``."""
    try:
        contexts, current = _list_contexts(config_file=target.config_file())
    except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError):
        return DEFAULT_NAMESPACE
    chosen: dict[str, Any] | None = current
    if target.context:
        chosen = next((c for c in contexts if c.get("name") == target.context), None)
    ctx = (chosen or {}).get("context") or {}
    ns = ctx.get("namespace") if isinstance(ctx, Mapping) else None
    return ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE


def _describe_api_error(exc: ApiException, server: str) -> str:
    if exc.status == 401:
        return f"cluster at {server} refused the credentials (401 Unauthorized): check the kubeconfig user"
    if exc.status == 403:
        detail = _status_message(exc) or "forbidden"
        return f"cluster at {server} denied access (403): {detail}"
    detail = _status_message(exc) or exc.reason or ""
    return f"cluster at {server} answered {exc.status}: {detail}"


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        return _one_line(exc.body or "")
    msg = body.get("message") if isinstance(body, Mapping) else None
    return _one_line(msg) if msg else ""


def _unreachable(exc: BaseException, server: str) -> ClusterError:
    reason: object = getattr(exc, "reason", None) or exc
    text = _one_line(reason)
    # urllib3 wraps the socket error: keep its last, most specific part
    if "Errno" in text:
        text = text[text.index("[Errno") :] if "[Errno" in text else text
    return ClusterError(f"cannot reach the cluster at {server}: {text}")


class LiveReader:
    """Reads objects from one cluster; every method raises :class:`ClusterError` on transport/auth errors."""

    def __init__(self, target: Target, warn: Warn | None = None) -> None:
        self.target = target
        self.api = api_client(target)
        self.server: str = str(self.api.configuration.host)
        self.core = k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self._warn = warn

    def close(self) -> None:
        close: Callable[[], None] = self.api.close
        close()

    def __enter__(self) -> LiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ raw calls
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API for raw JSON; ApiException passes through, transport errors become ClusterError."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            return json.loads(resp.data or b"null")
        except ApiException as exc:
            if exc.status in (401,) or exc.status is None or exc.status == 0:
                raise ClusterError(_describe_api_error(exc, self.server)) from None
            raise
        except (Urllib3Error, OSError) as exc:
            raise _unreachable(exc, self.server) from None
        except ValueError as exc:
            raise ClusterError(f"cluster at {self.server} sent invalid JSON: {_one_line(exc)}") from None

    def _pages(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                extra["_continue"] = token
            page = self._call(fn, *args, **kwargs, **extra)
            if not isinstance(page, Mapping):
                raise ClusterError(f"cluster at {self.server} sent a list that is not an object")
            items = page.get("items") or []
            yield from (i for i in items if isinstance(i, Mapping))
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return

    # ------------------------------------------------------------------ objects
    def pods(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> Iterator[Mapping[str, Any]]:
        kw: dict[str, Any] = {"field_selector": field_selector} if field_selector else {}
        try:
            if namespace:
                yield from self._pages(self.core.list_namespaced_pod, namespace, **kw)
            else:
                yield from self._pages(self.core.list_pod_for_all_namespaces, **kw)
        except ApiException as exc:
            raise ClusterError(_describe_api_error(exc, self.server)) from None

    def pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        """One pod as JSON; raises :class:`PodNotFound` when it does not exist."""
        try:
            obj = self._call(self.core.read_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise PodNotFound(f"pod {namespace}/{name} not found (cluster {self.server})") from None
            raise ClusterError(_describe_api_error(exc, self.server)) from None
        if not isinstance(obj, Mapping):
            raise ClusterError(f"cluster at {self.server} sent a pod that is not an object")
        return obj

    def custom_objects(self, plural: str, namespace: str | None = None) -> Iterator[Mapping[str, Any]]:
        """Objects of one aad-pod-identity kind (cluster-wide when ``namespace`` is None); none if its CRD
        is not installed (404). Other API errors pass through as :class:`ApiException`."""
        try:
            if namespace:
                yield from self._pages(
                    self.custom.list_namespaced_custom_object, AAD_GROUP, AAD_VERSION, namespace, plural
                )
            else:
                yield from self._pages(self.custom.list_cluster_custom_object, AAD_GROUP, AAD_VERSION, plural)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise

    def simulation_config(self) -> Mapping[str, Any] | None:
        try:
            obj = self._call(
                self.custom.get_cluster_custom_object,
                NMISIM_GROUP,
                NMISIM_VERSION,
                CONFIG_PLURAL,
                CONFIG_NAME,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                self._emit(
                    f"cannot read SimulationConfig/{CONFIG_NAME} (403 forbidden): using NMI's defaults"
                )
                return None
            raise ClusterError(_describe_api_error(exc, self.server)) from None
        return obj if isinstance(obj, Mapping) else None

    def _emit(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)

    # ------------------------------------------------------------------ loading
    def load(
        self,
        namespace: str | None = None,
        *,
        pods: bool = True,
        into: LiveLoaded | None = None,
    ) -> LiveLoaded:
        """Read everything NMI reads (see the module docstring) into engine models; ``pods=False`` skips
        the Pods (the caller adds the ones it needs with :meth:`add`)."""
        out = into if into is not None else LiveLoaded()
        out.server = self.server
        if pods:
            for obj in self.pods(namespace):
                self.add(out, obj, KIND_POD)
        for kind, plural in AAD_KINDS:
            scope = namespace if kind == KIND_EXCEPTION else None
            try:
                objs = list(self.custom_objects(plural, scope))
            except ApiException as exc:
                if exc.status == 403 and scope is None and namespace:
                    self._emit(
                        f"cannot list {plural} in all namespaces (403 forbidden): reading namespace "
                        f"{namespace} only, so bindings and identities elsewhere are not seen"
                    )
                    try:
                        objs = list(self.custom_objects(plural, namespace))
                    except ApiException as exc2:
                        raise ClusterError(_describe_api_error(exc2, self.server)) from None
                else:
                    raise ClusterError(_describe_api_error(exc, self.server)) from None
            for obj in objs:
                self.add(out, obj, kind)
        raw = self.simulation_config()
        if raw is not None:
            try:
                out.config = SimulationConfig.from_k8s(raw)
            except ConfigError as exc:
                self._emit(
                    f"SimulationConfig/{CONFIG_NAME} is invalid ({_one_line(exc)}): NMI would refuse it; "
                    "using NMI's defaults (pass --config FILE to choose)"
                )
        return out

    def add(self, out: LiveLoaded, obj: Mapping[str, Any], kind: str) -> None:
        """Parse one raw object into ``out``; an object the parsers reject is skipped with a warning."""
        if "kind" not in obj:
            obj = {**obj, "kind": kind}
        try:
            parsed = parse(obj)
        except ModelError as exc:
            self._emit(f"skipping {describe(obj, kind)}: {_one_line(exc)}")
            return
        if parsed is None or isinstance(parsed, SimulationConfig):
            return
        out.objects.append(parsed)
        if isinstance(parsed, Pod):  # evaluate's suppressions (nmisim.dev/ignore) hold for live pods too
            codes = ignored_codes(obj)
            if codes:
                out.ignored_codes[(parsed.namespace, parsed.name)] = codes


def describe(obj: Mapping[str, Any], kind: str) -> str:
    """``Kind namespace/name`` of a raw object, as far as it can be read."""
    md = obj.get("metadata")
    md = md if isinstance(md, Mapping) else {}
    name = md.get("name") if isinstance(md.get("name"), str) else "?"
    ns = md.get("namespace") if isinstance(md.get("namespace"), str) else ""
    return f"{kind} {ns + '/' if ns else ''}{name}"


def load_live(target: Target, namespace: str | None = None, warn: Warn | None = None) -> LiveLoaded:
    """Everything NMI reads from the target cluster (Pods and exceptions of ``namespace`` if given)."""
    with LiveReader(target, warn) as reader:
        return reader.load(namespace)


@dataclass(slots=True)
class WorkloadIdentityObjects:
    """What ``nmisim migrate --cluster`` reads besides what NMI reads: the pods as they are, their owners
    (ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicationControllers),
    ServiceAccounts, Namespaces, Azure Service Operator FederatedIdentityCredentials and whether a Workload
    Identity webhook is installed."""

    pods: list[Mapping[str, Any]]
    owners: list[Mapping[str, Any]]
    service_accounts: list[Mapping[str, Any]]
    namespaces: list[Mapping[str, Any]]
    others: list[Mapping[str, Any]]
    webhook_installed: bool


#: (kind, API path prefix, plural) of the owners a pod's controller chain goes through
_OWNER_KINDS: Final = (
    ("ReplicaSet", "/apis/apps/v1", "replicasets"),
    ("Deployment", "/apis/apps/v1", "deployments"),
    ("StatefulSet", "/apis/apps/v1", "statefulsets"),
    ("DaemonSet", "/apis/apps/v1", "daemonsets"),
    ("Job", "/apis/batch/v1", "jobs"),
    ("CronJob", "/apis/batch/v1", "cronjobs"),
    ("ReplicationController", "/api/v1", "replicationcontrollers"),
)
_ASO_FIC: Final = (
    "FederatedIdentityCredential",
    "/apis/managedidentity.azure.com/v1api20230131",
    "federatedidentitycredentials",
)
_ASO_UAMI: Final = (
    "UserAssignedIdentity",
    "/apis/managedidentity.azure.com/v1api20230131",
    "userassignedidentities",
)
_WEBHOOK_NAME: Final = "mutation.azure-workload-identity.io"


def _raw_list(
    reader: LiveReader, kind: str, prefix: str, plural: str, namespace: str | None
) -> list[Mapping[str, Any]]:
    """A list by API path (any group), raw JSON, paginated; none when the API or the permission is missing
    (404/403: a warning for 403)."""
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    out: list[Mapping[str, Any]] = []
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)]
        if token:
            query.append(("continue", token))
        try:
            params = reader.api.param_serialize(
                "GET", path, query_params=query, auth_settings=["BearerToken"]
            )
            resp = reader.api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
            resp.read()  # type: ignore[no-untyped-call]
            status = int(resp.status)
            if status == 404:
                return out
            if status == 403:
                reader._emit(
                    f"cannot list {plural} (403 forbidden): nmisim migrate reads them to plan; skipped"
                )
                return out
            if status >= 400:
                raise ClusterError(
                    f"cluster at {reader.server}: GET {path}: {status} {_one_line(resp.reason)}"
                )
            page = json.loads(resp.data or b"null")
        except ApiException as exc:
            if exc.status == 404:
                return out
            raise ClusterError(_describe_api_error(exc, reader.server)) from None
        except (Urllib3Error, OSError) as exc:
            raise _unreachable(exc, reader.server) from None
        except ValueError as exc:
            raise ClusterError(f"cluster at {reader.server} sent invalid JSON: {_one_line(exc)}") from None
        if not isinstance(page, Mapping):
            return out
        api_version = prefix.removeprefix("/apis/") if prefix.startswith("/apis/") else "v1"
        out.extend(
            {**i, "kind": kind, "apiVersion": api_version}
            for i in page.get("items") or []
            if isinstance(i, Mapping)
        )
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return out


def load_workload_identity(
    target: Target, namespace: str | None = None, warn: Warn | None = None
) -> WorkloadIdentityObjects:
    with LiveReader(target, warn) as reader:
        pods: list[Mapping[str, Any]] = [
            {**p, "kind": KIND_POD, "apiVersion": "v1"} for p in reader.pods(namespace)
        ]
        owners = [
            o
            for kind, prefix, plural in _OWNER_KINDS
            for o in _raw_list(reader, kind, prefix, plural, namespace)
        ]
        sas = _raw_list(reader, "ServiceAccount", "/api/v1", "serviceaccounts", namespace)
        nss = _raw_list(reader, "Namespace", "/api/v1", "namespaces", None)
        others = _raw_list(reader, *_ASO_FIC, namespace) + _raw_list(reader, *_ASO_UAMI, namespace)
        mwcs = _raw_list(
            reader,
            "MutatingWebhookConfiguration",
            "/apis/admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            None,
        )
        installed = any(
            isinstance(w, Mapping) and w.get("name") == _WEBHOOK_NAME
            for m in mwcs
            for w in (m.get("webhooks") or [])
        )
        return WorkloadIdentityObjects(pods, owners, sas, nss, others, installed)


@dataclass(slots=True)
class EntraObjects:
    """What ``nmisim entra --cluster`` reads, and only that (it re-reads them every few seconds, so never the
    pods): SimulationConfig/default, the AzureIdentities (their client IDs are applications of the tenant)
    and Azure Service Operator UserAssignedIdentities and FederatedIdentityCredentials, raw."""

    config: SimulationConfig | None
    identities: list[AzureIdentity]
    others: list[Mapping[str, Any]]


def load_entra(target: Target, warn: Warn | None = None) -> EntraObjects:
    """Raises ClusterError when the cluster cannot be read or SimulationConfig/default is invalid."""
    with LiveReader(target, warn) as reader:
        loaded = LiveLoaded()
        try:
            for obj in reader.custom_objects(resource(KIND_IDENTITY).plural):
                reader.add(loaded, obj, KIND_IDENTITY)
        except ApiException as exc:
            raise ClusterError(_describe_api_error(exc, reader.server)) from None
        others = [*_raw_list(reader, *_ASO_UAMI, None), *_raw_list(reader, *_ASO_FIC, None)]
        raw = reader.simulation_config()
        try:
            config = SimulationConfig.from_k8s(raw) if raw is not None else None
        except ConfigError as exc:
            raise ClusterError(f"SimulationConfig/{CONFIG_NAME} is invalid: {_one_line(exc)}") from None
    return EntraObjects(config, [o for o in loaded.objects if isinstance(o, AzureIdentity)], others)
