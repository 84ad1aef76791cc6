"""``--strict``: fields of the aad-pod-identity objects that their CRD's schema does not know.

The schemas are nmisim's CRDs (``crds/``, shipped in the wheel as ``nmisim/crds``), whose structural schemas
describe what aad-pod-identity v1.8.17 reads. An unknown field such as ``spec.selectr`` is accepted by NMI
and ignored — the binding then matches no pod — which is what ``--strict`` makes an error, as kubeconform's
``-strict`` does for any kind it has a schema for. A schema node with ``properties`` and neither
``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` admits only those properties.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def _crd_dir() -> Path | None:
    packaged = resources.files("nmisim").joinpath("crds")
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "crds"  # a source checkout: operator/nmisim/sources/
    return repo if repo.is_dir() else None


@functools.cache
def schemas() -> dict[str, Mapping[str, Any]]:
    """Kind -> openAPIV3Schema of its served version, for every CRD nmisim ships."""
    out: dict[str, Mapping[str, Any]] = {}
    directory = _crd_dir()
    if directory is None:
        return out
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, Mapping) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions", []):
            if version.get("served"):
                out[spec["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
                break
    return out


def _walk(value: Any, schema: Mapping[str, Any], path: str, out: list[str]) -> None:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, Mapping):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(props, Mapping) and key in props:
                _walk(item, props[key], child, out)
            elif isinstance(extra, Mapping):
                _walk(item, extra, child, out)
            elif isinstance(props, Mapping) and extra is None:
                out.append(child)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{i}]", out)


def unknown_fields(obj: Mapping[str, Any]) -> list[str]:
    """Paths of the fields of ``obj`` its kind's CRD schema does not know; [] for kinds without a CRD."""
    schema = schemas().get(str(obj.get("kind")))
    if schema is None:
        return []
    out: list[str] = []
    _walk(obj, schema, "", out)
    return out
