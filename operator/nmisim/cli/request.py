"""``nmisim request``: one simulated HTTP request to 169.254.169.254 through NMI (product.md §4)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nmisim.cli.common import UsageError, add_input_options, build_world
from nmisim.cli.output import render_data, request_table
from nmisim.engine.http import DEFAULT_HEADERS, DEFAULT_QUERY, TARGET_IMDS, TARGETS, HttpRequest
from nmisim.engine.imds import TOKEN_PATH
from nmisim.engine.migration.after import request_after
from nmisim.engine.migration.assess import MODE_PLAN, MODE_VERIFY, assess
from nmisim.engine.migration.classify import PHASE_REMOVED, PHASES
from nmisim.engine.paths import go_parse_query
from nmisim.sources.nmioptions import add_nmi_options


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "request",
        help="simulate one IMDS request from a pod (or an IP on a node) through NMI",
        description="Simulate one HTTP request to 169.254.169.254:80 and print what the caller gets, with "
        "the chain of decisions. Default: the token request for https://management.azure.com/.",
    )
    add_input_options(p, cluster=True)
    add_nmi_options(p)  # NMI's flags and --nmi-values (sources/nmioptions.py)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--pod", metavar="NS/NAME", help="the calling pod (its IP, to the NMI on its node)")
    who.add_argument("--ip", metavar="IP", help="the caller's source IP (needs --node)")
    p.add_argument("--node", metavar="NODE", help="the node whose NMI receives the request (with --ip)")
    p.add_argument(
        "--to",
        choices=TARGETS,
        default=TARGET_IMDS,
        help="where the caller sends it: imds (169.254.169.254:80, DNATed to NMI from pod networks; "
        "hostNetwork callers reach IMDS directly) or nmi (NMI's own port: every caller, hostNetwork ones "
        "included, is looked up by its IP); default imds",
    )
    p.add_argument(
        "--path",
        default=TOKEN_PATH,
        help=f"the request target's path exactly as the client sends it, escapes and '//', '.', '..' "
        f"included (default {TOKEN_PATH}); a '?QUERY' part adds its parameters like --query",
    )
    p.add_argument(
        "--query", action="append", default=[], metavar="K=V", help="add/override a query parameter"
    )
    p.add_argument("--header", action="append", default=[], metavar="K:V", help="add/override a header")
    p.add_argument("--method", default="GET", help="HTTP method (default GET)")
    p.add_argument("--no-default-query", action="store_true", help="start from an empty query")
    p.add_argument("--no-default-headers", action="store_true", help="start without the Metadata header")
    p.add_argument(
        "--after",
        action="store_true",
        help="the answer after the migration to Azure Workload Identity (nmisim migrate's plan applied; "
        "with --verify, as it stands), printed after today's",
    )
    p.add_argument(
        "--phase",
        choices=PHASES,
        default=PHASE_REMOVED,
        help="with --after: parallel (NMI still installed) or removed (NMI gone; default)",
    )
    p.add_argument(
        "--verify", action="store_true", help="with --after: the migration as it stands, not as planned"
    )
    p.set_defaults(func=run)


def _merge(
    defaults: tuple[tuple[str, str], ...], extra: list[tuple[str, str]], fold: bool
) -> tuple[tuple[str, str], ...]:
    """Defaults, with each extra key overriding a default of the same key (header names ignore case)."""

    def norm(k: str) -> str:
        return k.lower() if fold else k

    override = {norm(k) for k, _ in extra}
    kept = [(k, v) for k, v in defaults if norm(k) not in override]
    return (*kept, *extra)


def build_request(args: argparse.Namespace) -> HttpRequest:
    query: list[tuple[str, str]] = []
    raw_path, sep, raw_query = args.path.partition("?")
    if sep:
        # the client's own query replaces the default one; Go's url.ParseQuery reads it
        query += go_parse_query(raw_query)
    for item in args.query:
        if "=" not in item:
            raise UsageError(f"--query {item}: expected K=V")
        k, v = item.split("=", 1)
        query.append((k, v))
    headers: list[tuple[str, str]] = []
    for item in args.header:
        if ":" not in item:
            raise UsageError(f"--header {item}: expected K:V")
        k, v = item.split(":", 1)
        if not k.strip():
            raise UsageError(f"--header {item}: empty header name")
        headers.append((k.strip(), v.strip()))
    # sent as is: Go decodes it and gorilla/mux cleans it (a path that is not clean gets a 301)
    path = raw_path if raw_path.startswith("/") else "/" + raw_path
    return HttpRequest(
        method=args.method.upper(),
        path=path,
        query=_merge(() if args.no_default_query or sep else DEFAULT_QUERY, query, fold=False),
        headers=_merge(() if args.no_default_headers else DEFAULT_HEADERS, headers, fold=True),
        raw=raw_query if sep and not args.query else None,
    )


def _after(args: argparse.Namespace, req: HttpRequest) -> int:
    """Today's answer and the answer after the migration, in the same shape."""
    from nmisim.cli.migrate import migration_input  # noqa: PLC0415

    if args.pod is None:
        raise UsageError("--after needs --pod (the migration is per pod)")
    ns, sep, name = args.pod.partition("/")
    if not sep or not ns or not name:
        raise UsageError(f"--pod {args.pod}: expected NAMESPACE/NAME")
    args.kustomize = getattr(args, "kustomize", [])
    errors: list[str] = []
    inp = migration_input(args, errors)
    if errors:
        raise UsageError(errors[0])
    report = assess(inp, MODE_VERIFY if args.verify else MODE_PLAN)
    pod = next((p for p in report.pods if p.namespace == ns and p.name == name), None)
    if pod is None or pod.pod is None:
        where = "in the cluster or the input" if args.cluster else "in the input"
        raise UsageError(f"--pod {args.pod}: no such pod {where}")
    today = inp.world.request(req, pod=pod.pod, target=args.to)
    after = request_after(inp, pod, req, args.phase)
    if args.output == "table":
        sys.stdout.write("Today (NMI):\n" + request_table(today))
        sys.stdout.write(f"\nAfter the migration ({args.phase}):\n" + request_table(after))
    else:
        sys.stdout.write(
            render_data(
                {"today": today.to_json(), "after": {"phase": args.phase, **after.to_json()}}, args.output
            )
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.verify and not args.after:
        raise UsageError("--verify goes with --after")
    if args.after:
        if args.ip is not None:
            raise UsageError("--after needs --pod (the migration is per pod)")
        return _after(args, build_request(args))
    if args.ip is not None and not args.node:
        raise UsageError("--ip needs --node (the node whose NMI receives the request)")
    if args.pod is not None and args.node:
        raise UsageError("--node goes with --ip; with --pod the pod's own node is used")
    req = build_request(args)
    world = build_world(args)
    if args.pod is not None:
        ns, sep, name = args.pod.partition("/")
        if not sep or not ns or not name:
            raise UsageError(f"--pod {args.pod}: expected NAMESPACE/NAME")
        pod = world.get_pod(ns, name)
        if pod is None:
            where = "in the cluster or the input" if args.cluster else "in the input"
            raise UsageError(f"--pod {args.pod}: no such pod {where}")
        result = world.request(req, pod=pod, target=args.to)
    else:
        result = world.request(req, ip=args.ip, node=args.node, target=args.to)
    if args.output == "table":
        sys.stdout.write(request_table(result))
    else:
        sys.stdout.write(render_data(result.to_json(), args.output))
    return 0
