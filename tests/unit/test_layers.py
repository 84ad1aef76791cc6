"""The import-linter ``layers`` contracts in pyproject.toml bite, and the engine's import graph, counting
imports under ``TYPE_CHECKING``, has no cycle.

The contracts are read from pyproject.toml and run by the virtualenv's own ``lint-imports`` over a copy of
``operator/nmisim``: unmodified, every contract is kept; with one upward (or sideways) import written into
a module, the contract that forbids it is broken.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import nmisim

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(nmisim.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ENGINE = "the engine's layers"
CONTROLLER = "the controller's layers"


def layers_contracts() -> list[dict[str, Any]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = data["tool"]["importlinter"]["contracts"]
    return [c for c in contracts if c["type"] == "layers"]


def write_config(path: Path) -> Path:
    """The ``layers`` contracts of pyproject.toml alone, as a TOML file (JSON strings, lists and booleans
    are TOML too)."""
    lines = ["[tool.importlinter]", 'root_package = "nmisim"', ""]
    for contract in layers_contracts():
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "nmisim", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def lint(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "layers.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def outcome(out: str, name: str) -> str:
    """``KEPT`` or ``BROKEN`` for the contract called ``name`` in lint-imports' summary."""
    for line in out.splitlines():
        if line.startswith(name + " "):
            return line.rsplit(" ", 1)[1]
    raise AssertionError(f"contract {name!r} not in the output:\n{out}")


def test_pyproject_has_both_layers_contracts() -> None:
    by_name = {c["name"]: c for c in layers_contracts()}
    assert by_name[ENGINE]["containers"] == ["nmisim.engine"]
    assert by_name[ENGINE]["exhaustive"] is True
    assert by_name[CONTROLLER]["containers"] == ["nmisim.controller"]


def test_the_unmodified_package_keeps_every_layers_contract(tmp_path: Path) -> None:
    res = lint(copy_package(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert outcome(res.stdout, ENGINE) == "KEPT"
    assert outcome(res.stdout, CONTROLLER) == "KEPT"


INJECTED = [
    # an upward import: the bottom of the engine reaching for the world
    ("engine/models.py", "import nmisim.engine.world\n", ENGINE),
    # the old type-level cycle: TYPE_CHECKING imports count
    (
        "engine/verdict.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nmisim.engine.trace\n",
        ENGINE,
    ),
    # a sideways import between independent siblings
    ("engine/objects.py", "import nmisim.engine.podfindings\n", ENGINE),
    # verdict.py needing the handlers again (it needs only http's json_number)
    ("engine/verdict.py", "import nmisim.engine.routes\n", ENGINE),
    # the controller's store reaching up to its intake
    ("controller/store.py", "import nmisim.controller.intake\n", CONTROLLER),
]


@pytest.mark.parametrize(("module", "line", "contract"), INJECTED)
def test_an_injected_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    copy_package(tmp_path)
    target = tmp_path / "nmisim" / module
    target.write_text(target.read_text() + "\n" + line)
    res = lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert outcome(res.stdout, contract) == "BROKEN"
    other = CONTROLLER if contract == ENGINE else ENGINE
    assert outcome(res.stdout, other) == "KEPT"


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from the source (every import statement, including
    those under ``if TYPE_CHECKING:`` and inside functions)."""
    prefix = f"{package}."
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == package:
                    deps.update(a.name for a in node.names)
                elif node.module.startswith(prefix):
                    deps.add(node.module[len(prefix) :].split(".")[0])
            elif isinstance(node, ast.Import):
                deps.update(
                    a.name[len(prefix) :].split(".")[0] for a in node.names if a.name.startswith(prefix)
                )
        graph[path.stem] = deps - {path.stem}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_type_checking_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import y\n"
    )
    (pkg / "c.py").write_text("from pkg import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_engine_import_graph_has_no_cycle_even_at_type_level() -> None:
    graph = import_graph(PACKAGE / "engine", "nmisim.engine")
    assert {"world", "trace", "verdict", "podfindings", "routes", "http"} <= set(graph)
    # the scan sees the engine's imports: the world derives findings, traces and answers
    assert {"podfindings", "trace", "routes", "verdict"} <= graph["world"]
    assert cycles(graph) == []
