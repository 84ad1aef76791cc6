"""hack/awi.sh without a cluster and without building AWI: its usage line, --print (the paths other scripts
read), the simulated Entra's CA, and nmisim's stand-in for AWI's logging library (hack/awi/mlog).
shellcheck and `bash -n` cover it in tests/unit/test_scripts.py, like every script in hack/."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AWI = ROOT / "hack" / "awi.sh"
REGISTRY = "mcr.microsoft.com/oss/azure/workload-identity"


def awi(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("go") is None:
        pytest.skip("go not installed: hack/awi.sh needs it (the cache key holds `go version`)")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NMISIM_")}
    environ.update({"NMISIM_CACHE": str(cache), "GOPROXY": "off", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        ["bash", str(AWI), *args], capture_output=True, text=True, check=False, timeout=60, env=environ
    )


@pytest.mark.parametrize(
    "args",
    [
        ("nope",),
        ("bins", "extra"),
        ("--print", "x"),
        ("images", "x"),
        ("manifest", "t", "x"),
        ("entra-ca", ""),
    ],
)
def test_bad_usage_is_one_line_and_builds_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = awi(tmp_path, *args)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "[awi] error: usage: hack/awi.sh [bins|images|manifest [TENANT]|all [TENANT]|entra-ca|--print]\n"
    )
    assert not (tmp_path / "awi").exists()


def test_no_argument_is_bad_usage_too(tmp_path: Path) -> None:
    proc = awi(tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("[awi] error: usage: hack/awi.sh")


def printed(cache: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = awi(cache, "--print", env=env)
    assert proc.returncode == 0, proc.stderr
    # what a caller does: eval the lines in bash, then read the variables back
    names = [line.split("=", 1)[0] for line in proc.stdout.splitlines()]
    script = 'eval "$1"; for n in "${@:2}"; do printf "%s=%s\\0" "$n" "${!n}"; done'
    out = subprocess.run(
        ["bash", "-c", script, "-", proc.stdout, *names], capture_output=True, text=True, check=True
    )
    return dict(item.split("=", 1) for item in out.stdout.split("\0")[:-1])


def test_print_names_every_path_under_one_key_and_builds_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "a cache"  # a space: the values are quoted for eval
    paths = printed(cache)
    assert set(paths) == {
        "AWI_VERSION",
        "AWI_BIN",
        "AWI_MANIFEST",
        "AWI_ENTRA_CA_DIR",
        "AWI_ENTRA_CA",
        *(f"AWI_{n}_{s}" for n in ("WEBHOOK", "PROXY", "PROXY_INIT") for s in ("TAR", "IMAGE")),
    }
    assert paths["AWI_VERSION"] == "v1.6.0"
    key_dir = Path(paths["AWI_BIN"]).parent
    assert key_dir.parent == cache / "awi" and re.fullmatch(r"[0-9a-f]{16}", key_dir.name)
    assert paths["AWI_BIN"] == str(key_dir / "bin")
    assert paths["AWI_MANIFEST"] == str(key_dir / "azure-wi-webhook.yaml")
    for name, var in (("webhook", "WEBHOOK"), ("proxy", "PROXY"), ("proxy-init", "PROXY_INIT")):
        assert paths[f"AWI_{var}_TAR"] == str(key_dir / "images" / f"{name}.tar")
        assert paths[f"AWI_{var}_IMAGE"] == f"{REGISTRY}/{name}:v1.6.0"  # upstream's names: nothing renamed
    assert paths["AWI_ENTRA_CA_DIR"] == str(cache / "awi" / "entra-ca")
    assert paths["AWI_ENTRA_CA"] == str(cache / "awi" / "entra-ca" / "ca.crt")
    assert not cache.exists()
    # NMISIM_ENTRA_CA names the CA the proxy image trusts; the key does not depend on the cache root
    other = printed(tmp_path / "other", env={"NMISIM_ENTRA_CA": "/x/ca.pem"})
    assert other["AWI_ENTRA_CA"] == "/x/ca.pem"
    assert Path(other["AWI_BIN"]).parent.name == key_dir.name


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_entra_ca_makes_a_ca_and_a_server_certificate_once(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    proc = awi(tmp_path, "entra-ca")
    assert proc.returncode == 0, proc.stderr
    d = Path(proc.stdout.strip())
    assert d == tmp_path / "awi" / "entra-ca"
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    subject = openssl("x509", "-in", str(d / "ca.crt"), "-noout", "-subject", "-ext", "basicConstraints")
    assert "CN = nmisim simulated Entra CA - not Microsoft" in subject and "CA:TRUE" in subject
    verified = openssl("verify", "-CAfile", str(d / "ca.crt"), "-purpose", "sslserver", str(d / "server.crt"))
    assert verified.strip().endswith(": OK")
    san = openssl("x509", "-in", str(d / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert re.findall(r"DNS:([\w.]+)", san) == ["login.microsoftonline.com", "entra.nmisim.test"]
    assert "not Microsoft" in openssl("x509", "-in", str(d / "server.crt"), "-noout", "-subject")
    # the key matches the certificate
    assert openssl("x509", "-in", str(d / "server.crt"), "-noout", "-pubkey") == openssl(
        "pkey", "-in", str(d / "server.key"), "-pubout"
    )
    before = (d / "ca.crt").read_bytes()
    again = awi(tmp_path, "entra-ca")
    assert again.returncode == 0 and (d / "ca.crt").read_bytes() == before  # made once, then kept


MLOG = ROOT / "hack" / "awi" / "mlog"


def test_the_mlog_stand_in_keeps_upstreams_level_order(tmp_path: Path) -> None:
    """go test of hack/awi/mlog in a copy (go.sum is written there, not in the repository), offline."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go not installed")
    work = tmp_path / "mlog"
    shutil.copytree(MLOG, work)
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOWORK": "off", "GOTOOLCHAIN": "local"}
    proc = subprocess.run(
        ["nice", "-n", "19", go, "test", "-count=1", "-p", "1", "./..."],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
        env=env,
        timeout=300,
    )
    if proc.returncode != 0 and "GOPROXY=off" in proc.stdout + proc.stderr:
        pytest.skip("github.com/go-logr/logr is not in the Go module cache (hack/awi.sh bins downloads it)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
