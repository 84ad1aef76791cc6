"""Loading Kubernetes objects from files or stdin into engine models.

Input as kubectl takes it: files and directories (``-R`` recurses), multi-document YAML or JSON, ``List``
kinds as ``kubectl get -o yaml`` prints them (and typed lists such as ``PodList`` from the API, whose items
carry no ``kind``), a top-level JSON array, ``-`` for stdin, ``kubectl kustomize`` output (``-k``).
Workloads become the pods their controllers would create (:mod:`nmisim.engine.workloads`); other kinds NMI
does not read are skipped. Every error is one line naming the file, the line, the document (1-based) and the
field path: ``pods.yaml:7: document 2: metadata.labels: expected a map of strings, got list``; with
``keep_going`` every bad object is reported and the rest is read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from nmisim.engine.config import ConfigError, SimulationConfig
from nmisim.engine.models import Model, ModelError, Pod
from nmisim.engine.resources import parse
from nmisim.engine.workloads import Workload, expand, is_workload
from nmisim.sources.schemas import unknown_fields


class LoadError(ValueError):
    """Bad input; ``str()`` is the one-line message for the user."""


class ClusterError(Exception):
    """A live cluster cannot be read (unreachable, bad kubeconfig, not authorised): exit 1.

    ``str()`` is the one-line message for the user. Raised by :mod:`nmisim.sources.cluster`; defined here
    so that callers can catch it without importing the kubernetes client. The CLI turns it into exit 1 in
    one place (``nmisim.cli.main``).
    """


#: the file names ``-f DIR`` reads, as kubectl does
MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
#: annotation on a pod, a workload or its template: finding codes not to gate on (``nmisim evaluate``)
IGNORE_ANNOTATION: Final = "nmisim.dev/ignore"

PodKey = tuple[str, str]


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    """Where an object was read: file (or ``<stdin>``, ``kustomize DIR``), document (1-based), line."""

    file: str
    document: int
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: document {self.document}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "document": self.document, "line": self.line}


@dataclass(slots=True)
class Loaded:
    objects: list[Model] = field(default_factory=list)
    configs: list[SimulationConfig] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    #: workloads (Deployment, StatefulSet, ...) whose pods-to-be are among ``objects``
    workloads: list[Workload] = field(default_factory=list)
    #: where each object and workload was read: (kind, namespace, name) -> origin
    origins: dict[tuple[str, str, str], Origin] = field(default_factory=dict)
    #: the workload (``Kind/ns/name``) a pod-to-be comes from
    pod_workload: dict[PodKey, str] = field(default_factory=dict)
    #: finding codes a pod's (or its workload's) ``nmisim.dev/ignore`` annotation suppresses
    ignored_codes: dict[PodKey, frozenset[str]] = field(default_factory=dict)
    #: finding codes the ``nmisim.dev/ignore`` annotation of a workload or an aad-pod-identity object
    #: suppresses for its own findings (``Kind/ns/name``)
    workload_ignored: dict[str, frozenset[str]] = field(default_factory=dict)
    #: every object read, as read (NMI's DaemonSet and other settings come from here)
    raw: list[tuple[Origin, Mapping[str, Any]]] = field(default_factory=list)
    #: one line per bad file or object (``keep_going``); empty when everything was read
    errors: list[str] = field(default_factory=list)


def read_text(path: str, stdin: TextIO | None = None) -> str:
    """The text of ``path`` (``-`` is stdin); errors are one-line :class:`LoadError`."""
    if path == "-":
        return (stdin or sys.stdin).read()
    p = Path(path)
    try:
        if p.is_dir():
            raise LoadError(f"{path}: is a directory (pass -f {path} to the command, which reads its files)")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except PermissionError:
        raise LoadError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def expand_paths(paths: Sequence[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """The files ``-f`` names, as kubectl reads them: a directory gives its ``.yaml``, ``.yml`` and ``.json``
    files in name order (with ``recursive``, its subdirectories' too). Returns (files, one-line errors)."""
    files: list[str] = []
    errors: list[str] = []
    for path in paths:
        p = Path(path)
        if path == "-" or not p.is_dir():
            if path != "-" and not p.exists():
                errors.append(f"{path}: no such file or directory")
                continue
            files.append(path)
            continue
        found: list[Path] = []
        if recursive:
            for root, dirs, names in os.walk(p):
                dirs.sort()
                found.extend(Path(root) / n for n in sorted(names) if n.endswith(MANIFEST_SUFFIXES))
        else:
            found = sorted(c for c in p.iterdir() if c.is_file() and c.name.endswith(MANIFEST_SUFFIXES))
        if not found:
            hint = "" if recursive else " (subdirectories are read with -R)"
            errors.append(f"{path}: no .yaml, .yml or .json files{hint}")
        files.extend(str(f) for f in found)
    return files, errors


def _yaml_problem(exc: yaml.YAMLError, name: str, document: int) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{name}: document {document}: invalid YAML/JSON: {problem}"
    where = f"{name}:{mark.line + 1}: document {document}"
    return f"{where}: invalid YAML/JSON: {problem} (column {mark.column + 1})"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Document:
    number: int
    line: int
    data: Any
    #: the line of each item of a List's ``items`` (or of a top-level array)
    item_lines: tuple[int, ...] = ()


def _item_lines(node: yaml.Node) -> tuple[int, ...]:
    seq: yaml.Node | None = None
    if isinstance(node, yaml.SequenceNode):
        seq = node
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "items" and isinstance(v, yaml.SequenceNode):
                seq = v
    if seq is None:
        return ()
    return tuple(child.start_mark.line + 1 for child in seq.value)


def iter_documents(text: str, name: str) -> Iterator[Document]:
    """Every non-empty document, with its number (1-based, empty ones counted) and first line."""
    n = 0
    loader = _Loader(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
                if node is None:
                    return
                data = loader.construct_document(node)
            except yaml.YAMLError as exc:
                raise LoadError(_yaml_problem(exc, name, n + 1)) from None
            n += 1
            if data is not None:
                yield Document(n, node.start_mark.line + 1, data, _item_lines(node))
    finally:
        loader.dispose()


def _items(doc: Document, name: str) -> Iterator[tuple[str, Any, int]]:
    """(path prefix, object, line) for a document: the object itself, or the items of a List."""
    data, n = doc.data, doc.number

    def line_of(i: int) -> int:
        return doc.item_lines[i] if i < len(doc.item_lines) else doc.line

    if isinstance(data, list):
        for i, item in enumerate(data):
            yield f"[{i}]", _with_kind(item, None), line_of(i)
        return
    if not isinstance(data, Mapping):
        raise LoadError(
            f"{name}:{doc.line}: document {n}: expected a Kubernetes object (a map), "
            f"got {type(data).__name__}"
        )
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in data:
        items = data.get("items") or []
        if not isinstance(items, list):
            raise LoadError(f"{name}:{doc.line}: document {n}: items: expected a list")
        implied = kind[: -len("List")] or None
        for i, item in enumerate(items):
            yield f"items[{i}]", _with_kind(item, implied), line_of(i)
        return
    yield "", data, doc.line


def _with_kind(obj: Any, implied_kind: str | None) -> Any:
    if isinstance(obj, Mapping) and "kind" not in obj and implied_kind:
        return {**obj, "kind": implied_kind}
    return obj


def ignored_codes(obj: Mapping[str, Any]) -> frozenset[str]:
    """The finding codes an object's ``nmisim.dev/ignore`` annotation names."""
    return _codes(_annotations(obj))


def _codes(annotations: Mapping[str, Any]) -> frozenset[str]:
    value = annotations.get(IGNORE_ANNOTATION)
    if not isinstance(value, str):
        return frozenset()
    return frozenset(c.strip() for c in value.split(",") if c.strip())


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    md = obj.get("metadata")
    ann = md.get("annotations") if isinstance(md, Mapping) else None
    return ann if isinstance(ann, Mapping) else {}


def _add_object(out: Loaded, obj: Any, origin: Origin, strict: bool) -> None:
    """Parse one object into ``out``; raises ModelError/LoadError for a bad one (nothing added then)."""
    if not isinstance(obj, Mapping):
        raise ModelError("", "expected a Kubernetes object (a map)")
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        raise ModelError("kind", "required")
    kind = str(obj["kind"])
    if strict:
        problems = unknown_fields(obj)
        if problems:
            raise ModelError(problems[0], f"unknown field (--strict: not in the {kind} CRD's schema)")
    if is_workload(obj):
        wl = expand(obj)
        pods: list[Pod] = []
        for pod_obj in wl.pods:
            try:
                pods.append(Pod.from_k8s(pod_obj))
            except ModelError as exc:  # the template's fields, named where the user wrote them
                raise ModelError(
                    f"{wl.template_path}.{exc.path}" if exc.path else wl.template_path, exc.problem
                ) from None
        wl_codes = _codes(wl.annotations)
        if wl_codes:
            out.workload_ignored[wl.key] = wl_codes
        for pod_obj, pod in zip(wl.pods, pods, strict=True):
            key = (pod.namespace, pod.name)
            out.pod_workload[key] = wl.key
            codes = wl_codes | _codes(_annotations(pod_obj))
            if codes:
                out.ignored_codes[key] = codes
            out.objects.append(pod)
        out.workloads.append(wl)
        out.origins[(kind, wl.namespace, wl.name)] = origin
        out.raw.append((origin, obj))
        return
    parsed = parse(obj)
    out.raw.append((origin, obj))
    if parsed is None:
        out.skipped[kind] = out.skipped.get(kind, 0) + 1
    elif isinstance(parsed, SimulationConfig):
        out.configs.append(parsed)
    else:
        out.objects.append(parsed)
        out.origins[(kind, parsed.namespace, parsed.name)] = origin
        codes = _codes(_annotations(obj))
        if codes and isinstance(parsed, Pod):
            out.ignored_codes[(parsed.namespace, parsed.name)] = codes
        elif codes:  # an exception's, binding's or identity's own findings
            out.workload_ignored[f"{kind}/{parsed.namespace}/{parsed.name}"] = codes


def load_text(
    text: str, name: str, into: Loaded | None = None, *, keep_going: bool = False, strict: bool = False
) -> Loaded:
    """Objects of one text. A bad object raises :class:`LoadError`, or with ``keep_going`` is reported in
    ``errors`` (one line: file, line, document, field path) and the rest is read."""
    out = into if into is not None else Loaded()

    def bad(message: str) -> None:
        if not keep_going:
            raise LoadError(message)
        out.errors.append(message)

    try:
        for doc in iter_documents(text, name):
            try:
                items = list(_items(doc, name))
            except LoadError as exc:
                bad(str(exc))
                continue
            for prefix, obj, line in items:
                origin = Origin(name, doc.number, line)
                try:
                    _add_object(out, obj, origin, strict)
                except ModelError as exc:
                    path = f"{prefix}.{exc.path}" if prefix and exc.path else (prefix or exc.path)
                    bad(f"{origin}: {path + ': ' if path else ''}{exc.problem}")
    except LoadError as exc:  # invalid YAML: the rest of this text cannot be read
        bad(str(exc))
    return out


def load_files(
    paths: Sequence[str],
    stdin: TextIO | None = None,
    *,
    recursive: bool = False,
    keep_going: bool = False,
    strict: bool = False,
) -> Loaded:
    """Objects from every file in order (``-`` reads stdin once; a directory its manifests, see
    :func:`expand_paths`)."""
    out = Loaded()
    files, errors = expand_paths(paths, recursive)
    for message in errors:
        if not keep_going:
            raise LoadError(message)
        out.errors.append(message)
    for path in files:
        try:
            text = read_text(path, stdin)
        except LoadError as exc:
            if not keep_going:
                raise
            out.errors.append(str(exc))
            continue
        load_text(text, "<stdin>" if path == "-" else path, out, keep_going=keep_going, strict=strict)
    return out


def kustomize(directory: str) -> str:
    """``kubectl kustomize DIR``'s output, with the kubectl ``make install`` provides (or the one on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.exists() else shutil.which("kubectl")
    if kubectl is None:
        raise LoadError(
            f"-k {directory}: kubectl not found (make install provides it; or put kubectl on PATH)"
        )
    try:
        proc = subprocess.run(
            [kubectl, "kustomize", directory], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LoadError(f"-k {directory}: kubectl kustomize: {exc}") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise LoadError(
            f"-k {directory}: {' '.join(lines[-1].split()) if lines else f'exit {proc.returncode}'}"
        )
    return proc.stdout


def load_config(path: str, stdin: TextIO | None = None) -> SimulationConfig:
    """A SimulationConfig file: exactly one SimulationConfig document (others are an error)."""
    name = "<stdin>" if path == "-" else path
    text = read_text(path, stdin)
    found: SimulationConfig | None = None
    for d in iter_documents(text, name):
        n, doc = d.number, d.data
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
