"""Loading Kubernetes objects from files or stdin into engine models.

Input: multi-document YAML or JSON, ``List`` kinds as ``kubectl get -o yaml`` prints them (and typed lists
such as ``PodList`` from the API, whose items carry no ``kind``), a top-level JSON array, ``-`` for stdin.
Kinds NMI does not read are skipped. Every error is one line naming the file, the document (1-based) and the
field path: ``pods.yaml: document 2: metadata.labels: expected a map of strings, got list``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from nmisim.engine.config import ConfigError, SimulationConfig
from nmisim.engine.models import KIND_CONFIG, Model, ModelError, model_class


class LoadError(ValueError):
    """Bad input; ``str()`` is the one-line message for the user."""


class ClusterError(Exception):
    """A live cluster cannot be read (unreachable, bad kubeconfig, not authorised): exit 1.

    ``str()`` is the one-line message for the user. Raised by :mod:`nmisim.sources.cluster`; defined here
    so that callers can catch it without importing the kubernetes client. The CLI turns it into exit 1 in
    one place (``nmisim.cli.main``).
    """


@dataclass(slots=True)
class Loaded:
    objects: list[Model] = field(default_factory=list)
    configs: list[SimulationConfig] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    #: the raw objects of the skipped kinds (DaemonSets: NMI's settings, sources/nmiconfig.py)
    others: list[Mapping[str, Any]] = field(default_factory=list)


def read_text(path: str, stdin: TextIO | None = None) -> str:
    """The text of ``path`` (``-`` is stdin); errors are one-line :class:`LoadError`."""
    if path == "-":
        return (stdin or sys.stdin).read()
    p = Path(path)
    try:
        if p.is_dir():
            raise LoadError(f"{path}: is a directory (pass files, e.g. -f {path}/*.yaml)")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except PermissionError:
        raise LoadError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML/JSON: {problem}{where}"


def iter_documents(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """(1-based document number, parsed document) for every non-empty document."""
    n = 0
    loader = yaml.safe_load_all(text)
    while True:
        try:
            doc = next(loader)
        except StopIteration:
            return
        except yaml.YAMLError as exc:
            raise LoadError(f"{name}: document {n + 1}: {_yaml_problem(exc)}") from None
        n += 1
        if doc is not None:
            yield n, doc


def _items(doc: Any, name: str, n: int) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path prefix, object) for a document: the object itself, or the items of a List."""
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _one(item, f"[{i}]", name, n, None)
        return
    if not isinstance(doc, Mapping):
        raise LoadError(
            f"{name}: document {n}: expected a Kubernetes object (a map), got {type(doc).__name__}"
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise LoadError(f"{name}: document {n}: items: expected a list")
        implied = kind[: -len("List")] or None
        for i, item in enumerate(items):
            yield from _one(item, f"items[{i}]", name, n, implied)
        return
    yield from _one(doc, "", name, n, None)


def _one(
    obj: Any, prefix: str, name: str, n: int, implied_kind: str | None
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    where = f"{prefix}: " if prefix else ""
    if not isinstance(obj, Mapping):
        raise LoadError(f"{name}: document {n}: {where}expected a Kubernetes object (a map)")
    if "kind" not in obj and implied_kind:
        obj = {**obj, "kind": implied_kind}
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        raise LoadError(f"{name}: document {n}: {prefix + '.' if prefix else ''}kind: required")
    yield prefix, obj


def parse_object(obj: Mapping[str, Any]) -> Model | SimulationConfig | None:
    """One Kubernetes object as an engine model; None for kinds NMI does not read.

    Raises :class:`ModelError` (or :class:`ConfigError`) naming the field path.
    """
    kind = obj.get("kind")
    if kind == KIND_CONFIG:
        return SimulationConfig.from_k8s(obj)
    cls = model_class(str(kind))
    if cls is None:
        return None
    return cls.from_k8s(obj)


def load_text(text: str, name: str, into: Loaded | None = None) -> Loaded:
    out = into if into is not None else Loaded()
    for n, doc in iter_documents(text, name):
        for prefix, obj in _items(doc, name, n):
            try:
                parsed = parse_object(obj)
            except ModelError as exc:
                path = f"{prefix}.{exc.path}" if prefix and exc.path else (prefix or exc.path)
                raise LoadError(f"{name}: document {n}: {path + ': ' if path else ''}{exc.problem}") from None
            if parsed is None:
                kind = str(obj.get("kind"))
                out.skipped[kind] = out.skipped.get(kind, 0) + 1
                out.others.append(obj)
            elif isinstance(parsed, SimulationConfig):
                out.configs.append(parsed)
            else:
                out.objects.append(parsed)
    return out


def load_files(paths: Sequence[str], stdin: TextIO | None = None) -> Loaded:
    """Objects from every file in order (``-`` reads stdin once)."""
    out = Loaded()
    for path in paths:
        load_text(read_text(path, stdin), "<stdin>" if path == "-" else path, out)
    return out


def load_config(path: str, stdin: TextIO | None = None) -> SimulationConfig:
    """A SimulationConfig file: exactly one SimulationConfig document (others are an error)."""
    name = "<stdin>" if path == "-" else path
    text = read_text(path, stdin)
    found: SimulationConfig | None = None
    for n, doc in iter_documents(text, name):
        if not isinstance(doc, Mapping):
            raise LoadError(f"{name}: document {n}: expected a SimulationConfig (a map)")
        try:
            cfg = SimulationConfig.from_k8s(doc)
        except ConfigError as exc:
            raise LoadError(f"{name}: document {n}: {exc}") from None
        if found is not None:
            raise LoadError(f"{name}: document {n}: more than one SimulationConfig")
        found = cfg
    if found is None:
        raise LoadError(f"{name}: no SimulationConfig document")
    return found
