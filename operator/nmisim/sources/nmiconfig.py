"""NMI's settings for an offline simulation, from every place that sets them (docs/cli.md, "NMI's settings
from manifests, values and flags").

Lowest first: NMI's defaults, the SimulationConfig (``--config``, one among the ``-f`` files, or the
cluster's), an NMI DaemonSet among the input objects, the aad-pod-identity chart's values
(``--nmi-values``), NMI's flags on nmisim's command line. A DaemonSet and the chart are whole NMI
invocations: a flag they leave out is NMI's default, as on the node. A source that replaces another's
different value is reported as one warning naming both; two NMI DaemonSets that disagree, a values file
that cannot be read, and settings NMI refuses at start are bad input (``LoadError``, exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from nmisim.engine.config import NMIConfig, SimulationConfig
from nmisim.engine.models import Model, ModelError
from nmisim.engine.nmiflags import (
    CONFIG_FLAGS,
    FLAG_OF_FIELD,
    Layer,
    NMISettingsError,
    config_layer,
    merge_values,
    nmi_config_of,
    nmi_containers,
    parse_nmi_argv,
    render_chart,
    resolve,
)
from nmisim.engine.resources import parse
from nmisim.sources.files import LoadError, iter_documents, read_text

COMMAND_LINE = "the command line"


@dataclass(slots=True)
class NMISettings:
    """The SimulationConfig to simulate with (None: nothing set NMI's settings, keep the caller's
    default), objects the chart installs (engine models), warnings (one line each, without prefix) and
    where each NMIConfig field's value comes from."""

    config: SimulationConfig | None
    objects: list[Model] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)


def dest_of(flag_name: str) -> str:
    """argparse's attribute for ``--flag-name`` (``add_nmi_options``)."""
    return flag_name.replace("-", "_")


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """NMIConfig fields set by NMI's flags on nmisim's command line (absent attributes: not offered)."""
    out: dict[str, Any] = {}
    for flag in CONFIG_FLAGS:
        value = getattr(args, dest_of(flag.name), None)
        if value is not None:
            out[flag.field] = value
    return out


def read_values(paths: Sequence[str], stdin: TextIO | None = None) -> dict[str, Any]:
    """Helm values files, merged in order as ``helm -f a -f b`` merges them."""
    merged: dict[str, Any] = {}
    for path in paths:
        name = "<stdin>" if path == "-" else path
        docs = [d.data for d in iter_documents(read_text(path, stdin), f"--nmi-values {name}")]
        if len(docs) > 1:
            raise LoadError(f"--nmi-values {name}: expected one YAML document of values, got {len(docs)}")
        doc = docs[0] if docs else {}
        if not isinstance(doc, Mapping):
            raise LoadError(f"--nmi-values {name}: expected a map of chart values, got {type(doc).__name__}")
        merged = merge_values(merged, doc)
    return merged


def _describe_difference(a: NMIConfig, b: NMIConfig) -> str:
    da, db = a.model_dump(), b.model_dump()
    return ", ".join(f"--{FLAG_OF_FIELD[k]} {da[k]} vs {db[k]}" for k in da if da[k] != db[k])


def _positional_warnings(source: str, positional: Sequence[str]) -> list[str]:
    if not positional:
        return []
    words = " ".join(repr(p) for p in positional)
    return [
        f"{source}: NMI ignores the arguments {words} (a bare boolean flag takes no value: "
        "write --flag=false)"
    ]


def nmi_settings(
    config: SimulationConfig | None,
    raw_objects: Sequence[Mapping[str, Any]],
    args: argparse.Namespace,
    *,
    config_source: str | None = None,
    stdin: TextIO | None = None,
) -> NMISettings:
    """NMI's settings from ``config`` (the SimulationConfig chosen so far), the NMI DaemonSet among
    ``raw_objects``, ``args.nmi_values``/``args.nmi_release_namespace`` and NMI's flags in ``args``
    (attributes absent from ``args`` count as not given). Raises :class:`LoadError` on bad input."""
    try:
        return _settings(config, raw_objects, args, config_source, stdin)
    except NMISettingsError as exc:
        raise LoadError(str(exc)) from None


def _settings(
    config: SimulationConfig | None,
    raw_objects: Sequence[Mapping[str, Any]],
    args: argparse.Namespace,
    config_source: str | None,
    stdin: TextIO | None,
) -> NMISettings:
    layers: list[Layer] = []
    warnings: list[str] = []
    objects: list[Model] = []
    if config is not None:
        layers.append(config_layer(config, config_source or f"SimulationConfig/{config.name}"))
    found: list[tuple[str, NMIConfig, Mapping[str, Any]]] = []
    for c in nmi_containers(raw_objects):
        parsed = parse_nmi_argv(c.argv, c.env, c.source)
        found.append((c.source, nmi_config_of(parsed.settings, c.source), parsed.settings))
        warnings += _positional_warnings(c.source, parsed.positional)
    if found:
        first_source, first, first_settings = found[0]
        for source, other, _ in found[1:]:
            if other != first:
                raise NMISettingsError(
                    f"two NMI DaemonSets with different settings: {first_source} and {source} "
                    f"({_describe_difference(first, other)}); pass one of them"
                )
        layers.append(Layer(first_source, first_settings, whole=True))
    values_files: list[str] = list(getattr(args, "nmi_values", None) or [])
    if values_files:
        source = "--nmi-values " + ",".join(values_files)
        release_ns = getattr(args, "nmi_release_namespace", None) or "default"
        rendered = render_chart(read_values(values_files, stdin), release_ns, source)
        warnings += [f"{source}: {note}" for note in rendered.notes]
        parsed = parse_nmi_argv(rendered.argv, rendered.env, f"{source} (the chart's NMI DaemonSet)")
        nmi_config_of(parsed.settings, source)
        layers.append(Layer(source, parsed.settings, whole=True))
        objects += [_model(obj, source) for obj in rendered.objects]
    cli = flag_settings(args)
    if cli:
        layers.append(Layer(COMMAND_LINE, cli, whole=False))
    if not layers or (len(layers) == 1 and config is not None):
        return NMISettings(config=config, objects=objects, warnings=warnings)
    resolved = resolve(layers)
    base = config if config is not None else SimulationConfig.default()
    return NMISettings(
        config=base.model_copy(update={"nmi": resolved.config}),
        objects=objects,
        warnings=warnings + list(resolved.warnings),
        provenance=dict(resolved.provenance),
    )


def _model(obj: Mapping[str, Any], source: str) -> Model:
    kind = str(obj["kind"])
    meta = obj["metadata"]
    try:
        parsed = parse(obj)
    except ModelError as exc:
        raise LoadError(f"{source}: the chart's {kind} {meta['namespace']}/{meta['name']}: {exc}") from None
    if parsed is None or isinstance(parsed, SimulationConfig):  # pragma: no cover - only kinds NMI reads
        raise LoadError(f"{source}: the chart's {kind} is not a kind NMI reads")
    return parsed
