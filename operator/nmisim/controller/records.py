"""What the operator knows of its own objects in the cluster: a record per NMIVerdict, per exception
status and of SimulationConfig/default. Small on purpose (thousands are kept): a digest of a verdict's
status instead of the status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nmisim.controller import status as S

# The fields of a verdict's status the operator needs again later (the rest is kept as a digest): for
# transitions, and to announce a transition an earlier run recorded without its Event (events.py).
_KEPT: Final = ("verdict", "transitions", "lastTransitionTime", "exception")
_KEPT_TOKEN: Final = ("status", "identity", "error", "waitSeconds")


def rv(value: str | None) -> int:
    """A resourceVersion as a number for ordering (etcd revisions); -1 when not numeric."""
    return int(value) if value and value.isdigit() else -1


def digest(status: Mapping[str, Any] | None) -> int:
    """A status's semantic form, hashed (equal statuses, equal digests, within one process)."""
    return hash(S.semantic(status))


@dataclass(slots=True)
class VerdictRecord:
    """What an NMIVerdict in the cluster says: a digest of its status for change detection, and the few
    fields transitions need."""

    owner_uid: str | None
    status: dict[str, Any]
    resource_version: str
    semantic: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> VerdictRecord:
        meta = body.get("metadata") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"]
        full = body.get("status") or {}
        kept = {k: full[k] for k in _KEPT if k in full}
        if "tokenRequest" in full:
            token = full.get("tokenRequest") or {}
            kept["tokenRequest"] = {k: token[k] for k in _KEPT_TOKEN if k in token}
        return cls(
            owner_uid=owners[0].get("uid") if owners else None,
            status=kept,
            resource_version=str(meta.get("resourceVersion") or ""),
            semantic=digest(full),
        )

    def newer_or_equal(self, other: VerdictRecord | None) -> bool:
        return other is None or rv(self.resource_version) >= rv(other.resource_version)


@dataclass(slots=True)
class ObjectRecord:
    """An exception's or the SimulationConfig's identity and current status."""

    uid: str
    generation: int
    status: dict[str, Any]
    resource_version: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectRecord:
        meta = body.get("metadata") or {}
        return cls(
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            status=dict(body.get("status") or {}),
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    def newer_or_equal(self, other: ObjectRecord | None) -> bool:
        return other is None or rv(self.resource_version) >= rv(other.resource_version)
