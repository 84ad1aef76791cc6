"""The pre-commit hook of this repository (.pre-commit-hooks.yaml, docs/install.md#pre-commit), run by the
real pre-commit as a user's repository runs it: a `.pre-commit-config.yaml` with ``repo:`` this repository's
working tree (committed into a scratch repository, so uncommitted changes are what is tested) and ``rev:``
that commit. pre-commit installs nmisim with pip into an environment of its own, as for any user, then the
hook must pass on good manifests and fail on a bad one. No cluster.

pre-commit comes with `make install` (the dev extra); without it the pre-commit tests skip, except where
NMISIM_REAL_NODE=1 or CI is set. Its environments are cached under ~/.cache/nmisim/pre-commit
(PRE_COMMIT_HOME): the first run installs nmisim's dependencies (about a minute), later runs reuse them
until the tree changes (then a new environment, and `pre-commit gc` drops the old one).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.support import kubectl_path

from nmisim import __version__
from nmisim.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / ".pre-commit-hooks.yaml"
FIXTURES = ROOT / "tests" / "fixtures"
GOOD = [FIXTURES / "pods.yaml", FIXTURES / "identities.yaml", FIXTURES / "default-exceptions.yaml"]
BAD = FIXTURES / "crd-invalid" / "azureidentity-type-string.yaml"
#: ~/.cache/nmisim/pre-commit, as hack/helm.sh and hack/krew.sh place their tools
CACHE = (
    Path(
        os.environ.get("NMISIM_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmisim"
    )
    / "pre-commit"
)
GIT_ID = [
    "-c",
    "user.name=nmisim tests",
    "-c",
    "user.email=tests@nmisim.invalid",
    "-c",
    "commit.gpgsign=false",
]

# The first run installs nmisim and its dependencies into pre-commit's environment.
pytestmark = pytest.mark.timeout(900)


def hook() -> dict[str, object]:
    hooks = yaml.safe_load(HOOKS.read_text())
    (only,) = hooks
    assert isinstance(only, dict)
    return only


# --- the hook's definition and the CLI it calls (no pre-commit needed) -----------------------------------


def test_the_hook_definition() -> None:
    h = hook()
    assert h["id"] == "nmisim-evaluate"
    assert h["language"] == "python"  # pre-commit pip-installs this repository: pyproject's scripts
    assert h["entry"] == "nmisim evaluate"
    assert h["pass_filenames"] is True
    assert h["require_serial"] is True  # one process: pods and bindings in different files meet
    files, exclude = re.compile(str(h["files"])), re.compile(str(h["exclude"]))
    for name in ("a.yaml", "dir/b.yml", "c.json"):
        assert files.search(name) and not exclude.search(name), name
    for name in ("README.md", "x.yaml.txt", "Makefile"):
        assert not files.search(name), name
    assert exclude.search(".pre-commit-config.yaml") and exclude.search(".pre-commit-hooks.yaml")


def test_evaluate_takes_files_as_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """pre-commit appends the file names: ``nmisim evaluate a.yaml b.yaml`` reads them as ``-f`` would."""
    assert main(["evaluate", "-o", "json", *map(str, GOOD)]) == 0
    positional = capsys.readouterr().out
    flags = [a for f in GOOD for a in ("-f", str(f))]
    assert main(["evaluate", "-o", "json", *flags]) == 0
    assert capsys.readouterr().out == positional
    # mixed: -f first, then the positional ones, all in one world (the binding meets its pod)
    assert main(["evaluate", "-o", "json", "-f", str(GOOD[0]), *map(str, GOOD[1:])]) == 0
    assert capsys.readouterr().out == positional
    assert '"verdict": "intercepted"' in positional
    assert main(["evaluate", str(GOOD[0]), str(BAD)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmisim: error: ") and "spec.type" in err and err.count("\n") == 1


# --- the real pre-commit -----------------------------------------------------------------------------------


def _must_have_pre_commit() -> bool:
    return os.environ.get("NMISIM_REAL_NODE") == "1" or bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def pre_commit() -> str:
    beside = Path(sys.executable).parent / "pre-commit"
    found = str(beside) if beside.exists() else shutil.which("pre-commit")
    if found is None:
        why = "pre-commit is not installed (make install: it is in pyproject's dev extra)"
        if _must_have_pre_commit():
            pytest.fail(why)
        pytest.skip(why)
    return found


def git(*args: str | Path, cwd: Path | None = None, **kw: str) -> str:
    env = {**os.environ, **kw}
    proc = subprocess.run(
        ["git", *GIT_ID, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def hook_repo() -> Iterator[tuple[Path, str]]:
    """This working tree (tracked and untracked files, .gitignore honoured) as one commit of a scratch
    repository at a fixed place in the cache: (the repository, the commit). The same tree is the same
    commit, so pre-commit reuses its environment. Locked: two test runs at once share it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    repo = CACHE / "hook-repo"
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repo / ".git").exists():
            git("init", "-q", "-b", "main", repo)
        gitdir: list[str | Path] = ["--git-dir", repo / ".git", "--work-tree", ROOT]
        git(*gitdir, "add", "-A", ".")
        tree = git(*gitdir, "write-tree")
        # no parent, fixed dates: the same tree is the same commit, from any worktree or run
        when = "1970-01-01T00:00:00+0000"
        rev = git(
            *gitdir, "commit-tree", tree, "-m", "nmisim tree", GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when
        )
        git(*gitdir, "update-ref", "refs/heads/main", rev)  # a branch tip: pre-commit fetches it shallow
        yield repo, rev


@pytest.fixture
def user_repo(hook_repo: tuple[Path, str], tmp_path: Path) -> Path:
    """A user's repository: manifests and a .pre-commit-config.yaml naming the hook at that commit."""
    repo, rev = hook_repo
    user = tmp_path / "user"
    git("init", "-q", user)
    (user / "manifests").mkdir()
    for f in [*GOOD, BAD]:
        shutil.copy(f, user / "manifests" / f.name)
    (user / "README.md").write_text("not a manifest\n")
    config = {"repos": [{"repo": str(repo), "rev": rev, "hooks": [{"id": "nmisim-evaluate"}]}]}
    (user / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    git("add", "-A", cwd=user)
    return user


def run_hook(pre_commit: str, user: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(CACHE / "home"), "PRE_COMMIT_COLOR": "never"}
    env.pop("PYTHONPATH", None)  # the hook's nmisim is the one pre-commit installed, not this tree's path
    return subprocess.run(
        [pre_commit, "run", "nmisim-evaluate", "--verbose", "--files", *files],
        cwd=user, env=env, capture_output=True, text=True, timeout=850, check=False,
    )  # fmt: skip


def test_the_hook_passes_on_good_manifests(pre_commit: str, user_repo: Path) -> None:
    proc = run_hook(pre_commit, user_repo, *(f"manifests/{f.name}" for f in GOOD), "README.md")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "nmisim evaluate" in out and "Passed" in out
    # nmisim's table, from the nmisim pre-commit installed: the verdicts of these files together
    assert "7 pods: 3 intercepted, 2 exempt, 1 bypass, 1 inactive" in out, out


def test_the_hook_fails_on_a_bad_manifest(pre_commit: str, user_repo: Path) -> None:
    proc = run_hook(pre_commit, user_repo, f"manifests/{GOOD[0].name}", f"manifests/{BAD.name}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Failed" in out and "exit code: 2" in out, out
    why = "document 1: spec.type: expected an integer, got string"
    assert f"nmisim: error: manifests/{BAD.name}:3: {why}" in out, out


def test_the_hook_skips_what_is_not_yaml_or_json(pre_commit: str, user_repo: Path) -> None:
    proc = run_hook(pre_commit, user_repo, "README.md", ".pre-commit-config.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "(no files to check)Skipped" in out, out


def test_gc_keeps_the_current_environment(pre_commit: str, user_repo: Path) -> None:
    """`pre-commit gc` while this config exists (environments of earlier trees go): this one stays."""
    env = {**os.environ, "PRE_COMMIT_HOME": str(CACHE / "home")}
    proc = subprocess.run(
        [pre_commit, "gc"], cwd=user_repo, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    again = run_hook(pre_commit, user_repo, f"manifests/{GOOD[0].name}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing environment" not in again.stdout + again.stderr  # still cached


def test_pip_install_gives_nmisim_and_kubectl_nmisim(
    pre_commit: str, hook_repo: tuple[Path, str], user_repo: Path
) -> None:
    """What pre-commit installed is `pip install .` of this repository in a virtualenv (docs/install.md):
    its bin holds nmisim and kubectl-nmisim, and the real kubectl finds the plugin there."""
    assert run_hook(pre_commit, user_repo, "README.md").returncode == 0  # the environment exists
    repo, rev = hook_repo
    with sqlite3.connect(CACHE / "home" / "db.db") as db:
        (path,) = db.execute("SELECT path FROM repos WHERE repo = ? AND ref = ?", (str(repo), rev)).fetchone()
    (env_bin,) = Path(path).glob("py_env-*/bin")
    assert (env_bin / "nmisim").exists() and (env_bin / "kubectl-nmisim").exists()
    env = {"PATH": f"{env_bin}:/usr/bin:/bin", "HOME": str(user_repo)}
    kubectl = kubectl_path()
    plugins = subprocess.run(
        [kubectl, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert str(env_bin / "kubectl-nmisim") in plugins.stdout.splitlines(), plugins.stdout + plugins.stderr
    version = subprocess.run(
        [kubectl, "nmisim", "--version"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (version.returncode, version.stdout) == (0, f"nmisim {__version__}\n"), version.stderr
