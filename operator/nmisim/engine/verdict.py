"""The result for one pod (product.md §2): verdict, matching exceptions, candidate identities, the outcome
of the default token request, and findings.

Results are frozen dataclasses of tuples and strings: cheap to compare (``==``), deterministic (all lists
sorted) and JSON-serialisable through :meth:`PodResult.to_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from nmisim.engine.findings import Finding
from nmisim.engine.http import json_number

VERDICT_INTERCEPTED: Final = "intercepted"
VERDICT_EXEMPT: Final = "exempt"
VERDICT_BYPASS: Final = "bypass"
VERDICT_INACTIVE: Final = "inactive"
VERDICTS: Final = (VERDICT_INTERCEPTED, VERDICT_EXEMPT, VERDICT_BYPASS, VERDICT_INACTIVE)


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule that decided the verdict or the token request (:mod:`nmisim.engine.trace` derives them):
    its name, one line for a person, and the objects it looked at (``Kind namespace/name``, or ``Kind
    name`` for cluster-scoped ones)."""

    rule: str
    text: str
    objects: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "text": self.text, "objects": list(self.objects)}


@dataclass(frozen=True, slots=True)
class TokenRequestOutcome:
    """The default token request's outcome (product.md §2 ``tokenRequest``). All None for inactive pods."""

    status: int | None = None
    served_by: str | None = None
    identity: str | None = None
    error: str | None = None
    wait_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "servedBy": self.served_by,
            "identity": self.identity,
            "error": self.error,
            "waitSeconds": json_number(self.wait_seconds),
        }


@dataclass(frozen=True, slots=True)
class PodResult:
    namespace: str
    name: str
    verdict: str
    exceptions: tuple[str, ...] = ()
    mic_shortcut: bool = False
    identities: tuple[str, ...] = ()
    token_request: TokenRequestOutcome = TokenRequestOutcome()
    findings: tuple[Finding, ...] = ()
    #: the decisions behind the verdict, when asked for (``World.evaluate(pod, trace=True)``); not part
    #: of the result's identity or of its JSON (``nmisim explain`` prints them)
    trace: tuple[Decision, ...] = field(default=(), compare=False)

    @property
    def exception(self) -> str | None:
        """The first matching exception (by name) or None."""
        return self.exceptions[0] if self.exceptions else None

    @property
    def ambiguous(self) -> bool:
        return len(self.identities) > 1

    @property
    def finding_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """Exactly product.md §4's per-result shape (camelCase)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "verdict": self.verdict,
            "exception": self.exception,
            "exceptions": list(self.exceptions),
            "micShortcut": self.mic_shortcut,
            "identities": list(self.identities),
            "ambiguous": self.ambiguous,
            "tokenRequest": self.token_request.to_json(),
            "findings": [f.to_json() for f in self.findings],
        }
