"""The shell scripts in hack/: `bash -n` always; shellcheck when it is installed, and it must be where
the real node runs or in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

HACK = Path(__file__).resolve().parents[2] / "hack"
SCRIPTS = sorted(HACK.glob("*.sh"))


def test_there_are_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"cluster.sh", "k8s-bins.sh", "kind-e2e.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_executable(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def shellcheck_required(environ: Mapping[str, str]) -> bool:
    """Where the real node must run (NMISIM_REAL_NODE=1) and in CI, hack/host-deps.sh has installed
    shellcheck: its absence there is a failure, not a reason to skip."""
    ci = environ.get("CI", "").lower()
    return environ.get("NMISIM_REAL_NODE") == "1" or ci not in ("", "0", "false", "no")


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"NMISIM_REAL_NODE": "auto"}, False),
        ({"NMISIM_REAL_NODE": "0"}, False),
        ({"CI": "false"}, False),
        ({"NMISIM_REAL_NODE": "1"}, True),
        ({"CI": "true"}, True),
        ({"CI": "1", "NMISIM_REAL_NODE": "0"}, True),
    ],
)
def test_shellcheck_required(env: dict[str, str], required: bool) -> None:
    assert shellcheck_required(env) is required


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        why = "shellcheck not installed (hack/host-deps.sh installs it: apt-get install shellcheck)"
        if shellcheck_required(os.environ):
            pytest.fail(f"{why}; required where NMISIM_REAL_NODE=1 or CI is set")
        pytest.skip(why)
    proc = subprocess.run(
        [shellcheck, *(str(p) for p in SCRIPTS)], capture_output=True, text=True, check=False, cwd=HACK.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kind_e2e_help_needs_nothing_installed() -> None:
    """--help works before any prerequisite check (no docker, kind or cluster here)."""
    proc = subprocess.run(
        ["bash", str(HACK / "kind-e2e.sh"), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: hack/kind-e2e.sh")
    for var in ("KIND_CLUSTER_NAME", "KIND_NODE_IMAGE", "KEEP_CLUSTER", "SKIP_BUILD"):
        assert var in proc.stdout


# --- hack/lib.sh, sourced by every script

LIB = HACK / "lib.sh"


def bash(script: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """SCRIPT run by bash after `set -euo pipefail` and hack/lib.sh, as the scripts begin."""
    prelude = f"set -euo pipefail\nLOG_PREFIX=t\nsource {HACK / 'lib.sh'}\n"
    return subprocess.run(
        ["bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


@pytest.mark.parametrize("script", [*SCRIPTS, HACK.parent / ".ci" / "run"], ids=lambda p: p.name)
def test_every_script_sources_lib_and_defines_no_logging_of_its_own(script: Path) -> None:
    text = script.read_text()
    sources = re.findall(r"^source (.*)$", text, re.M)
    if script.name == "node.sh":  # sourced by cluster.sh, after cluster.sh sourced lib.sh
        cluster = (HACK / "cluster.sh").read_text()
        assert sources == []
        assert cluster.index('source "$ROOT/hack/lib.sh"') < cluster.index('source "$ROOT/hack/node.sh"')
    elif script.name != "lib.sh":
        assert any(s.rstrip('"').endswith("lib.sh") for s in sources), f"{script.name} does not source lib.sh"
        assert re.search(r"^LOG_PREFIX=", text, re.M), f"{script.name} sets no LOG_PREFIX"
    if script.name != "lib.sh":
        assert not re.search(r"^\s*(say|die|warn)\(\)", text, re.M), f"{script.name} defines its own logging"


def test_say_warn_die() -> None:
    proc = bash('say "one"; warn "two"; die "three"; echo never', env={"NO_COLOR": "1"})
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.splitlines() == ["[t] one", "[t] warning: two", "[t] error: three"]
    assert "\033[1m[t]\033[0m one" in bash('say "one"').stderr


def test_wait_until_polls_until_the_command_succeeds() -> None:
    proc = bash('n=0; third() { ((++n >= 3)); }; WAIT_INTERVAL=0.01 wait_until 5 "x" third; echo "$n"')
    assert (proc.returncode, proc.stdout) == (0, "3\n"), proc.stderr


def test_wait_until_gives_up_after_the_timeout() -> None:
    proc = bash('WAIT_INTERVAL=0.1 wait_until 1 "the moon" false; echo never', env={"NO_COLOR": "1"})
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "[t] error: gave up after 1s waiting for the moon\n"


def test_wait_until_stops_when_the_command_dies() -> None:
    proc = bash('gone() { die "it exited"; }; wait_until 30 "x" gone; echo never', env={"NO_COLOR": "1"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "[t] error: it exited\n")


def xtables_save_string(value: str) -> str:
    """How iptables -S writes one word (libxtables' xtables_save_string, restated): as is when it is
    made of [A-Za-z0-9_-] only, else in double quotes with a backslash before each ", \\ and '."""
    if value and re.fullmatch(r"[A-Za-z0-9_-]+", value):
        return value
    return '"' + re.sub(r"([\"\\'])", r"\\\1", value) + '"'


RULES = [
    ["-A", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD"],
    ["-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "--comment", "kubernetes lb", "-j", "KUBE-X"],
    ["-A", "PREROUTING", "-s", "10.89.0.0/24", "-j", "NMISIM-APISERVER"],
    ["-A", "FORWARD", "!", "-d", "10.89.0.0/24", "-i", "veth+", "-j", "NMISIM-FORWARD"],
    ["-A", "OUTPUT", "-m", "comment", "--comment", "", "-j", "aad-metadata"],
    ["-A", "OUTPUT", "--comment", 'it\'s "quoted" \\ $(touch PWNED) `touch PWNED` *', "-j", "X"],
]


@pytest.mark.parametrize("words", RULES, ids=range(len(RULES)))
def test_iptables_words_reads_back_what_iptables_wrote(words: list[str], tmp_path: Path) -> None:
    line = " ".join(xtables_save_string(w) for w in words)
    proc = subprocess.run(
        ["bash", "-c", f'source {LIB}; iptables_words "$1" w; printf "%s\\0" "${{w[@]}}"', "-", line],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\0")[:-1] == words
    assert not (tmp_path / "PWNED").exists()  # nothing in a rule is run


@pytest.mark.parametrize("line", ['-A X -m comment --comment "open -j Y', "-A X -j Y\\"])
def test_iptables_words_refuses_a_line_it_cannot_read(line: str) -> None:
    proc = subprocess.run(
        ["bash", "-c", f'source {LIB}; iptables_words "$1" w; rc=$?; echo "$rc ${{#w[@]}}"', "-", line],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout == "1 0\n", proc.stderr


def test_node_sh_names_what_its_entry_point_lacks() -> None:
    """node.sh's contract with cluster.sh: node_up without a port cluster.sh sets fails on one line."""
    stubs = "kc() { :; }; pidfile() { :; }; terminate() { :; }; sign() { :; }; write_kubeconfig() { :; }"
    script = f"""ROOT={HACK.parent}; D=/nonexistent; {stubs}; component_running() {{ return 1; }}
source "$ROOT/hack/node.sh"
BIN=/nonexistent START_TIMEOUT=5 API_PORT=1
node_up; echo never"""
    proc = bash(script, env={"NO_COLOR": "1"})
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "[t] error: hack/node.sh: node_up needs KUBELET_PORT, which hack/cluster.sh sets\n"
    missing = bash(f'ROOT={HACK.parent}; D=/nonexistent; {stubs}\nsource "$ROOT/hack/node.sh"; echo never')
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "needs function component_running" in missing.stderr
