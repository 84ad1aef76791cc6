"""``nmisim`` / ``kubectl-nmisim`` entry point.

Subcommands live in their own modules, each exposing ``register(subparsers)`` which adds its parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning the exit code). To add a
subcommand, append its module to :data:`SUBCOMMAND_MODULES`; a module that cannot be imported (e.g. an
optional dependency is missing) is skipped. The two edges place their commands the same way: the operator's
``run`` is the controller's own (``nmisim.controller.command``) and the node agent's ``serve`` the agent's
(``nmisim.agent.command``), named here, never imported by the CLI package: the offline commands depend on
neither (import-linter contracts, ``make lint``).

Exit codes (product.md §4): 0 success, 2 bad input (one line on stderr, no traceback), 3 a gate failed
(``--fail-on``), 1 other failures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nmisim import __version__
from nmisim.cli.common import UsageError, cluster_failure
from nmisim.engine.config import NMI_VERSION
from nmisim.sources.files import ClusterError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
#: a gate failed (``evaluate --fail-on``/``--fail-on-verdict``, ``diff``): Polaris exits 3 on danger too
EXIT_GATE = 3

#: modules that provide ``register(subparsers)``, in help order
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "nmisim.controller.command",
    "nmisim.cli.evaluate",
    "nmisim.cli.request",
    "nmisim.cli.explain",
    "nmisim.cli.whocan",
    "nmisim.cli.diff",
    "nmisim.cli.migrate",
    "nmisim.agent.command",
    "nmisim.cli.entra",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, no usage dump: keeps exit 2 and the "nmisim: error:" prefix
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nmisim",
        description=f"Simulate aad-pod-identity's NMI (v{NMI_VERSION}): what happens to every pod's IMDS "
        "requests.",
    )
    parser.add_argument("--version", action="version", version=f"nmisim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not (yet) provided
            raise
        register: Callable[[Any], None] = module.register
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return func(args)
    except ClusterError as exc:  # the one place a cluster that cannot be read becomes exit 1
        return cluster_failure(exc)
    except (UsageError, ValueError) as exc:
        print(f"nmisim: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"nmisim: failed: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
