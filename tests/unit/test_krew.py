"""nmisim's krew plugin (plugins/krew/, docs/install.md): the manifest matches the archive that
hack/krew_plugin.py builds; the launcher runs the installed nmisim CLI or says in one line that it is missing
(exit 2); and a real krew installs the plugin from the manifest and the archive, after which kubectl's own
plugin discovery runs it as ``kubectl nmisim``. No cluster.

krew comes from hack/krew.sh (built from its Go module into ~/.cache/nmisim/tools the first time, then
cached). Without Go those tests skip, except where NMISIM_REAL_NODE=1 or CI is set: there a missing krew
fails them (as tests/unit/test_chart.py does for helm).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from tests.support import kubectl_path

from nmisim import __version__

ROOT = Path(__file__).resolve().parents[2]
KREW_SH = ROOT / "hack" / "krew.sh"
MANIFEST = ROOT / "plugins" / "krew" / "nmisim.yaml"
LAUNCHER = ROOT / "plugins" / "krew" / "kubectl-nmisim"
FIXTURES = ROOT / "tests" / "fixtures"
INPUT = [FIXTURES / "pods.yaml", FIXTURES / "identities.yaml", FIXTURES / "default-exceptions.yaml"]
#: where no nmisim is (the virtualenv's bin, which has one, is never on these PATHs)
SYSTEM_PATH = "/usr/bin:/bin"

# The first krew test builds krew (under a minute on 2 cores) unless it is in the cache already.
pytestmark = pytest.mark.timeout(900)


def krew_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("krew_plugin", ROOT / "hack" / "krew_plugin.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return doc


@pytest.fixture
def nmisim_bin(tmp_path: Path) -> Path:
    """A directory holding ``nmisim``: this tree's CLI, as `pipx install .` would put it on PATH."""
    d = tmp_path / "nmisim-bin"
    d.mkdir()
    script = d / "nmisim"
    script.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH='{ROOT / 'operator'}' exec '{sys.executable}' "
        "-c 'import sys; from nmisim.cli.main import main; sys.exit(main())' \"$@\"\n"
    )
    script.chmod(0o755)
    return d


def run(cmd: list[str | Path], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL, **kw,
    )  # fmt: skip


# --- the manifest and the archive ------------------------------------------------------------------------


def test_the_manifest_is_a_krew_plugin_for_this_version() -> None:
    m = manifest()
    assert m["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert m["kind"] == "Plugin"
    assert m["metadata"]["name"] == MANIFEST.stem == "nmisim"  # krew: `kubectl nmisim`, kubectl-nmisim
    spec = m["spec"]
    assert spec["version"] == f"v{__version__}"
    assert spec["shortDescription"] and "\n" not in spec["shortDescription"]
    assert "pipx install" in spec["caveats"]
    (platform,) = spec["platforms"]
    assert platform["bin"] == "kubectl-nmisim"
    assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
    assert platform["uri"].endswith(f"/kubectl-nmisim-v{__version__}.zip")
    (expr,) = platform["selector"]["matchExpressions"]
    assert expr == {"key": "os", "operator": "In", "values": ["linux", "darwin"]}


def test_the_archive_is_the_launcher_alone_and_reproducible(tmp_path: Path) -> None:
    kp = krew_plugin()
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    sha_a, sha_b = kp.build_archive(a), kp.build_archive(b)
    assert a.read_bytes() == b.read_bytes() and sha_a == sha_b == hashlib.sha256(a.read_bytes()).hexdigest()
    with zipfile.ZipFile(a) as zf:
        (info,) = zf.infolist()
        assert info.filename == "kubectl-nmisim"
        assert info.compress_type == zipfile.ZIP_STORED
        assert (info.external_attr >> 16) & 0o777 == 0o755
        assert zf.read(info) == LAUNCHER.read_bytes()


def test_the_manifest_holds_the_archives_sha256(tmp_path: Path) -> None:
    sha = krew_plugin().build_archive(tmp_path / "x.zip")
    assert manifest()["spec"]["platforms"][0]["sha256"] == sha, (
        "run make krew-archive and commit the manifest"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "krew_plugin.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_check_names_what_is_stale() -> None:
    kp = krew_plugin()
    text = MANIFEST.read_text()
    sha = manifest()["spec"]["platforms"][0]["sha256"]
    assert kp.stale(text, __version__, sha) == []
    other = kp.stale(text, __version__, "f" * 64)
    assert len(other) == 1 and "sha256" in other[0]
    bumped = kp.stale(text, "9.9.9", sha)
    assert any("version" in p for p in bumped) and any("uri" in p for p in bumped)
    rewritten = kp.manifest_text(text, "9.9.9", "https://h/v9.9.9/kubectl-nmisim-v9.9.9.zip", "e" * 64)
    assert kp.stale(rewritten, "9.9.9", "e" * 64) == []
    assert rewritten.count("\n") == text.count("\n")  # the comments stay


# --- the launcher -----------------------------------------------------------------------------------------


def test_the_launcher_without_nmisim_says_so_in_one_line() -> None:
    proc = run([LAUNCHER, "--version"], {"PATH": SYSTEM_PATH})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("kubectl-nmisim: error: the nmisim CLI is not installed")
    assert "pipx install" in proc.stderr


def test_the_launcher_runs_nmisim_with_its_arguments_and_exit_code(nmisim_bin: Path) -> None:
    env = {"PATH": f"{nmisim_bin}:{SYSTEM_PATH}"}
    version = run([LAUNCHER, "--version"], env)
    assert (version.returncode, version.stdout) == (0, f"nmisim {__version__}\n")
    missing = run([LAUNCHER, "evaluate", "-f", "no-such.yaml"], env)
    assert missing.returncode == 2
    assert missing.stderr == "nmisim: error: no-such.yaml: no such file or directory\n"
    # NMISIM_BIN: another nmisim than PATH's (here, none on PATH)
    chosen = run([LAUNCHER, "--version"], {"PATH": SYSTEM_PATH, "NMISIM_BIN": str(nmisim_bin / "nmisim")})
    assert (chosen.returncode, chosen.stdout) == (0, f"nmisim {__version__}\n")


# --- a real krew ------------------------------------------------------------------------------------------


def _must_have_krew() -> bool:
    return os.environ.get("NMISIM_REAL_NODE") == "1" or bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def krew() -> Path:
    path = Path(
        subprocess.run([str(KREW_SH), "--print"], capture_output=True, text=True, check=True).stdout.strip()
    )
    proc = subprocess.run([str(KREW_SH)], capture_output=True, text=True, check=False, timeout=880)
    if proc.returncode != 0 or not os.access(path, os.X_OK):
        reason = f"hack/krew.sh could not build krew (Go missing?):\n{proc.stderr[-3000:]}"
        if _must_have_krew():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def krew_env(krew: Path, nmisim_bin: Path, tmp_path: Path) -> dict[str, str]:
    """PATH as a krew user's: `kubectl-krew`, $KREW_ROOT/bin, the installed nmisim; a fresh KREW_ROOT."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "kubectl-krew").symlink_to(krew)
    root = tmp_path / "krew-root"
    # `krew update` would clone krew-index from GitHub; uninstall only needs a git clone there
    subprocess.run(["git", "init", "-q", str(root / "index" / "default")], check=True, timeout=30)
    return {
        "PATH": f"{tools}:{root / 'bin'}:{nmisim_bin}:{SYSTEM_PATH}",
        "HOME": str(tmp_path / "home"),
        "KREW_ROOT": str(root),
        "KREW_NO_UPGRADE_CHECK": "1",  # krew would ask GitHub for its latest release
    }


def test_krew_installs_the_plugin_and_kubectl_runs_it(
    krew_env: dict[str, str], nmisim_bin: Path, tmp_path: Path
) -> None:
    archive = tmp_path / f"kubectl-nmisim-v{__version__}.zip"
    krew_plugin().build_archive(archive)
    kubectl = kubectl_path()
    root = Path(krew_env["KREW_ROOT"])

    installed = run([kubectl, "krew", "install", f"--manifest={MANIFEST}", f"--archive={archive}"], krew_env)
    assert installed.returncode == 0, installed.stderr
    assert "Installed plugin: nmisim" in installed.stderr
    assert (root / "receipts" / "nmisim.yaml").exists()
    link = root / "bin" / "kubectl-nmisim"
    assert link.resolve() == root / "store" / "nmisim" / f"v{__version__}" / "kubectl-nmisim"

    version = run([link, "--version"], krew_env)
    assert (version.returncode, version.stdout) == (0, f"nmisim {__version__}\n"), version.stderr

    plugins = run([kubectl, "plugin", "list"], krew_env)
    assert str(link) in plugins.stdout.splitlines(), plugins.stdout  # the one kubectl finds

    files = [a for f in INPUT for a in ("-f", str(f))]
    via_kubectl = run([kubectl, "nmisim", "evaluate", *files, "-o", "json"], krew_env)
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    direct = run([nmisim_bin / "nmisim", "evaluate", *files, "-o", "json"], krew_env)
    assert via_kubectl.stdout == direct.stdout
    doc = json.loads(via_kubectl.stdout)
    verdicts = {f"{r['namespace']}/{r['name']}": r["verdict"] for r in doc["results"]}
    assert verdicts["default/mic-7d9c6b5f4-abcde"] == "exempt"  # MIC's own pod (spec §8: the MIC shortcut)
    assert verdicts["kube-system/omsagent-rs-5f8d7-xyz12"] == "exempt"  # aks-addon-exception, own namespace
    assert verdicts["monitoring/node-exporter-abcde"] == "bypass"  # hostNetwork
    assert verdicts["shop/web-6c9f8d7b5-q2w3e"] == "intercepted"

    bad_input = FIXTURES / "crd-invalid" / "azureidentity-type-string.yaml"
    bad = run([kubectl, "nmisim", "evaluate", "-f", str(bad_input)], krew_env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("nmisim: error: ") and bad.stderr.count("\n") == 1

    removed = run([kubectl, "krew", "uninstall", "nmisim"], krew_env)
    assert removed.returncode == 0, removed.stderr
    assert not link.exists() and not link.is_symlink()


def test_krew_refuses_an_archive_that_is_not_the_manifests(krew_env: dict[str, str], tmp_path: Path) -> None:
    """The sha256 is what makes the manifest safe to publish: krew checks it before it unpacks anything."""
    good = tmp_path / "good.zip"
    krew_plugin().build_archive(good)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(other, "w") as dst:
        (info,) = src.infolist()
        dst.writestr(info, src.read(info) + b"# changed\n")
    proc = run([kubectl_path(), "krew", "install", f"--manifest={MANIFEST}", f"--archive={other}"], krew_env)
    assert proc.returncode != 0
    assert "checksum does not match" in proc.stderr, proc.stderr
    assert not (Path(krew_env["KREW_ROOT"]) / "bin" / "kubectl-nmisim").exists()


def test_the_launcher_in_krew_without_nmisim_fails_in_one_line(
    krew_env: dict[str, str], tmp_path: Path
) -> None:
    archive = tmp_path / "a.zip"
    krew_plugin().build_archive(archive)
    kubectl = kubectl_path()
    installed = run([kubectl, "krew", "install", f"--manifest={MANIFEST}", f"--archive={archive}"], krew_env)
    assert installed.returncode == 0, installed.stderr
    path = [p for p in krew_env["PATH"].split(":") if not p.endswith("nmisim-bin")]
    no_nmisim = {**krew_env, "PATH": ":".join(path)}
    proc = run([kubectl, "nmisim", "evaluate", "-f", str(INPUT[0])], no_nmisim)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kubectl-nmisim: error: the nmisim CLI is not installed")
    assert proc.stderr.count("\n") == 1
