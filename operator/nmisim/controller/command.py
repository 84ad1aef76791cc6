"""``nmisim run``: the operator (wraps ``kopf.run``). The CLI's entry point names this module
(:data:`nmisim.cli.main.SUBCOMMAND_MODULES`); it depends on nothing of the CLI package."""

from __future__ import annotations

import argparse
import datetime
import getpass
import logging
import os
import secrets
import socket
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator against the current cluster",
        description="Run the nmisim operator (kopf): an NMIVerdict per pod, exception status, Events.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster")
    scope.add_argument("-n", "--namespace", action="append", default=[], help="namespace (glob) to watch")
    p.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    p.add_argument("--peering", default=None, help="kopf peering object name (for several replicas)")
    p.add_argument("--priority", type=int, default=None, help="peering priority of this replica")
    p.add_argument("--liveness", default=None, metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    p.add_argument("--concurrency", type=int, default=16, help="API writes in flight at most")
    p.add_argument("--api-qps", type=float, default=200.0, help="average API requests per second at most")
    p.add_argument("--api-burst", type=int, default=400, help="burst of API requests")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true")
    verbosity.add_argument("-q", "--quiet", action="store_true")
    verbosity.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def peering_identity() -> str:
    """This replica's name among its peers, as kopf makes one (``POD_ID``, else user@host/time/random):
    given to kopf and to the operator's peering gate, which must know which peer it is."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f"{getpass.getuser()}@{socket.gethostname()}/{stamp}/{secrets.token_hex(2)}"


def run(args: argparse.Namespace) -> int:
    # Imported here: the offline subcommands need neither kopf nor the operator's handlers.
    import kopf  # noqa: PLC0415

    import nmisim.controller.handlers  # noqa: F401, PLC0415 - registers the handlers
    from nmisim.controller.controller import Options  # noqa: PLC0415

    if args.concurrency < 1 or args.api_qps < 0 or args.api_burst < 1:
        raise ValueError("--concurrency and --api-burst must be at least 1, --api-qps not negative")
    kopf.configure(debug=args.debug, verbose=args.verbose, quiet=args.quiet)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not (args.verbose or args.debug):
        # kopf logs every handled event at INFO: thousands of lines per minute on a busy cluster.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    options = Options(
        concurrency=args.concurrency,
        qps=args.api_qps,
        burst=args.api_burst,
        metrics_port=args.metrics_port,
        namespaces=() if args.all_namespaces else tuple(args.namespace),
    )
    identity = peering_identity()
    kopf.run(
        identity=identity,  # type: ignore[arg-type]  # kopf.Identity: a NewType of str, not exported
        standalone=args.standalone or None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness,
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        memo=kopf.Memo(options=options, identity=identity),
    )
    return 0
