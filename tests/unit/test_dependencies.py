"""What nmisim needs is declared, and pinned: every package imported directly by operator/nmisim, hack/ and
tests/ is a requirement in pyproject.toml (not something another package happens to bring), and
constraints.txt pins every package those requirements reach, at versions they accept, as this virtualenv
has them (hack/constraints.py writes it; the Makefile installs with it)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    ROOT / "operator" / "nmisim": [ROOT / "operator"],
    ROOT / "hack": [ROOT / "hack"],
    # `tests.support`; the unit tests' `factories`; the benchmark's `bench` (hack/bench)
    ROOT / "tests": [ROOT, ROOT / "tests" / "unit", ROOT / "hack"],
}
#: code that runs only in the clients image (hack/images/clients/): its packages are what hack/image.sh
#: installs there, pinned in that script, not this project's dependencies
CLIENTS_IMAGE = ROOT / "hack" / "images" / "clients"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in PYPROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def imported(source: Path) -> set[str]:
    """Top-level names of the absolute imports in every .py file under ``source``."""
    names: set[str] = set()
    for path in source.rglob("*.py"):
        if path.is_relative_to(CLIENTS_IMAGE) and source != CLIENTS_IMAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def local(name: str, roots: list[Path]) -> bool:
    return any((r / name).is_dir() or (r / f"{name}.py").exists() for r in roots)


@pytest.mark.parametrize("source", sorted(SOURCES), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_imported_package_is_declared(source: Path) -> None:
    providers = metadata.packages_distributions()
    want = declared()
    undeclared = {}
    for name in sorted(imported(source)):
        if name in sys.stdlib_module_names or local(name, SOURCES[source]) or name == "nmisim":
            continue
        dists = {canonicalize_name(d) for d in providers.get(name, [])}
        assert dists, f"{name} is imported under {source.relative_to(ROOT)} but no package provides it"
        if not dists & set(want):
            undeclared[name] = sorted(dists)
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_the_clients_image_installs_what_its_code_imports() -> None:
    script = (ROOT / "hack" / "image.sh").read_text()
    pinned = re.search(r"^AZURE_IDENTITY_VERSION=(\S+)", script, re.M)
    assert pinned and re.search(r'"azure-identity==\$AZURE_IDENTITY_VERSION"', script)
    third_party = {n for n in imported(CLIENTS_IMAGE) if n not in sys.stdlib_module_names}
    assert third_party == {"azure"}  # azure.identity, from the pinned azure-identity wheel


def test_the_imports_are_seen() -> None:
    """The scan itself: what the operator imports directly, only through kopf and kubernetes before."""
    assert {"aiohttp", "urllib3", "kopf", "kubernetes"} <= imported(ROOT / "operator" / "nmisim")
    assert {"matplotlib", "rich"} <= imported(ROOT / "hack")


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    out: dict[str, str] = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version
    return out


def test_every_requirement_is_pinned_within_its_range() -> None:
    pinned = pins()
    for name, req in declared().items():
        if name == canonicalize_name(PYPROJECT["name"]):
            continue
        assert name in pinned, f"{name} is required but not in constraints.txt (run hack/constraints.py)"
        assert req.specifier.contains(Version(pinned[name]), prereleases=True), (req, pinned[name])


def test_matplotlib_only_for_the_benchmark() -> None:
    deps = PYPROJECT["optional-dependencies"]
    assert any(Requirement(r).name == "matplotlib" for r in deps["bench"])
    assert not any(Requirement(r).name == "matplotlib" for r in PYPROJECT["dependencies"] + deps["dev"])


def test_constraints_are_what_this_virtualenv_has() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "constraints.py"), "--check"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
