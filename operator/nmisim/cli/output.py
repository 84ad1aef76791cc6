"""Rendering results as table, JSON or YAML (product.md §4)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from nmisim.engine.objects import ObjectFindings
from nmisim.engine.routes import RequestResult, json_number
from nmisim.engine.verdict import VERDICTS, PodResult

FORMATS: Final = ("table", "json", "yaml")
API_VERSION: Final = "nmisim.dev/v1alpha1"


def evaluation_document(
    results: Sequence[PodResult], objects: ObjectFindings | None = None
) -> dict[str, Any]:
    """The ``EvaluationResult`` JSON document (product.md §4); with ``objects``, also the keys
    ``exceptions``, ``bindings`` and ``identities`` (objects with findings, docs/verdicts.md)."""
    summary: dict[str, int] = {"pods": len(results)}
    for verdict in VERDICTS:
        summary[verdict] = sum(1 for r in results if r.verdict == verdict)
    return {
        "apiVersion": API_VERSION,
        "kind": "EvaluationResult",
        "results": [r.to_json() for r in results],
        **(objects.to_json() if objects is not None else {}),
        "summary": summary,
    }


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


def _wait(seconds: float) -> str:
    return f"{json_number(seconds)}s" if seconds else "-"


def evaluation_table(results: Sequence[PodResult], objects: ObjectFindings | None = None) -> str:
    rows = [["NAMESPACE", "NAME", "VERDICT", "EXCEPTION", "IDENTITY", "TOKEN", "WAIT"]]
    for r in results:
        exc = r.exception or ("(mic shortcut)" if r.mic_shortcut else "-")
        ident = r.token_request.identity or "-"
        if r.ambiguous:
            ident += f" (+{len(r.identities) - 1} more)"
        status = str(r.token_request.status) if r.token_request.status is not None else "-"
        rows.append([r.namespace, r.name, r.verdict, exc, ident, status, _wait(r.token_request.wait_seconds)])
    doc = evaluation_document(results)
    s = doc["summary"]
    out = table(rows) if results else "No pods in the input.\n"
    out += (
        f"\n{s['pods']} pods: {s['intercepted']} intercepted, {s['exempt']} exempt, "
        f"{s['bypass']} bypass, {s['inactive']} inactive\n"
    )
    found = [(r, f) for r in results for f in r.findings]
    if found:
        out += f"\nFindings ({len(found)}):\n"
        frows = [[f"{r.namespace}/{r.name}", f.code, f.message] for r, f in found]
        out += "".join("  " + line + "\n" for line in table(frows).splitlines())
    if objects:
        out += f"\nObjects ({len(objects)}):\n"
        orows = [
            [f"{kind}/{r.namespace}/{r.name}", f.code, f.message] for kind, r in objects for f in r.findings
        ]
        out += "".join("  " + line + "\n" for line in table(orows).splitlines())
    return out


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
