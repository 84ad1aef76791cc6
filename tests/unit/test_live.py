"""``nmisim.live`` against a fake API client: pagination, missing CRDs, bad objects, SimulationConfig,
and failures that must become one-line :class:`ClusterError` (no cluster needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from nmisim.kube import ClusterError
from nmisim.live import LiveReader, PodNotFound, Target, context_namespace, load_live


@dataclass
class _Resp:
    data: bytes


def _pod(name: str, ns: str = "shop", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "10.0.0.9"},
    }


def _api_error(status: int, message: str = "") -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = json.dumps({"message": message}) if message else ""
    return e


class FakeCore:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def _list(self, **kw: Any) -> _Resp:
        self.calls.append(kw)
        i = int(kw.get("_continue") or 0)
        more = {"continue": str(i + 1)} if i + 1 < len(self.pages) else {}
        return _Resp(json.dumps({"kind": "PodList", "metadata": more, "items": self.pages[i]}).encode())

    def list_pod_for_all_namespaces(self, **kw: Any) -> _Resp:
        return self._list(**kw)

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> _Resp:
        return self._list(namespace=namespace, **kw)

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> _Resp:
        for page in self.pages:
            for p in page:
                if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name):
                    return _Resp(json.dumps(p).encode())
        raise _api_error(404, f'pods "{name}" not found')


class FakeCustom:
    def __init__(self, objects: dict[str, list[dict[str, Any]]], config: dict[str, Any] | None) -> None:
        self.objects = objects  # plural -> items; a missing plural is a missing CRD (404)
        self.config = config
        self.forbidden_cluster_wide: set[str] = set()
        self.calls: list[tuple[str, str | None]] = []

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> _Resp:
        self.calls.append((plural, None))
        if plural in self.forbidden_cluster_wide:
            raise _api_error(403, f"cannot list resource {plural} at the cluster scope")
        if plural not in self.objects:
            raise _api_error(404)
        return _Resp(json.dumps({"items": self.objects[plural], "metadata": {}}).encode())

    def list_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, **kw: Any
    ) -> _Resp:
        self.calls.append((plural, ns))
        if plural not in self.objects:
            raise _api_error(404)
        items = [o for o in self.objects[plural] if o["metadata"].get("namespace") == ns]
        return _Resp(json.dumps({"items": items, "metadata": {}}).encode())

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **kw: Any) -> _Resp:
        if self.config is None:
            raise _api_error(404)
        return _Resp(json.dumps(self.config).encode())


def reader(core: FakeCore, custom: FakeCustom, warnings: list[str]) -> LiveReader:
    r = LiveReader.__new__(LiveReader)
    r.target = Target()
    r.server = "https://fake:6443"
    r.core = core  # type: ignore[assignment]
    r.custom = custom  # type: ignore[assignment]
    r._warn = warnings.append
    return r


EXC = {
    "kind": "AzurePodIdentityException",
    "metadata": {"name": "e", "namespace": "shop"},
    "spec": {"podLabels": {"app": "infra"}},
}


def test_pages_are_followed_and_kinds_filled_in() -> None:
    core = FakeCore([[_pod("a")], [_pod("b")], [_pod("c", "other")]])
    custom = FakeCustom({"azurepodidentityexceptions": [EXC]}, None)
    warnings: list[str] = []
    out = reader(core, custom, warnings).load()
    assert sorted(o.name for o in out.objects if o.kind == "Pod") == ["a", "b", "c"]
    assert [c.get("_continue") for c in core.calls] == [None, "1", "2"]
    assert all(c["limit"] == 500 for c in core.calls)
    assert [o.name for o in out.objects if o.kind == "AzurePodIdentityException"] == ["e"]
    assert out.config is None and warnings == []  # 3 CRDs missing (404) and no config: not errors


def test_namespace_limits_pods_and_exceptions_not_bindings() -> None:
    core = FakeCore([[_pod("a")]])
    custom = FakeCustom({"azurepodidentityexceptions": [EXC], "azureidentitybindings": []}, None)
    reader(core, custom, []).load("shop")
    assert core.calls[0]["namespace"] == "shop"
    assert ("azurepodidentityexceptions", "shop") in custom.calls
    assert ("azureidentitybindings", None) in custom.calls  # bindings match across namespaces


def test_forbidden_cluster_wide_falls_back_to_namespace_with_warning() -> None:
    core = FakeCore([[_pod("a")]])
    custom = FakeCustom({"azureidentitybindings": []}, None)
    custom.forbidden_cluster_wide.add("azureidentitybindings")
    warnings: list[str] = []
    reader(core, custom, warnings).load("shop")
    assert ("azureidentitybindings", "shop") in custom.calls
    assert len(warnings) == 1 and "azureidentitybindings" in warnings[0] and "403" in warnings[0]


def test_forbidden_without_namespace_is_a_cluster_error() -> None:
    custom = FakeCustom({"azureidentitybindings": []}, None)
    custom.forbidden_cluster_wide.add("azureidentitybindings")
    with pytest.raises(ClusterError, match=r"denied access \(403\): cannot list resource"):
        reader(FakeCore([[]]), custom, []).load()


def test_bad_objects_are_skipped_with_a_warning_naming_them() -> None:
    bad = _pod("broken")
    bad["metadata"]["labels"] = ["not", "a", "map"]
    core = FakeCore([[_pod("ok"), bad]])
    warnings: list[str] = []
    out = reader(core, FakeCustom({}, None), warnings).load()
    assert [o.name for o in out.objects] == ["ok"]
    assert len(warnings) == 1
    assert warnings[0].startswith("skipping Pod shop/broken: ") and "metadata.labels" in warnings[0]


def test_simulation_config_read_and_invalid_one_warned() -> None:
    cfg = {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": {"nmi": {"micNamespace": "x"}},
    }
    out = reader(FakeCore([[]]), FakeCustom({}, cfg), []).load()
    assert out.config is not None and out.config.nmi.mic_namespace == "x"
    bad = {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": {"nmi": {"operationMode": "x"}},
    }
    warnings: list[str] = []
    out = reader(FakeCore([[]]), FakeCustom({}, bad), warnings).load()
    assert out.config is None
    assert len(warnings) == 1 and "SimulationConfig/default is invalid" in warnings[0]


def test_pod_not_found() -> None:
    r = reader(FakeCore([[_pod("a")]]), FakeCustom({}, None), [])
    assert r.pod("shop", "a")["metadata"]["name"] == "a"
    with pytest.raises(PodNotFound, match="pod shop/nope not found"):
        r.pod("shop", "nope")


def _kubeconfig(tmp_path: Path, server: str, namespace: str | None = None) -> Path:
    ctx: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "ctx", "context": ctx},
            {"name": "other", "context": {**ctx, "namespace": "o"}},
        ],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    with pytest.raises(ClusterError) as info:
        load_live(Target(kubeconfig=str(kc)))
    msg = str(info.value)
    assert msg.startswith("cannot reach the cluster at https://127.0.0.1:1") and "\n" not in msg


def test_bad_kubeconfig_is_a_cluster_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ClusterError, match="kubeconfig"):
        load_live(Target(kubeconfig=str(empty)))
    with pytest.raises(ClusterError, match="context"):
        load_live(Target(kubeconfig=str(_kubeconfig(tmp_path, "https://127.0.0.1:1")), context="nope"))


def test_context_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert context_namespace(Target(kubeconfig=str(_kubeconfig(tmp_path, "https://x", "shop")))) == "shop"
    assert context_namespace(Target(kubeconfig=str(_kubeconfig(tmp_path, "https://x")))) == "default"
    kc = _kubeconfig(tmp_path, "https://x", "shop")
    assert context_namespace(Target(kubeconfig=str(kc), context="other")) == "o"
    monkeypatch.setenv("KUBECONFIG", str(kc))
    assert context_namespace(Target()) == "shop"
    assert context_namespace(Target(kubeconfig=str(tmp_path / "missing"))) == "default"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["evaluate"], 2, "nmisim: error: no input: pass -f FILE and/or --cluster"),
        (["evaluate", "-f", "x.yaml", "-n", "shop"], 2, "nmisim: error: -n/--namespace and --kubeconfig go"),
        (["explain", "deploy/web"], 2, "nmisim: error: deploy/web: explain works on pods (pod/NAME)"),
    ],
)
def test_cli_usage_errors(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nmisim.cli.main import main  # noqa: PLC0415

    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["evaluate", "--cluster"], ["explain", "pod/x", "-n", "y"]])
def test_cli_unreachable_exit_1(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nmisim.cli.main import main  # noqa: PLC0415

    kc = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    assert main([*argv, "--kubeconfig", str(kc)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == "nmisim: error: cannot reach the cluster at https://127.0.0.1:1: [Errno 111] Connection refused\n"
    )
