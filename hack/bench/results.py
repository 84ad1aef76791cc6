"""The benchmark's figures as typed objects: one dataclass per phase, gathered in :class:`Results`, which
alone decides the JSON (``results.json``'s ``results``: the same flat keys as before the package, so the
files in hack/bench-results/ read back unchanged), the targets, the summary and the smoke test's checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.config import CHANGE_RATE, NOT_AT_TIER, TARGETS, Op


@dataclass(slots=True)
class BareClient:
    """The operator's writes (create, Event, status) done by a client with no logic."""

    bare_write_s: float


@dataclass(slots=True)
class ColdStart:
    cold_s: float  # operator start -> every NMIVerdict correct
    cold_ratio: float  # cold_s / bare_write_s
    cold_tail_s: float  # then until it writes nothing for 3 s
    cold_writes: int
    cold_writes_by_resource: dict[str, float]
    api_qps_peak: int  # the operator's writes in its busiest second


@dataclass(slots=True)
class NoOp:
    writes_per_noop: float  # writes per pod annotation (cannot change a verdict)


@dataclass(slots=True)
class Freshness:
    changes: int
    writes_per_change: float
    writes_per_change_by_resource: dict[str, float]
    freshness_p50_ms: int  # API accepted a label change -> NMIVerdict updated
    freshness_p99_ms: int
    watch_p50_ms: int  # API accepted a label change -> a bare watch saw it (the floor)
    watch_p99_ms: int
    freshness_vs_watch_p50: float
    freshness_lost: int  # changes whose verdict never came


@dataclass(slots=True)
class Fanout:
    fanout_create_s: float
    fanout_delete_s: float
    fanout_s: float
    # where each direction's time went: the operator's writes, by resource, from the exception's create
    # (delete) until every verdict was right, and how many of the writes before it were Events
    fanout_create_writes: dict[str, int] = field(default_factory=dict)
    fanout_delete_writes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Memory:
    rss_steady_mib: float | None
    rss_peak_mib: float | None
    rss_peak_over_steady: float | None


@dataclass(slots=True)
class Restart:
    restart_seeded_s: float
    restart_writes: int


@dataclass(slots=True)
class Machine:
    cores: int | None
    memory_gib: int


Phase = BareClient | ColdStart | NoOp | Freshness | Fanout | Memory | Restart


@dataclass(slots=True)
class Results:
    """One run's figures. Phases not run (yet) are None and write no keys."""

    tier: str
    pods: int
    namespaces: int
    fanout_pods: int
    verdict_mix: dict[str, int] = field(default_factory=dict)
    bare: BareClient | None = None
    cold: ColdStart | None = None
    noop: NoOp | None = None
    freshness: Freshness | None = None
    fanout: Fanout | None = None
    memory: Memory | None = None
    restart: Restart | None = None
    http_429: int | None = None
    date: str | None = None
    commit: str | None = None
    machine: Machine | None = None
    duration_s: float | None = None

    #: attribute -> its phase's class, in the order of the JSON keys
    PHASES: ClassVar[dict[str, type[Phase]]] = {
        "bare": BareClient,
        "cold": ColdStart,
        "noop": NoOp,
        "freshness": Freshness,
        "fanout": Fanout,
        "memory": Memory,
        "restart": Restart,
    }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tier": self.tier,
            "pods": self.pods,
            "namespaces": self.namespaces,
            "fanoutPods": self.fanout_pods,
            "verdictMix": dict(self.verdict_mix),
        }
        for name in self.PHASES:
            phase = getattr(self, name)
            if phase is not None:
                fields = dataclasses.fields(phase)
                optional = {f.name for f in fields if f.default_factory is not dataclasses.MISSING}
                out.update({k: v for k, v in dataclasses.asdict(phase).items() if v or k not in optional})
        if self.http_429 is not None:
            out["http_429"] = self.http_429
        if self.date is not None:
            out["date"] = self.date
        if self.commit is not None:
            out["commit"] = self.commit
        if self.machine is not None:
            out["machine"] = dataclasses.asdict(self.machine)
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Results:
        phases: dict[str, Any] = {}
        for name, kind in cls.PHASES.items():
            names = [f.name for f in dataclasses.fields(kind)]
            needed = [f.name for f in dataclasses.fields(kind) if f.default_factory is dataclasses.MISSING]
            if all(n in doc for n in needed):
                phases[name] = kind(**{n: doc[n] for n in names if n in doc})
        machine = Machine(**doc["machine"]) if "machine" in doc else None
        return cls(
            tier=doc["tier"],
            pods=doc["pods"],
            namespaces=doc["namespaces"],
            fanout_pods=doc["fanoutPods"],
            verdict_mix=dict(doc.get("verdictMix") or {}),
            http_429=doc.get("http_429"),
            date=doc.get("date"),
            commit=doc.get("commit"),
            machine=machine,
            duration_s=doc.get("duration_s"),
            **phases,
        )

    @classmethod
    def numeric_keys(cls) -> list[str]:
        """The keys of every phase whose figure is a number (what a complete run must have written)."""
        keys = []
        for kind in cls.PHASES.values():
            for f in dataclasses.fields(kind):
                if not str(f.type).startswith("dict"):
                    keys.append(f.name)
        return [*keys, "http_429"]

    def value(self, key: str) -> Any:
        """One figure by its JSON key (None when its phase did not run)."""
        return self.to_json().get(key)


def met(value: Any, op: Op, target: float) -> bool:
    if value is None:
        return False
    return bool(value <= target) if op == "<=" else bool(value == target)


@dataclass(frozen=True, slots=True)
class TargetResult:
    op: Op
    target: float
    met: bool


def targets(results: Results) -> dict[str, TargetResult]:
    """The targets that apply to the run's tier, each met or not."""
    skip = NOT_AT_TIER.get(results.tier, frozenset())
    return {
        k: TargetResult(op, t, met(results.value(k), op, t))
        for k, (op, t) in TARGETS.items()
        if k not in skip
    }


@dataclass(slots=True)
class Series:
    """The curves behind the plot."""

    bare_done: list[float] = field(default_factory=list)  # seconds since the bare client started
    cold_done: list[float] = field(default_factory=list)  # seconds since the operator started
    freshness_ms: list[float] = field(default_factory=list)
    watch_ms: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rss"] = [list(p) for p in self.rss]
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Series:
        return cls(
            bare_done=list(doc.get("bare_done", [])),
            cold_done=list(doc.get("cold_done", [])),
            freshness_ms=list(doc.get("freshness_ms", [])),
            watch_ms=list(doc.get("watch_ms", [])),
            rss=[(float(t), float(m)) for t, m in doc.get("rss", [])],
        )


@dataclass(slots=True)
class Document:
    """results.json: ``{"results", "series", ["engine",] "targets"}``."""

    results: Results
    series: Series = field(default_factory=Series)
    engine: dict[str, Any] | None = None

    def targets(self) -> dict[str, TargetResult]:
        return targets(self.results)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"results": self.results.to_json(), "series": self.series.to_json()}
        if self.engine is not None:
            out["engine"] = self.engine
        out["targets"] = {k: dataclasses.asdict(t) for k, t in self.targets().items()}
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Document:
        return cls(
            results=Results.from_json(doc["results"]),
            series=Series.from_json(doc.get("series") or {}),
            engine=doc.get("engine"),
        )


def summary_rows(results: Results) -> list[tuple[str, str, str | None]]:
    """(label, value, target key) per line of the summary; a row with a key says whether it is met."""
    r = results.value
    return [
        ("cold_s / bare_write_s", f"{r('cold_s')} s / {r('bare_write_s')} s", "cold_ratio"),
        ("freshness p50 / p99", f"{r('freshness_p50_ms')} / {r('freshness_p99_ms')} ms", "freshness_p50_ms"),
        ("", "", "freshness_p99_ms"),
        ("watch p50 / p99 (floor)", f"{r('watch_p50_ms')} / {r('watch_p99_ms')} ms", None),
        ("fan-out create + delete", f"{r('fanout_create_s')} + {r('fanout_delete_s')} s", "fanout_create_s"),
        ("", "", "fanout_delete_s"),
        ("fan-out writes, create", _writes(r("fanout_create_writes")), None),
        ("fan-out writes, delete", _writes(r("fanout_delete_writes")), None),
        ("writes per no-op update", str(r("writes_per_noop")), "writes_per_noop"),
        ("writes per verdict change", str(r("writes_per_change")), "writes_per_change"),
        ("writes after restart", str(r("restart_writes")), "restart_writes"),
        ("RSS steady / peak", f"{r('rss_steady_mib')} / {r('rss_peak_mib')} MiB", "rss_steady_mib"),
        ("", "", "rss_peak_over_steady"),
        ("API write QPS peak", str(r("api_qps_peak")), None),
        ("HTTP 429 answers", str(r("http_429")), "http_429"),
    ]


def _writes(by_resource: Any) -> str:
    """A fan-out direction's writes: 'nmiverdicts/status 1000, events 612, ...'."""
    if not by_resource:
        return "-"
    return ", ".join(f"{k.split(' ', 1)[-1]} {v}" for k, v in by_resource.items())


def title(results: Results, cores: int | None) -> str:
    return (
        f"nmisim benchmark, tier {results.tier}: {results.pods} pods in {results.namespaces} namespaces "
        f"(+{results.fanout_pods} fan-out), {cores} cores"
    )


FRESHNESS_TITLE = f"Freshness at {CHANGE_RATE:g} changes/s (CDF)"
