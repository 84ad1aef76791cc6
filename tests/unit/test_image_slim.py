"""The operator image is slimmed without removing anything nmisim runs: what operator/Dockerfile deletes
from the venv's site-packages and what hack/image.sh's slim_rootfs deletes from the base (docs/operations.md,
"What is in the operator image") is neither imported by operator/nmisim nor reached by the kubernetes
client it imports, and the node agent's iptables stays."""

from __future__ import annotations

import ast
import re
import shlex
from importlib import util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "operator" / "Dockerfile").read_text()
IMAGE_SH = (ROOT / "hack" / "image.sh").read_text()


def modules_imported(source: Path) -> set[str]:
    """Dotted names of the absolute imports (and the names imported from them) in every .py under source."""
    names: set[str] = set()
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def venv_removals() -> list[str]:
    """The paths the build stage removes inside site-packages, as dotted module names."""
    run = re.search(r"cd /opt/venv/lib/python3\.11/site-packages \\\n && rm -rf ([^\\\n]+)", DOCKERFILE)
    assert run, "operator/Dockerfile no longer removes anything from site-packages: update this test"
    return [p.replace("/", ".") for p in shlex.split(run.group(1))]


def slim_removals() -> list[str]:
    body = re.search(r"^slim_rootfs\(\) \{\n(.*?)^\}", IMAGE_SH, re.M | re.S)
    assert body, "hack/image.sh has no slim_rootfs"
    return re.findall(r'"\$(?:r|py)"(\S+)', body.group(1))


def within(module: str, removed: str) -> bool:
    return module == removed or module.startswith(removed + ".")


def test_the_venv_keeps_every_module_nmisim_imports() -> None:
    removed = venv_removals()
    assert "kubernetes.aio" in removed  # the removal this test guards (67 MiB)
    used = modules_imported(ROOT / "operator" / "nmisim")
    assert {"kubernetes.client", "kubernetes.config"} <= used
    clashes = sorted((m, r) for m in used for r in removed if within(m, r))
    assert not clashes, f"operator/Dockerfile removes modules nmisim imports: {clashes}"


def test_the_kubernetes_client_does_not_import_its_asyncio_client() -> None:
    """`from kubernetes import client` runs kubernetes/__init__.py: nothing there may need kubernetes.aio."""
    spec = util.find_spec("kubernetes")
    assert spec and spec.origin
    package = Path(spec.origin).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "aio"):
            continue
        # the file's package, e.g. kubernetes.client
        here = list(path.relative_to(package.parent).parent.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] if node.level else [])
                full = ".".join(p for p in (base, node.module or "") if p)
                mods = [full] + [f"{full}.{a.name}" for a in node.names]
            else:
                continue
            if any(within(m, "kubernetes.aio") for m in mods):
                offenders.append(str(path.relative_to(package)))
    assert not offenders, f"the kubernetes package imports kubernetes.aio from {offenders}"


def test_the_base_keeps_what_nmisim_and_the_agent_use() -> None:
    removed = slim_removals()
    assert "/usr/share/locale/*" in removed and "/lib2to3" in removed
    # python3.11's standard library: no removed directory is a module nmisim imports
    stdlib_removed = [p.strip("/") for p in removed if p.count("/") == 1]
    top = {m.split(".")[0] for m in modules_imported(ROOT / "operator" / "nmisim")}
    assert not top & set(stdlib_removed)
    # the node agent: iptables installed, and none of its binaries, libraries or xtables modules removed
    base = re.search(r"^BASE_PACKAGES=(\S+)", IMAGE_SH, re.M)
    assert base and "iptables" in base.group(1).split(",")
    kept = ("iptables", "xtables", "/usr/sbin", "/usr/lib/x86_64-linux-gnu/lib", "/usr/lib/python3.11/*")
    assert not [p for p in removed if any(k in p for k in kept) or p in ("/usr/bin/*", "/usr/lib/python3.11")]
    # only the base is slimmed: the clients' root keeps its key and content
    assert 'build_base() { rootfs_image base nmisim-base:dev "$BASE_PACKAGES" slim; }' in IMAGE_SH
    assert 'rootfs_image clientroot nmisim-clientroot:dev "$CLIENTS_PACKAGES"\n' in IMAGE_SH
