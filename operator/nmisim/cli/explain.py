"""``nmisim explain pod/NAME -n NS``: what NMI does with one live pod's token requests, for a person.

Loads the pod from the live cluster (current kubeconfig) together with everything that decides its fate
(exceptions in its namespace, identities, bindings and assigned identities everywhere, the pods on its node
for NMI's lookup by IP, ``SimulationConfig/default``), runs the default token request through the engine and
prints: a one-line headline, the HTTP outcome, the numbered chain of reasons, the objects and flags that
decided, the findings, and the ``nmisim request`` command line to try other paths and parameters.
``-o json|yaml`` prints ``{"pod", "result", "request", "decisions"}`` instead. The decisions are the
engine's own trace (``World.evaluate(pod, trace=True)``, :mod:`nmisim.engine.trace`): this module prints.

Also reachable as ``kubectl nmisim explain`` (the ``kubectl-nmisim`` entry point).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from nmisim.cli.common import (
    UsageError,
    add_kubeconfig_options,
    add_output_option,
    layer_nmi_settings,
    warn,
)
from nmisim.cli.output import render_data
from nmisim.engine.config import SimulationConfig
from nmisim.engine.http import HttpRequest, RequestResult, json_number
from nmisim.engine.models import Pod
from nmisim.engine.nmiflags import CONFIG_FLAGS
from nmisim.engine.verdict import (
    VERDICT_BYPASS,
    VERDICT_EXEMPT,
    VERDICT_INACTIVE,
    VERDICT_INTERCEPTED,
    PodResult,
)
from nmisim.engine.world import World
from nmisim.sources.files import load_config
from nmisim.sources.nmiconfig import dest_of
from nmisim.sources.nmioptions import add_nmi_options

POD_KINDS: Final = frozenset({"pod", "pods", "po"})
PLACEHOLDER_CLIENT_ID: Final = "<client-id>"


# --------------------------------------------------------------------------------------------- the facts
@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything the printers need, computed from one world and one pod (pure data, no I/O)."""

    pod: Pod
    result: PodResult
    request: RequestResult
    deciders: tuple[str, ...]
    command: tuple[str, ...]
    config_source: str = "NMI's defaults"

    @property
    def key(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.key,
            "result": self.result.to_json(),
            "request": self.request.to_json(),
            "decisions": [d.to_json() for d in self.result.trace],
        }


def client_id_hint(world: World, pod: Pod, result: PodResult) -> str:
    """A client_id worth trying: the pod's first candidate identity, else one on the node's VM."""
    if result.verdict == VERDICT_INTERCEPTED:
        wanted = result.token_request.identity or (result.identities[0] if result.identities else "")
        for ident in world.identities():
            if ident.key == wanted and ident.client_id:
                return ident.client_id
        for ident in world.identities():
            if ident.key in result.identities and ident.client_id:
                return ident.client_id
        return PLACEHOLDER_CLIENT_ID
    vm = world.config.imds.vm_for(pod.node_name)
    for ua in vm.user_assigned:
        if ua.client_id:
            return ua.client_id
    return PLACEHOLDER_CLIENT_ID


def request_command(
    pod: Pod,
    client_id: str,
    *,
    kubeconfig: str | None,
    context: str | None,
    kubectl: bool,
    settings: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """The ``nmisim request`` argv equivalent to this explanation, with a client_id to try; ``settings``
    are the ``--config`` and NMI's flags the explanation was made with (:func:`settings_argv`)."""
    argv = ["kubectl", "nmisim"] if kubectl else ["nmisim"]
    argv += ["request", "--cluster"]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    argv += [*settings, "--pod", f"{pod.namespace}/{pod.name}", "--query", f"client_id={client_id}"]
    return tuple(argv)


def settings_argv(args: argparse.Namespace, *, config: bool = True) -> tuple[str, ...]:
    """``--config`` (unless not ``config``), ``--nmi-values``, ``--nmi-release-namespace`` and NMI's flags
    as given, so that the suggested ``nmisim request`` simulates the same NMI."""
    argv: list[str] = []
    if config and getattr(args, "config", None):
        argv += ["--config", args.config]
    for values in getattr(args, "nmi_values", None) or ():
        argv += ["--nmi-values", values]
    release = getattr(args, "nmi_release_namespace", "default")
    if release and release != "default":
        argv += ["--nmi-release-namespace", release]
    for flag in CONFIG_FLAGS:
        value = getattr(args, dest_of(flag.name), None)
        if value is not None:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            argv.append(f"--{flag.name}={text}")
    return tuple(argv)


def explain(
    world: World,
    pod: Pod,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    kubectl: bool = False,
    config_source: str = "NMI's defaults",
    settings: tuple[str, ...] = (),
) -> Explanation:
    """The explanation of ``pod`` in ``world``: its verdict and the default token request, simulated."""
    result = world.evaluate(pod, trace=True)
    request = world.request(HttpRequest(), pod=pod)
    cid = client_id_hint(world, pod, result)
    return Explanation(
        pod=pod,
        result=result,
        request=request,
        deciders=tuple(d.text for d in result.trace),
        command=request_command(
            pod, cid, kubeconfig=kubeconfig, context=context, kubectl=kubectl, settings=settings
        ),
        config_source=config_source,
    )


# ----------------------------------------------------------------------------------------------- text
class Style:
    """ANSI styling, or none."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("1;31", text)

    def green(self, text: str) -> str:
        return self._wrap("1;32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("1;33", text)

    def cyan(self, text: str) -> str:
        return self._wrap("1;36", text)


def use_color(stream: TextIO, environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything non-empty."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def wait_note(seconds: float, served_by: str | None = "nmi") -> str:
    """``waitSeconds`` in plain words."""
    if not seconds:
        return "0 s (IMDS answers directly)" if served_by == "imds" else "0 s (no wait)"
    n = json_number(seconds)
    if seconds < 5:
        return f"{n} s (NMI retries its pod lookup for {n} s first)"
    return f"{n} s (NMI keeps the caller waiting {n} s first)"


def _status(ex: Explanation) -> int | None:
    return ex.request.status if ex.request.status is not None else ex.result.token_request.status


def headline(ex: Explanation, style: Style | None = None) -> str:
    """One line: ``ns/name: VERDICT — what happens to token requests``."""
    s = style or Style(False)
    r = ex.result
    tok = r.token_request
    word = r.verdict.upper()
    if r.verdict == VERDICT_INACTIVE:
        return f"{ex.key}: {s.dim(word)} — pod is {ex.pod.phase}: NMI ignores it and serves it nothing"
    if r.verdict == VERDICT_BYPASS:
        tail = (
            f"IMDS serves {tok.identity}"
            if tok.status == 200 and tok.identity
            else f"IMDS answers {tok.status}"
        )
        return f"{ex.key}: {s.yellow(word)} — hostNetwork: NMI never sees its IMDS traffic; {tail}"
    if r.verdict == VERDICT_EXEMPT:
        by = list(r.exceptions)
        if r.mic_shortcut:
            by.append("the MIC shortcut")
        via = " and ".join(by)
        if tok.status == 200:
            tail = f"NMI forwards token requests to IMDS, which serves {tok.identity or 'a token'}"
        else:
            tail = f"NMI forwards token requests to IMDS, which refuses them ({tok.status})"
        return f"{ex.key}: {s.green(word)} by {via} — {tail}"
    if tok.status == 200:
        tail = f"NMI serves tokens for {tok.identity}"
        if r.ambiguous:
            tail += f" (picked at random among {len(r.identities)}: {', '.join(r.identities)})"
        return f"{ex.key}: {s.cyan(word)} — {tail}"
    after = f" after {json_number(tok.wait_seconds)} s" if tok.wait_seconds else ""
    why = "no identity" if "NoIdentity" in r.finding_codes else (tok.error or "error").splitlines()[0][:100]
    return f"{ex.key}: {s.red(word)} — NMI denies token requests ({tok.status}{after}): {why}"


def explain_text(ex: Explanation, style: Style | None = None) -> str:
    s = style or Style(False)
    req = ex.request
    lines = [s.bold(headline(ex, s)), ""]
    d = HttpRequest()
    headers = ", ".join(f"{k}: {v}" for k, v in d.headers)
    lines.append(s.bold("Default token request") + f" {d.method} {d.url()} ({headers})")
    rows = [
        ("HTTP status", str(req.status) if req.status is not None else "-"),
        ("served by", f"{req.served_by or '-'} (route {req.route})"),
        ("identity", req.identity or "-"),
        ("waitSeconds", wait_note(req.wait_seconds, req.served_by)),
    ]
    if req.error:
        rows.append(("error", " ".join(req.error.split())))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    tok = ex.result.token_request
    if ex.result.verdict != VERDICT_INACTIVE and (tok.status, tok.identity) != (req.status, req.identity):
        lines.append(
            s.dim(
                f"  (the verdict assumes NMI finds the pod by its IP: status {tok.status}, identity "
                f"{tok.identity or '-'})"
            )
        )
    lines += ["", s.bold("Why")]
    n = len(req.explanation)
    lines += [f"  {str(i).rjust(len(str(n)))}. {step}" for i, step in enumerate(req.explanation, 1)]
    lines += ["", s.bold("Decided by")]
    lines += [f"  - {d}" for d in ex.deciders] or ["  -"]
    lines.append(s.dim(f"  (configuration: {ex.config_source})"))
    findings = ex.result.findings
    lines += ["", s.bold(f"Findings ({len(findings)})")]
    if findings:
        lines += [f"  - {s.yellow(f.code)}: {f.message}" for f in findings]
    else:
        lines.append("  none")
    lines += ["", s.bold("Try other paths and parameters"), "  " + shlex.join(ex.command)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ CLI
def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain, for a person, what NMI does with one live pod's IMDS token requests",
        description="Load the live cluster (current kubeconfig), run the default token request of one pod "
        "through the simulated NMI, and print the verdict, the HTTP outcome, the chain of reasons, what "
        "decided, the findings, and the 'nmisim request' command to try other requests.",
    )
    p.add_argument("pod", metavar="pod/NAME", help="the pod (pod/NAME, pods/NAME or NAME)")
    p.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="the pod's namespace (default: the kubeconfig context's namespace, else default)",
    )
    add_kubeconfig_options(p)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="SimulationConfig YAML to use instead of the cluster's SimulationConfig/default",
    )
    add_nmi_options(p)  # NMI's flags and --nmi-values, as evaluate and request take them
    add_output_option(p)
    p.set_defaults(func=run)


def parse_pod_arg(text: str) -> str:
    """``pod/NAME``, ``pods/NAME``, ``po/NAME`` or ``NAME`` -> NAME; other kinds are a usage error."""
    kind, sep, name = text.partition("/")
    if not sep:
        name = kind
    elif kind.lower() not in POD_KINDS:
        raise UsageError(f"{text}: explain works on pods (pod/NAME), not {kind}")
    if not name or "/" in name:
        raise UsageError(f"{text}: expected pod/NAME or NAME")
    return name


def _invoked_as_kubectl_plugin() -> bool:
    return Path(sys.argv[0]).name.startswith("kubectl-")


def run(args: argparse.Namespace) -> int:
    from nmisim.sources.cluster import LiveLoaded, LiveReader, PodNotFound, Target, context_namespace  # noqa: PLC0415

    name = parse_pod_arg(args.pod)
    file_config = load_config(args.config, sys.stdin) if args.config else None
    target = Target(kubeconfig=args.kubeconfig, context=args.context)
    try:
        namespace = args.namespace or context_namespace(target)
        with LiveReader(target, warn) as reader:
            raw = reader.pod(namespace, name)
            loaded = reader.load(namespace, pods=False, into=LiveLoaded())
            node = (raw.get("spec") or {}).get("nodeName") if isinstance(raw.get("spec"), dict) else None
            if isinstance(node, str) and node:
                # NMI finds the caller by IP among the Pending/Running pods on its node
                for other in reader.pods(None, f"spec.nodeName={node}"):
                    reader.add(loaded, other, "Pod")
            reader.add(loaded, raw, "Pod")
    except PodNotFound as exc:
        print(f"nmisim: error: {exc}", file=sys.stderr)
        return 2
    config: SimulationConfig | None = file_config or loaded.config
    source = (
        f"--config {args.config}"
        if file_config
        else ("SimulationConfig/default from the cluster" if loaded.config else "NMI's defaults")
    )
    # NMI's settings layered as evaluate and request layer them (a bad --nmi-values is a LoadError: exit 2)
    config, chart_objects = layer_nmi_settings(config, loaded, args, config_source=source)
    nmi_given = settings_argv(args, config=False)
    if nmi_given:
        source += " with " + " ".join(nmi_given)
    world = World(config)
    for model in [*chart_objects, *loaded.objects]:
        world.upsert(model)
    pod = world.get_pod(namespace, name)
    if pod is None:  # the parsers rejected it (a warning said why)
        raise UsageError(f"pod {namespace}/{name} cannot be read")
    ex = explain(
        world,
        pod,
        kubeconfig=args.kubeconfig,
        context=args.context,
        kubectl=_invoked_as_kubectl_plugin(),
        config_source=source,
        settings=settings_argv(args),
    )
    if args.output == "table":
        sys.stdout.write(explain_text(ex, Style(use_color(sys.stdout))))
    else:
        sys.stdout.write(render_data(ex.to_json(), args.output))
    return 0
