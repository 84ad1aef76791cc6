"""hack/kind-runc.py: kind's privileged nodes get the capabilities this host can grant, nothing else
changes (create/run read the bundle's config.json, exec the --process file)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "kind-runc.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kind_runc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kr = load()


def test_bounding_set_of_these_machines() -> None:
    """0x1fffeffffff: bits 0-40 but 24 (CAP_SYS_RESOURCE), as measured here."""
    caps = kr.bounding_set("Name:\tx\nCapBnd:\t000001fffeffffff\n")
    assert len(caps) == 40 and "CAP_SYS_RESOURCE" not in caps and "CAP_SYS_ADMIN" in caps
    assert kr.CAPABILITIES[24] == "SYS_RESOURCE" and len(kr.CAPABILITIES) == 41


def test_only_what_the_host_lacks_is_dropped() -> None:
    process = {
        "capabilities": {"bounding": ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"], "effective": ["CAP_CHOWN"]}
    }
    assert kr.bounded(process, {"CAP_SYS_ADMIN", "CAP_CHOWN"}) is True
    assert process == {"capabilities": {"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_CHOWN"]}}
    assert kr.bounded(process, {"CAP_SYS_ADMIN", "CAP_CHOWN"}) is False  # nothing left to drop


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["--root", "/r", "create", "--bundle", "/b", "id"], (Path("/b/config.json"), True)),
        (["run", "--bundle=/b", "id"], (Path("/b/config.json"), True)),
        (["exec", "--process", "/p.json", "id"], (Path("/p.json"), False)),
        (["exec", "-p", "/p.json", "id"], (Path("/p.json"), False)),
        (["--version"], None),
        (["delete", "id"], None),
    ],
)
def test_where_runc_reads_the_process(args: list[str], want: tuple[Path, bool] | None) -> None:
    assert kr.spec_of(args) == want


def test_main_rewrites_the_bundle_then_execs_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"process": {"capabilities": {"bounding": ["CAP_SYS_RESOURCE", "CAP_KILL"]}}})
    )
    monkeypatch.setattr(kr.Path, "read_text", _status_or_file)
    calls: list[list[str]] = []
    monkeypatch.setattr(kr.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setenv("NMISIM_RUNC", "/bin/true")
    kr.main(["create", "--bundle", str(tmp_path), "c1"])
    assert json.loads(config.read_text())["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    assert calls == [["/bin/true", "create", "--bundle", str(tmp_path), "c1"]]


_real_read_text = Path.read_text


def _status_or_file(self: Path, *args: object, **kwargs: object) -> str:
    if str(self) == "/proc/self/status":
        return "CapBnd:\t000001fffeffffff\n"
    return _real_read_text(self)
