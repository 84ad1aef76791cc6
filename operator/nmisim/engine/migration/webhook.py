"""The Azure Workload Identity mutating webhook, as v1.6.0 admits a pod (workload-identity.md §1, §2.1).

Upstream: ``pkg/webhook/webhook.go`` (``Handle``), ``pkg/webhook/consts.go``,
``deploy/azure-wi-webhook.yaml`` (CREATE only, objectSelector on the pod label, ``failurePolicy: Fail``).
The webhook version is a setting where it matters: up to v1.5.1 the token is mounted at the old path and
empty values are injected (#1593, #1720).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from nmisim.engine.config import WI_PLATFORM_AKS, WorkloadIdentityConfig, version_tuple
from nmisim.engine.migration import hazards as H
from nmisim.engine.migration.objects import (
    CLIENT_ID_ANNOTATION,
    EXPIRATION_ANNOTATION,
    INJECT_PROXY_ANNOTATION,
    PROXY_PORT_ANNOTATION,
    SKIP_CONTAINERS_ANNOTATION,
    TENANT_ID_ANNOTATION,
    Container,
    PodSpec,
    ServiceAccount,
)

WEBHOOK_NAME: Final = "mutation.azure-workload-identity.io"
PROXY_CONTAINER: Final = "azwi-proxy"
PROXY_INIT_CONTAINER: Final = "azwi-proxy-init"
DEFAULT_PROXY_PORT: Final = 8000
PROXY_UID: Final = 1501
DEFAULT_EXPIRATION: Final = 3600
MIN_EXPIRATION: Final = 3600
MAX_EXPIRATION: Final = 86400
AUTHORITY_HOST: Final = "https://login.microsoftonline.com/"
TOKEN_FILE_V16: Final = "/var/run/secrets/azure/wi/token/azure-identity-token"
TOKEN_FILE_OLD: Final = "/var/run/secrets/azure/tokens/azure-identity-token"
VOLUME_OLD: Final = "azure-identity-token"
VOLUME_PREFIX: Final = "azure-workload-identity-reserved-"
#: namespaces AKS's Admissions Enforcer keeps every webhook out of (#525)
AKS_EXCLUDED_NAMESPACES: Final = frozenset({"kube-system", "gatekeeper-system"})
#: the webhook's own namespace on AKS (the add-on) and in OSS installs
ENV_CLIENT_ID: Final = "AZURE_CLIENT_ID"
ENV_TENANT_ID: Final = "AZURE_TENANT_ID"
ENV_TOKEN_FILE: Final = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY_HOST: Final = "AZURE_AUTHORITY_HOST"
#: versions from which empty values are left out, and from which the token has its v1.6.0 path
_OMIT_EMPTY_FROM: Final = (1, 5, 1)
_NEW_PATH_FROM: Final = (1, 6, 0)
_NATIVE_SIDECAR_FROM_WEBHOOK: Final = (1, 5, 0)
_NATIVE_SIDECAR_FROM_KUBERNETES: Final = (1, 32, 0)
_GO_INT: Final = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class ProxyInjection:
    port: int
    #: azwi-proxy is an init container with restartPolicy: Always (API server ≥ 1.32, webhook ≥ v1.5.0)
    native_sidecar: bool


@dataclass(frozen=True, slots=True)
class Admission:
    """What the API server does with the pod at CREATE."""

    #: the webhook was called (label, namespace)
    called: bool
    #: why it was not called ("" when it was)
    not_called_because: str = ""
    #: the webhook's denial text (``admission.Errored(400, ...)``), "" when admitted
    denied: str = ""
    #: the hazard code of the denial (:mod:`.hazards`), decided where the denial is made
    denied_code: str = ""
    #: env vars each container ends up with for the four webhook variables (mutated pods only)
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    token_file: str = ""
    expiration_seconds: int = 0
    audience: str = ""
    proxy: ProxyInjection | None = None
    #: containers the webhook leaves alone (``skip-containers``)
    skipped: tuple[str, ...] = ()

    @property
    def admitted(self) -> bool:
        return not self.denied

    @property
    def mutated(self) -> bool:
        return self.called and not self.denied


def version_at_least(version: str, minimum: tuple[int, int, int]) -> bool:
    parsed = version_tuple(version)
    return parsed is not None and parsed >= minimum


def token_file(webhook_version: str) -> str:
    return TOKEN_FILE_V16 if version_at_least(webhook_version, _NEW_PATH_FROM) else TOKEN_FILE_OLD


def volume_name(pod_name: str, webhook_version: str) -> str:
    """The projected volume's name: v1.6.0 hashes the pod's name (``generateName (prefix)`` for controller
    pods) and cuts the name to 63 characters."""
    if not version_at_least(webhook_version, _NEW_PATH_FROM):
        return VOLUME_OLD
    digest = hashlib.sha256(pod_name.encode()).hexdigest()
    return (VOLUME_PREFIX + digest)[:63]


def webhook_called(pod: PodSpec, config: WorkloadIdentityConfig) -> str:
    """Why the API server does not call the webhook for this pod ("" when it does)."""
    if not pod.labelled:
        value = pod.labels.get("azure.workload.identity/use")
        if value is None:
            return 'no azure.workload.identity/use: "true" label on the pod'
        return f'label azure.workload.identity/use is {value!r}, not exactly "true"'
    if config.platform == WI_PLATFORM_AKS and pod.namespace in AKS_EXCLUDED_NAMESPACES:
        return f"AKS's Admissions Enforcer keeps webhooks out of {pod.namespace}"
    return ""


def parse_int(raw: str, bits: int) -> tuple[int, str]:
    """Go's ``strconv.ParseInt(raw, 10, bits)``: an optional sign and ASCII digits, nothing else (no spaces,
    no underscores, no units); the error text as Go words it ("" when it parses)."""
    if _GO_INT.fullmatch(raw) is None:
        return 0, f'strconv.ParseInt: parsing "{raw}": invalid syntax'
    value = int(raw, 10)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        return 0, f'strconv.ParseInt: parsing "{raw}": value out of range'
    return value, ""


def _expiration(pod: PodSpec, sa: ServiceAccount) -> tuple[int, str]:
    raw = pod.annotations.get(EXPIRATION_ANNOTATION) or sa.annotations.get(EXPIRATION_ANNOTATION, "")
    if not raw:
        return DEFAULT_EXPIRATION, ""
    value, problem = parse_int(raw, 64)
    if problem:
        return 0, problem
    if not MIN_EXPIRATION <= value <= MAX_EXPIRATION:
        return 0, f"token expiration {value} not valid. Expected value to be between 3600 and 86400"
    return value, ""


def _all_containers(pod: PodSpec, proxy: ProxyInjection | None) -> list[Container]:
    names = {c.name for c in (*pod.containers, *pod.init_containers)}
    out = [*pod.init_containers, *pod.containers]
    if proxy is not None:
        if PROXY_CONTAINER not in names:
            out.append(Container(PROXY_CONTAINER, run_as_user=PROXY_UID, sidecar=proxy.native_sidecar))
        if PROXY_INIT_CONTAINER not in names:
            out.append(Container(PROXY_INIT_CONTAINER, run_as_user=0))
    return out


def admit(
    pod: PodSpec,
    sa: ServiceAccount | None,
    config: WorkloadIdentityConfig,
) -> Admission:
    """The webhook's ``Handle`` for a CREATE of ``pod`` whose ServiceAccount is ``sa`` (None: missing)."""
    why = webhook_called(pod, config)
    if why:
        return Admission(called=False, not_called_because=why)
    if sa is None:
        return Admission(
            called=True,
            denied=f'serviceaccounts "{pod.service_account}" not found',
            denied_code=H.SERVICE_ACCOUNT_MISSING,
        )
    proxy: ProxyInjection | None = None
    if INJECT_PROXY_ANNOTATION in pod.annotations:  # presence only: "false" injects too
        if pod.host_network:
            return Admission(
                called=True,
                denied="hostNetwork is set to true, cannot inject proxy sidecar",
                denied_code=H.PROXY_ON_HOST_NETWORK,
            )
        port = DEFAULT_PROXY_PORT
        if PROXY_PORT_ANNOTATION in pod.annotations:  # present, even empty: parsed (getProxyPort)
            port, problem = parse_int(pod.annotations[PROXY_PORT_ANNOTATION], 32)
            if problem:
                return Admission(
                    called=True,
                    denied=f"failed to parse proxy sidecar port: {problem}",
                    denied_code=H.PROXY_PORT_INVALID,
                )
        native = version_at_least(config.kubernetes_version, _NATIVE_SIDECAR_FROM_KUBERNETES) and (
            version_at_least(config.webhook_version, _NATIVE_SIDECAR_FROM_WEBHOOK)
        )
        proxy = ProxyInjection(port, native)
    expiration, problem = _expiration(pod, sa)
    if problem:
        return Admission(called=True, denied=problem, denied_code=H.TOKEN_EXPIRATION_OUT_OF_BOUNDS)
    client_id = sa.annotations.get(CLIENT_ID_ANNOTATION, "")
    # the key's presence wins, even with an empty value (webhook.go)
    tenant_id = sa.annotations.get(TENANT_ID_ANNOTATION, config.tenant_id)
    path = token_file(config.webhook_version)
    injected = {
        ENV_CLIENT_ID: client_id,
        ENV_TENANT_ID: tenant_id,
        ENV_TOKEN_FILE: path,
        ENV_AUTHORITY_HOST: AUTHORITY_HOST,
    }
    omit_empty = version_at_least(config.webhook_version, _OMIT_EMPTY_FROM)
    skip = tuple(
        s.strip() for s in pod.annotations.get(SKIP_CONTAINERS_ANNOTATION, "").split(";") if s.strip()
    )
    env: dict[str, dict[str, str]] = {}
    for c in _all_containers(pod, proxy):
        if c.name in skip:
            env[c.name] = {k: v for k, v in c.env.items() if k in injected and v is not None}
            continue
        mine: dict[str, str] = {}
        for key, value in injected.items():
            if key in c.env:  # a user's value is never overwritten
                if c.env[key] is not None:
                    mine[key] = c.env[key] or ""
                continue
            if value or not omit_empty:
                mine[key] = value
        env[c.name] = mine
    return Admission(
        called=True,
        env=env,
        token_file=path,
        expiration_seconds=expiration,
        audience=config.audience,
        proxy=proxy,
        skipped=skip,
    )
