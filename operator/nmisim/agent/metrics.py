"""NMI's Prometheus metrics (``pkg/metrics/metrics.go``; nmi-semantics §4), exposed as OpenCensus's
Prometheus exporter exposes them: namespace ``aadpodidentity``, histograms with ``_bucket``/``_sum``/
``_count``, count views as counters under their own name (no ``_total`` suffix, which prometheus_client
would add; hence this small registry of its own).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

NAMESPACE: Final = "aadpodidentity"
#: nmi_operations_duration_seconds: 0.5 ... 100 s (nmi-semantics §4)
NMI_BUCKETS: Final = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 40, 50, 60, 80, 100)
#: imds_operations_duration_seconds: 0.01 ... 10 s
IMDS_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = [*labels, *([extra] if extra else [])]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


@dataclass(slots=True)
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    series: dict[Labels, tuple[list[int], list[float]]] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def count(self, labels: Labels) -> int:
        s = self.series.get(labels)
        return sum(s[0]) if s else 0

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels in sorted(self.series):
            counts, total = self.series[labels]
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                out.append(f"{self.name}_bucket{_labels(labels, ('le', _num(bound)))} {running}")
            out.append(f"{self.name}_sum{_labels(labels)} {_num(total[0])}")
            out.append(f"{self.name}_count{_labels(labels)} {running}")
        return out


@dataclass(slots=True)
class Counter:
    name: str
    help: str
    series: dict[Labels, int] = field(default_factory=dict)

    def inc(self, labels: Labels, by: int = 1) -> None:
        self.series[labels] = self.series.get(labels, 0) + by

    def value(self, labels: Labels) -> int:
        return self.series.get(labels, 0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(labels)} {n}" for labels, n in sorted(self.series.items())]
        return out


class Metrics:
    """The metrics NMI emits (the MIC-only ones are not NMI's), and two of nmisim's own:
    ``nmisim_serve_objects{kind}``, the objects the agent holds (pods: those on its node), and
    ``nmisim_serve_waiting_requests``, the callers inside NMI's wait right now."""

    def __init__(self, objects: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.objects = objects
        #: set by the NMI handler as callers enter and leave NMI's wait
        self.waiting = 0
        self.nmi_operations = Histogram(
            f"{NAMESPACE}_nmi_operations_duration_seconds",
            "nmi operation duration in seconds",
            NMI_BUCKETS,
        )
        self.imds_errors = Counter(f"{NAMESPACE}_imds_operations_errors_count", "imds operation error count")
        self.imds_operations = Histogram(
            f"{NAMESPACE}_imds_operations_duration_seconds",
            "imds operation duration in seconds",
            IMDS_BUCKETS,
        )
        self.kubernetes_errors = Counter(
            f"{NAMESPACE}_kubernetes_api_operations_errors_count",
            "kubernetes api operation error count",
        )

    def nmi_operation(
        self, operation_type: str, status_code: int | None, namespace: str, resource: str, seconds: float
    ) -> None:
        labels = (
            ("namespace", namespace),
            ("operation_type", operation_type),
            ("resource", resource),
            ("status_code", str(status_code)),
        )
        self.nmi_operations.observe(labels, seconds)

    def imds_operation(self, operation_type: str, ok: bool, seconds: float) -> None:
        labels = (("operation_type", operation_type),)
        self.imds_operations.observe(labels, seconds)
        if not ok:
            self.imds_errors.inc(labels)

    def kubernetes_error(self, operation_type: str, by: int = 1) -> None:
        self.kubernetes_errors.inc((("operation_type", operation_type),), by)

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.imds_errors, self.imds_operations, self.kubernetes_errors, self.nmi_operations):
            lines += metric.render()
        if self.objects is not None:
            lines += [
                "# HELP nmisim_serve_objects objects the agent holds, by kind",
                "# TYPE nmisim_serve_objects gauge",
            ]
            lines += [f'nmisim_serve_objects{{kind="{k}"}} {n}' for k, n in sorted(self.objects().items())]
        lines += [
            "# HELP nmisim_serve_waiting_requests requests inside NMI's wait, not yet answered",
            "# TYPE nmisim_serve_waiting_requests gauge",
            f"nmisim_serve_waiting_requests {self.waiting}",
        ]
        return "\n".join(lines) + "\n"
