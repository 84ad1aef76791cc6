"""``nmisim who-can IDENTITY``: every pod that can obtain an identity, and how (issue 19 item 7).

The answers are the engine's (:mod:`nmisim.engine.whocan`): simulated token requests, not a separate
reading of the objects.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from nmisim.cli.common import add_input_options, build_input
from nmisim.cli.output import API_VERSION, render_data, table
from nmisim.engine.http import json_number
from nmisim.engine.whocan import HOWS, WhoCan, who_can


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "who-can",
        help="list every pod that can obtain an identity, and how",
        description="The reverse of evaluate: every pod that can get a token for IDENTITY (an AzureIdentity "
        "NAME or NAMESPACE/NAME, a clientID, a resourceID, or system-assigned) through its binding, as an "
        "exempt or hostNetwork pod whose node's VM carries it (spec.imds), through NMI's own port, or "
        "through NMI's /host/token. Each answer is a simulated token request.",
    )
    p.add_argument(
        "identity",
        metavar="IDENTITY",
        help="AzureIdentity NAME or NAMESPACE/NAME, clientID or resourceID (IDs ignore case), or "
        "system-assigned",
    )
    add_input_options(p, cluster=True)
    p.set_defaults(func=run)


def document(result: WhoCan) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "WhoCanResult",
        "identity": result.principal.to_json(),
        "results": [r.to_json() for r in result.rows],
        "hostToken": [e.to_json() for e in result.host_token],
        "summary": result.summary(),
    }


def _describe(result: WhoCan) -> str:
    p = result.principal
    if p.system_assigned:
        what = "the VMs' system-assigned identity"
    else:
        ids = [f"clientID {c}" for c in p.client_ids] + [f"resourceID {r}" for r in p.resource_ids]
        what = ", ".join(ids)
    where = []
    if p.azure_identities:
        where.append("AzureIdentity " + ", ".join(p.azure_identities))
    if p.on_all_vms:
        where.append("every VM (spec.imds)")
    elif p.vm_nodes:
        where.append("the VMs of nodes " + ", ".join(p.vm_nodes) + " (spec.imds)")
    else:
        where.append("no VM in spec.imds")
    return f"Identity {p.query}: {what}\n  on {'; '.join(where)}\n"


def render_table(result: WhoCan) -> str:
    out = _describe(result) + "\n"
    if not result.rows:
        out += "No pod can obtain it.\n"
    else:
        rows = [["NAMESPACE", "NAME", "WORKLOAD", "HOW", "ASK", "WAIT", "VIA"]]
        for r in result.rows:
            wait = f"{json_number(r.wait_seconds)}s" if r.wait_seconds else "-"
            rows.append([r.namespace, r.name, r.workload or "-", r.how, r.ask, wait, r.via])
        out += table(rows)
        s = result.summary()
        parts = [f"{s[h]} {h}" for h in HOWS if s[h]]
        pods = f"{s['pods']} pod" + ("" if s["pods"] == 1 else "s")
        out += f"\n{pods} can obtain it: {', '.join(parts)}\n"
    if result.host_token:
        out += "\nAny process on these nodes can get it from NMI's /host/token (127.0.0.1) by naming a pod:\n"
        for e in result.host_token:
            out += f"  node {e.node}: podns/podname {e.pod}\n"
    return out


def run(args: argparse.Namespace) -> int:
    data = build_input(args)
    result = who_can(data.world, args.identity)
    owners = data.loaded.pod_workload  # pods-to-be name the workload they come from
    rows = tuple(replace(r, workload=owners.get((r.namespace, r.name), "")) for r in result.rows)
    result = replace(result, rows=rows)
    if args.output == "table":
        sys.stdout.write(render_table(result))
    else:
        sys.stdout.write(render_data(document(result), args.output))
    return 0
