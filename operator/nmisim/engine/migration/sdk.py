"""Which credential an application gets from its SDK, by package and version (workload-identity.md §5).

Declared on the pod (or its template) by ``nmisim.dev/sdk: LANGUAGE-PACKAGE==VERSION[, ...]`` or per image
pattern in SimulationConfig ``spec.workloadIdentity.sdks``. Capabilities, best first:

- ``workload-identity``: the SDK has ``WorkloadIdentityCredential``; DefaultAzureCredential uses it;
- ``legacy``: DefaultAzureCredential/ManagedIdentityCredential already exchange the projected token (the
  "min working" column), without the public class;
- ``msal``: the application builds the assertion itself from ``AZURE_FEDERATED_TOKEN_FILE`` (MSAL);
- ``imds``: the application talks to IMDS (an SDK too old, raw HTTP, ``az login --identity``);
- ``unknown``: nothing declared.

For identity selection the Azure SDKs' managed-identity credential under workload identity behaves like the
proxy: it exchanges for its explicit client ID or ``AZURE_CLIENT_ID`` and has no resource-ID mode — except
Go, whose ``ManagedIdentityCredential`` ignores the environment and calls IMDS.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from nmisim.engine.config import SDKRule, version_tuple

ANNOTATION: Final = "nmisim.dev/sdk"

CAP_WORKLOAD_IDENTITY: Final = "workload-identity"
CAP_LEGACY: Final = "legacy"
CAP_MSAL: Final = "msal"
CAP_IMDS: Final = "imds"
CAP_UNKNOWN: Final = "unknown"
#: worst first: a pod whose containers use several SDKs is as capable as the least of them
CAPABILITIES: Final = (CAP_IMDS, CAP_MSAL, CAP_UNKNOWN, CAP_LEGACY, CAP_WORKLOAD_IDENTITY)

Version = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Package:
    """An Azure Identity package: the first version whose DefaultAzureCredential picks the projected token
    up (``working``) and the first with ``WorkloadIdentityCredential`` (AWI's table, MS Learn minimums)."""

    name: str
    language: str
    upstream: str
    working: Version | None
    workload_identity: Version


#: workload-identity.md §5 (AWI docs azure-identity-sdk.md @ 56d89dd; MS Learn overview)
PACKAGES: Final[dict[str, Package]] = {
    p.name: p
    for p in (
        Package(
            "go-azidentity", "go", "github.com/Azure/azure-sdk-for-go/sdk/azidentity", (1, 3, 0), (1, 3, 0)
        ),
        Package("dotnet-azure-identity", "dotnet", "Azure.Identity", (1, 5, 0), (1, 9, 0)),
        Package("js-azure-identity", "js", "@azure/identity", (2, 0, 0), (3, 2, 0)),
        Package("python-azure-identity", "python", "azure-identity", (1, 7, 0), (1, 13, 0)),
        Package("java-azure-identity", "java", "com.azure:azure-identity", (1, 4, 0), (1, 9, 0)),
        Package("cpp-azure-identity", "cpp", "azure-identity-cpp", None, (1, 6, 0)),
    )
}
#: MSAL in any language: the application reads the token file as a client assertion
MSAL: Final = ("go-msal", "dotnet-msal", "js-msal", "python-msal", "java-msal")
#: no SDK: raw IMDS calls (curl, azure-cli's az login --identity, ODBC drivers, old adal/msrestazure)
RAW_IMDS: Final = "imds"
KNOWN: Final = (*PACKAGES, *MSAL, RAW_IMDS)


class SDKError(ValueError):
    """An ``nmisim.dev/sdk`` value nmisim cannot read."""


@dataclass(frozen=True, slots=True)
class SDK:
    """One declared SDK and what it can do."""

    name: str
    version: str
    capability: str
    #: the version to upgrade to for WorkloadIdentityCredential ("" when none is needed or known)
    upgrade_to: str = ""

    @property
    def text(self) -> str:
        return f"{self.name}=={self.version}" if self.version else self.name

    @property
    def language(self) -> str:
        return self.name.split("-", 1)[0]


def _v(version: Version) -> str:
    return ".".join(map(str, version))


def parse_one(text: str) -> SDK:
    """``python-azure-identity==1.12.0`` → its capability. Raises :class:`SDKError`."""
    name, sep, version = (part.strip() for part in text.strip().partition("=="))
    if name == RAW_IMDS:
        return SDK(name, version, CAP_IMDS)
    if name in MSAL:
        return SDK(name, version, CAP_MSAL)
    pkg = PACKAGES.get(name)
    if pkg is None:
        near = difflib.get_close_matches(name, KNOWN, n=1)
        hint = f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(KNOWN)})"
        raise SDKError(f"unknown SDK {name!r}{hint}")
    parsed = version_tuple(version) if sep else None
    if parsed is None:
        raise SDKError(
            f"{text.strip()!r}: expected {name}==VERSION, e.g. {name}=={_v(pkg.workload_identity)}"
        )
    if parsed >= pkg.workload_identity:
        return SDK(name, version, CAP_WORKLOAD_IDENTITY)
    upgrade = _v(pkg.workload_identity)
    if pkg.working is not None and parsed >= pkg.working:
        return SDK(name, version, CAP_LEGACY, upgrade)
    return SDK(name, version, CAP_IMDS, upgrade)


def parse(text: str) -> tuple[SDK, ...]:
    """A comma-separated list of SDKs. Raises :class:`SDKError`."""
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise SDKError("empty: expected LANGUAGE-PACKAGE==VERSION, e.g. python-azure-identity==1.13.0")
    return tuple(parse_one(item) for item in items)


def for_images(images: Iterable[str], rules: Sequence[SDKRule]) -> tuple[SDK, ...]:
    """The SDKs SimulationConfig's image rules give a pod's containers (the first matching rule per image)."""
    out: list[SDK] = []
    for image in images:
        for rule in rules:
            if fnmatch.fnmatchcase(image, rule.image):
                out.extend(parse(rule.sdk))
                break
    return tuple(out)


def capability(sdks: Sequence[SDK]) -> str:
    """The pod's capability: the least of its SDKs'; ``unknown`` when none is declared."""
    if not sdks:
        return CAP_UNKNOWN
    return min((s.capability for s in sdks), key=CAPABILITIES.index)


def exchanges_token(cap: str) -> bool:
    """The application exchanges the projected token itself (no IMDS call) when the env vars are there."""
    return cap in (CAP_WORKLOAD_IDENTITY, CAP_LEGACY, CAP_MSAL)
