"""``nmisim entra``: the simulated Microsoft Entra token endpoint (docs/migration.md "The simulated Entra").

Its directory (tenant, federated credentials, applications) is what ``nmisim migrate`` reads:
``spec.workloadIdentity`` of the SimulationConfig and Azure Service Operator FederatedIdentityCredentials,
from ``-f``/``--config`` files and/or ``--cluster``; re-read on SIGHUP and every ``--reload`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmisim.cli.common import UsageError, add_kubeconfig_options, target_of, warn
from nmisim.engine.config import SimulationConfig

if TYPE_CHECKING:
    from nmisim.entra.exchange import Directory


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "entra",
        help="serve a simulated Microsoft Entra token endpoint (fake tokens that say so)",
        description="A simulated Microsoft Entra token endpoint: verifies a pod's client assertion as Entra "
        "does (signature against the issuer's JWKS, iss, sub, aud, expiry), finds the federated credential "
        "nmisim migrate would, and answers a fake access token that says it is simulated, or Entra's error "
        "JSON with its AADSTS code. Listen on the node bridge only (e.g. 10.89.0.1:443), never on an "
        "address outside the test host. Exit codes: 0 stopped by a signal, 1 failure, 2 bad input.",
    )
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML/JSON with the SimulationConfig (spec.workloadIdentity), ASO FederatedIdentityCredentials "
        "and UserAssignedIdentities, AzureIdentities (repeatable; a directory gives its files)",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="with -f DIR: its subdirectories too")
    p.add_argument("--config", metavar="FILE", help="the SimulationConfig YAML (else one among -f)")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="read SimulationConfig/default (unless --config), AzureIdentities and the ASO objects from the "
        "cluster of the current kubeconfig (never its pods)",
    )
    add_kubeconfig_options(p)
    p.add_argument(
        "--listen",
        default="127.0.0.1:8443",
        metavar="ADDR:PORT",
        help="where to listen (default 127.0.0.1:8443; on the real node: 10.89.0.1:443, the bridge only)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="the server certificate (PEM, with its chain)")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="serve without TLS (tests only: no Azure SDK sends a token request over http)",
    )
    p.add_argument(
        "--issuer-ca", metavar="FILE", help="CA bundle to verify the issuers with (default: system)"
    )
    p.add_argument(
        "--issuer-address",
        action="append",
        default=[],
        metavar="[NAME=]IP:PORT",
        help="dial IP:PORT for the issuer host NAME (TLS still checks NAME), e.g. "
        "kubernetes.default.svc=127.0.0.1:6443; without NAME: for every host name (nothing is resolved "
        "through DNS). Repeatable",
    )
    p.add_argument(
        "--signing-key",
        metavar="FILE",
        help="RSA private key (PEM) that signs the fake access tokens (default: a fresh key at start-up)",
    )
    p.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="add this to Entra's clock for the assertion's nbf/exp check (e.g. 7200: an assertion read "
        "once and used after the kubelet rotated it gets AADSTS700024)",
    )
    p.add_argument(
        "--reload",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="re-read the credentials this often (default 30; 0: only on SIGHUP, which also forgets the "
        "issuers' cached keys)",
    )
    p.add_argument(
        "--metrics-listen", metavar="ADDR:PORT", help="serve Prometheus /metrics here (default: off)"
    )
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines (default: text)")
    p.set_defaults(func=run)


def address(text: str, flag: str) -> tuple[str, int]:
    """``IP:PORT`` (``[v6]:PORT``) as (ip, port); UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise UsageError(f"{flag} {text}: expected IP:PORT") from None
    if not sep or not 0 <= number <= 65535:
        raise UsageError(f"{flag} {text}: expected IP:PORT")
    return host, number


def issuer_addresses(values: list[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for v in values:
        name, sep, target = v.rpartition("=")
        if sep and not name:
            raise UsageError(f"--issuer-address {v}: empty host name")
        ip, port = address(target, "--issuer-address")
        if ipaddress.ip_address(ip).is_link_local:
            raise UsageError(f"--issuer-address {v}: link-local addresses are never dialled")
        out[(name or "*").lower()] = (ip, port)
    return out


def _readable(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise UsageError(f"{flag} {path}: no such file")


def _vm_client_ids(cfg: SimulationConfig) -> list[str]:
    nodes = [u.client_id for ov in cfg.imds.nodes.values() for u in (ov.user_assigned or ())]
    return [u.client_id for u in cfg.imds.user_assigned] + nodes


def loader(args: argparse.Namespace) -> Directory:
    """The directory from the objects ``nmisim migrate`` reads: with ``-f``, as migrate reads the files;
    with ``--cluster``, only SimulationConfig/default (or ``--config``), AzureIdentities and ASO's objects
    (never the pods: this runs every ``--reload`` seconds)."""
    from nmisim.entra.exchange import directory  # noqa: PLC0415

    if args.cluster:
        from nmisim.sources.cluster import load_entra  # noqa: PLC0415
        from nmisim.sources.files import load_config  # noqa: PLC0415
        from nmisim.sources.migration import credentials_from  # noqa: PLC0415

        live = load_entra(target_of(args), warn)
        cfg = load_config(args.config) if args.config else live.config or SimulationConfig.default()
        creds = credentials_from(live.others, live.identities)
        ids = [i.client_id for i in live.identities]
        return directory(cfg.workload_identity, creds, [*ids, *_vm_client_ids(cfg)])
    from nmisim.cli.migrate import migration_input  # noqa: PLC0415

    ns = argparse.Namespace(**vars(args))
    ns.kustomize, ns.strict, ns.namespace, ns.vm_identities = [], False, None, []
    inp = migration_input(ns)
    ids = [i.client_id for i in inp.world.identities()]
    return directory(inp.config, inp.credentials, [*ids, *_vm_client_ids(inp.world.config)])


def run(args: argparse.Namespace) -> int:
    from nmisim.entra.jwt import JWTError, generate, private_key_from_pem  # noqa: PLC0415
    from nmisim.entra.server import EntraServer, Options  # noqa: PLC0415

    if not args.files and not args.cluster:
        raise UsageError("no input: pass -f FILE (with the SimulationConfig, or --config FILE) or --cluster")
    if args.files and args.cluster:
        raise UsageError(
            "-f and --cluster exclude each other (with --cluster, --config FILE names the config)"
        )
    if not args.cluster and (args.kubeconfig or args.context):
        raise UsageError("--kubeconfig and --context go with --cluster")
    listen = address(args.listen, "--listen")
    metrics = address(args.metrics_listen, "--metrics-listen") if args.metrics_listen else None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not args.tls_cert and not args.plain_http:
        raise UsageError("--tls-cert/--tls-key are required (Azure SDKs reach Entra over https only)")
    if args.tls_cert and args.plain_http:
        raise UsageError("--plain-http and --tls-cert exclude each other")
    for path, flag in (
        (args.tls_cert, "--tls-cert"),
        (args.tls_key, "--tls-key"),
        (args.issuer_ca, "--issuer-ca"),
        (args.signing_key, "--signing-key"),
    ):
        _readable(path, flag)
    if args.reload < 0:
        raise UsageError(f"--reload {args.reload:g}: must be 0 or more")
    overrides = issuer_addresses(args.issuer_address)
    try:
        signer = private_key_from_pem(Path(args.signing_key).read_text()) if args.signing_key else generate()
    except (JWTError, UnicodeDecodeError) as exc:
        raise UsageError(f"--signing-key {args.signing_key}: {exc}") from None
    logging.basicConfig(
        level=logging.INFO, format="%(message)s" if args.log_format == "json" else "%(asctime)s %(message)s"
    )
    options = Options(
        listen=listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        issuer_ca=args.issuer_ca,
        issuer_addresses=overrides,
        clock_offset=args.clock_offset,
        reload_seconds=args.reload,
        metrics_listen=metrics,
        log_json=args.log_format == "json",
    )
    server = EntraServer(options, lambda: loader(args), signer)  # bad input: LoadError, exit 2
    try:
        server.ssl_context()  # a bad certificate or key is bad input, before anything listens
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise UsageError(f"--tls-cert/--tls-key: {exc}") from None
    d = server.directory
    if not d.credentials:
        warn("no federated credential in the input: every exchange will get AADSTS70021")

    def ready() -> None:
        print(
            f"nmisim entra: tenant {d.tenant_id}, {len(d.credentials)} federated credentials, "
            f"{len(d.clients)} applications; listening on {'https' if args.tls_cert else 'http'}://"
            f"{args.listen} (port {server.ports[0]})",
            file=sys.stderr,
            flush=True,
        )

    try:
        asyncio.run(server.serve_forever(ready))
    except OSError as exc:
        print(f"nmisim: failed: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0
