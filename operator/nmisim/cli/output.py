"""Rendering results as table, JSON or YAML (product.md §4)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from nmisim.engine.http import RequestResult, json_number

FORMATS: Final = ("table", "json", "yaml")
API_VERSION: Final = "nmisim.dev/v1alpha1"


def render_data(data: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=1000)
    raise ValueError(f"unknown output format {fmt}")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces (kubectl style)."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def request_table(result: RequestResult) -> str:
    bits = [f"route {result.route}"]
    if result.served_by:
        bits.append(f"served by {result.served_by}")
    if result.identity:
        bits.append(f"identity {result.identity}")
    if result.wait_seconds:
        bits.append(f"after waiting {json_number(result.wait_seconds)}s")
    out = f"HTTP {result.status}  ({', '.join(bits)})\n"
    for k, v in sorted(result.headers.items()):
        out += f"{k}: {v}\n"
    out += "\n" + result.body.rstrip("\n") + "\n\nWhy:\n"
    width = len(str(len(result.explanation)))
    for i, step in enumerate(result.explanation, 1):
        out += f"  {str(i).rjust(width)}. {step}\n"
    return out
