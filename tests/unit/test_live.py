"""``nmisim.sources.cluster`` against a fake API client: pagination, missing CRDs, bad objects,
SimulationConfig, and failures that must become one-line :class:`ClusterError` (no cluster needed)."""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from nmisim.sources.cluster import LiveReader, PodNotFound, Target, context_namespace, load_live
from nmisim.sources.files import ClusterError


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


class Paged:
    """One kind's list as the API server serves it: at most ``limit`` items a page (all of them without a
    limit), and ``metadata.continue`` — an opaque token naming where the next page starts — while more
    remain. A token it never handed out is answered 410 Gone, like an expired one."""

    MAX_CALLS = 50  # a reader that drops the token would list page one for ever

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[dict[str, Any]] = []
        self._tokens: dict[str, int] = {}

    def page(self, namespace: str | None = None, **kw: Any) -> _Resp:
        self.calls.append({"namespace": namespace, **kw} if namespace else kw)
        assert len(self.calls) <= self.MAX_CALLS, "still listing: is the continue token sent back?"
        items = [o for o in self.items if namespace is None or o["metadata"].get("namespace") == namespace]
        start = 0
        if kw.get("_continue"):
            if kw["_continue"] not in self._tokens:
                raise _api_error(410, "The provided continue parameter is too old")
            start = self._tokens[kw["_continue"]]
        limit = kw.get("limit") or len(items) or 1
        end = start + limit
        meta: dict[str, Any] = {"resourceVersion": "42"}
        if end < len(items):
            token = f"c{len(self._tokens)}.{uuid.uuid4().hex[:8]}"
            self._tokens[token] = end
            meta["continue"] = token
        return _Resp(json.dumps({"metadata": meta, "items": items[start:end]}).encode())


class FakeCore:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = Paged(pods)
        self.calls = self.pods.calls

    def list_pod_for_all_namespaces(self, **kw: Any) -> _Resp:
        return self.pods.page(**kw)

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> _Resp:
        return self.pods.page(namespace, **kw)

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> _Resp:
        for p in self.pods.items:
            if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name):
                return _Resp(json.dumps(p).encode())
        raise _api_error(404, f'pods "{name}" not found')


class FakeCustom:
    def __init__(self, objects: dict[str, list[dict[str, Any]]], config: dict[str, Any] | None) -> None:
        # plural -> its list; a missing plural is a missing CRD (404)
        self.lists = {plural: Paged(items) for plural, items in objects.items()}
        self.config = config
        self.forbidden_cluster_wide: set[str] = set()
        self.calls: list[tuple[str, str | None]] = []

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> _Resp:
        self.calls.append((plural, None))
        if plural in self.forbidden_cluster_wide:
            raise _api_error(403, f"cannot list resource {plural} at the cluster scope")
        if plural not in self.lists:
            raise _api_error(404)
        return self.lists[plural].page(**kw)

    def list_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, **kw: Any
    ) -> _Resp:
        self.calls.append((plural, ns))
        if plural not in self.lists:
            raise _api_error(404)
        return self.lists[plural].page(ns, **kw)

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **kw: Any) -> _Resp:
        if self.config is None:
            raise _api_error(404)
        return _Resp(json.dumps(self.config).encode())


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "https://fake:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: fake, context: {cluster: fake, user: u}}]
current-context: fake
"""


def reader(core: FakeCore, custom: FakeCustom, warnings: list[str]) -> LiveReader:
    """A LiveReader for a kubeconfig of its own, its API clients replaced by the fakes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "kubeconfig")
        path.write_text(KUBECONFIG)
        r = LiveReader(Target(kubeconfig=str(path)), warn=warnings.append)
    assert r.server == "https://fake:6443"
    r.core = core  # type: ignore[assignment]
    r.custom = custom  # type: ignore[assignment]
    return r


EXC = {
    "kind": "AzurePodIdentityException",
    "metadata": {"name": "e", "namespace": "shop"},
    "spec": {"podLabels": {"app": "infra"}},
}


def test_pages_are_followed_and_kinds_filled_in() -> None:
    """More objects than one page holds (500): every page is asked for with the token of the one before,
    and every object of every page is read, for Pods and for the aad-pod-identity kinds alike."""
    pods = [_pod(f"p{i:04d}", "shop" if i % 3 else "other") for i in range(1_201)]
    excs: list[dict[str, Any]] = [
        {**EXC, "metadata": {"name": f"e{i:04d}", "namespace": "shop"}} for i in range(1_001)
    ]
    core = FakeCore(pods)
    custom = FakeCustom({"azurepodidentityexceptions": excs}, None)
    warnings: list[str] = []
    out = reader(core, custom, warnings).load()
    assert sorted(o.name for o in out.objects if o.kind == "Pod") == [p["metadata"]["name"] for p in pods]
    assert sorted(o.name for o in out.objects if o.kind == "AzurePodIdentityException") == [
        e["metadata"]["name"] for e in excs
    ]
    for paged, pages in ((core.pods, 3), (custom.lists["azurepodidentityexceptions"], 3)):
        assert len(paged.calls) == pages
        assert all(c["limit"] == 500 for c in paged.calls)
        tokens = [c.get("_continue") for c in paged.calls]
        assert tokens[0] is None and all(tokens[1:]) and len(set(tokens)) == pages
    assert out.config is None and warnings == []  # 3 CRDs missing (404) and no config: not errors


def test_a_namespace_is_paginated_too() -> None:
    pods = [_pod(f"p{i:04d}", "shop" if i % 2 else "other") for i in range(1_500)]
    core = FakeCore(pods)
    out = reader(core, FakeCustom({}, None), []).load("shop")
    assert len([o for o in out.objects if o.kind == "Pod"]) == 750
    assert [c["namespace"] for c in core.calls] == ["shop", "shop"]


def test_namespace_limits_pods_and_exceptions_not_bindings() -> None:
    core = FakeCore([_pod("a")])
    custom = FakeCustom({"azurepodidentityexceptions": [EXC], "azureidentitybindings": []}, None)
    reader(core, custom, []).load("shop")
    assert core.calls[0]["namespace"] == "shop"
    assert ("azurepodidentityexceptions", "shop") in custom.calls
    assert ("azureidentitybindings", None) in custom.calls  # bindings match across namespaces


def test_forbidden_cluster_wide_falls_back_to_namespace_with_warning() -> None:
    core = FakeCore([_pod("a")])
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
        reader(FakeCore([]), custom, []).load()


def test_bad_objects_are_skipped_with_a_warning_naming_them() -> None:
    bad = _pod("broken")
    bad["metadata"]["labels"] = ["not", "a", "map"]
    core = FakeCore([_pod("ok"), bad])
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
    out = reader(FakeCore([]), FakeCustom({}, cfg), []).load()
    assert out.config is not None and out.config.nmi.mic_namespace == "x"
    bad = {
        "apiVersion": "nmisim.dev/v1alpha1",
        "kind": "SimulationConfig",
        "metadata": {"name": "default"},
        "spec": {"nmi": {"operationMode": "x"}},
    }
    warnings: list[str] = []
    out = reader(FakeCore([]), FakeCustom({}, bad), warnings).load()
    assert out.config is None
    assert len(warnings) == 1 and "SimulationConfig/default is invalid" in warnings[0]


def test_pod_not_found() -> None:
    r = reader(FakeCore([_pod("a")]), FakeCustom({}, None), [])
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


UNREACHABLE = "cannot reach the cluster at https://127.0.0.1:1: "


def assert_refused(message: str) -> None:
    """One line naming the server, then why: the connection was refused. The socket's own words, not
    urllib3's wrapping of them; whatever number the platform gives ECONNREFUSED (111 on Linux, 61 on
    macOS)."""
    assert "\n" not in message
    assert message.startswith(UNREACHABLE), message
    reason = message.removeprefix(UNREACHABLE)
    assert "refused" in reason.lower(), reason
    for wrapping in ("Max retries", "HTTPSConnection", "object at 0x", "NewConnectionError"):
        assert wrapping not in reason, reason
    assert not reason.endswith(("'", ")", " ")), reason


def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    with pytest.raises(ClusterError) as info:
        load_live(Target(kubeconfig=str(kc)))
    assert_refused(str(info.value))


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
        (["evaluate"], 2, "nmisim: error: no input: pass -f FILE, -k DIR and/or --cluster"),
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
    assert err.startswith("nmisim: error: ") and err.endswith("\n")
    assert_refused(err.removeprefix("nmisim: error: ").removesuffix("\n"))
