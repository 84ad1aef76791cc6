"""``nmisim explain``'s printing (pure: worlds built in memory, no cluster)."""

from __future__ import annotations

import io
import json
import re

import pytest
from factories import CID1, CID2, binding, config, exc, ident, pod, world

from nmisim.cli.common import UsageError
from nmisim.cli.explain import (
    PLACEHOLDER_CLIENT_ID,
    Style,
    explain,
    explain_text,
    headline,
    parse_pod_arg,
    request_command,
    settings_argv,
    use_color,
    wait_note,
)
from nmisim.engine.models import Pod
from nmisim.engine.world import World

AKS = {"kubernetes.azure.com/managedby": "aks"}


def _web() -> tuple[World, Pod]:
    p = pod("web-7d9c", "shop", {"aadpodidbinding": "shop-web"})
    w = world(
        ident("web-identity", "shop", CID1), binding("web-binding", "shop", "web-identity", "shop-web"), p
    )
    return w, p


def test_intercepted_headline_and_sections() -> None:
    w, p = _web()
    ex = explain(w, p)
    assert headline(ex) == "shop/web-7d9c: INTERCEPTED — NMI serves tokens for shop/web-identity"
    text = explain_text(ex)
    lines = text.splitlines()
    assert lines[0] == headline(ex)
    for section in ("Default token request", "Why", "Decided by", "Findings (0)", "Try other paths"):
        assert any(line.startswith(section) for line in lines), section
    assert "  HTTP status  200" in text
    assert "  served by    nmi (route token)" in text
    assert "  waitSeconds  0 s (no wait)" in text
    assert "  1. request from Pod shop/web-7d9c" in text
    assert (
        "AzureIdentityBinding shop/web-binding (selector 'shop-web') -> AzureIdentity shop/web-identity"
        in text
    )
    assert lines[-1] == f"  nmisim request --cluster --pod shop/web-7d9c --query client_id={CID1}"
    assert "\033[" not in text


def test_denied_headline_wait_note_and_findings() -> None:
    p = pod("addon", "gatekeeper-system", AKS)
    w = world(exc("aks-addon-exception", "kube-system", AKS), p)
    ex = explain(w, p)
    assert headline(ex) == (
        "gatekeeper-system/addon: INTERCEPTED — NMI denies token requests (404 after 80 s): no identity"
    )
    text = explain_text(ex)
    assert "waitSeconds  80 s (NMI keeps the caller waiting 80 s first)" in text
    assert "no AzurePodIdentityException in namespace gatekeeper-system" in text
    assert "- AKSAddonNotExempt: " in text and "- NoIdentity: " in text
    assert "retryAttemptsForCreated=16" in text
    assert f"client_id={PLACEHOLDER_CLIENT_ID}'" in text  # shell-quoted placeholder


def test_ambiguous_headline_names_all_candidates() -> None:
    p = pod("worker", "shop", {"aadpodidbinding": "w"})
    w = world(
        ident("a-id", "shop", CID1), ident("b-id", "shop", CID2),
        binding("a", "shop", "a-id", "w"), binding("b", "shop", "b-id", "w"), p,
    )  # fmt: skip
    h = headline(explain(w, p))
    assert h.startswith("shop/worker: INTERCEPTED — NMI serves tokens for shop/a-id")
    assert "(picked at random among 2: shop/a-id, shop/b-id)" in h


def test_exempt_headline_names_exception_and_mic_shortcut() -> None:
    p = pod("mic-abc", "default", {"app": "mic", "component": "mic"}, rs="mic-7d9")
    w = world(exc("mic-exception", "default", {"app": "mic", "component": "mic"}), p)
    ex = explain(w, p)
    assert headline(ex) == (
        "default/mic-abc: EXEMPT by mic-exception and the MIC shortcut — NMI forwards token requests to "
        "IMDS, which refuses them (403)"
    )
    text = explain_text(ex)
    assert (
        "AzurePodIdentityException default/mic-exception (matched podLabels: app=mic, component=mic)" in text
    )
    assert "owner ReplicaSet mic-7d9 starts with 'mic'" in text


def test_exempt_served_by_imds_with_a_vm_identity() -> None:
    p = pod("oms", "kube-system", AKS)
    cfg = config(imds={"userAssigned": [{"clientID": CID2, "resourceID": "/sub/kubelet"}]})
    w = world(exc("aks-addon-exception", "kube-system", AKS), p, cfg=cfg)
    ex = explain(w, p)
    assert headline(ex).startswith("kube-system/oms: EXEMPT by aks-addon-exception — NMI forwards token")
    assert "which serves" in headline(ex)
    assert ex.command[-1] == f"client_id={CID2}"  # a client ID on the node's VM


def test_bypass_and_inactive_headlines() -> None:
    hn = pod("proxy", "kube-system", {}, host_network=True)
    done = pod("migrate", "payments", {}, phase="Succeeded")
    w = world(hn, done)
    assert headline(explain(w, hn)) == (
        "kube-system/proxy: BYPASS — hostNetwork: NMI never sees its IMDS traffic; IMDS answers 400"
    )
    assert "0 s (IMDS answers directly)" in explain_text(explain(w, hn))
    ex = explain(w, done)
    assert (
        headline(ex) == "payments/migrate: INACTIVE — pod is Succeeded: NMI ignores it and serves it nothing"
    )
    assert "status.phase=Succeeded" in explain_text(ex)


def test_json_form_is_pod_result_request() -> None:
    """``-o json``: the pod, its verdict and the default token request, spelled out (not compared with the
    same calls the printer makes), and plain JSON."""
    w, p = _web()
    doc = explain(w, p).to_json()
    assert list(doc) == ["pod", "result", "request", "decisions"]
    # The engine's own trace: the rule, and the objects it looked at.
    assert [(d["rule"], d["objects"]) for d in doc["decisions"]] == [
        ("noException", []),
        ("binding", ["AzureIdentityBinding shop/web-binding", "AzureIdentity shop/web-identity"]),
        ("operationMode", ["SimulationConfig default"]),
    ]
    assert doc["pod"] == "shop/web-7d9c"
    assert doc["result"] == {
        "namespace": "shop",
        "name": "web-7d9c",
        "verdict": "intercepted",
        "exception": None,
        "exceptions": [],
        "micShortcut": False,
        "identities": ["shop/web-identity"],
        "ambiguous": False,
        "tokenRequest": {
            "status": 200,
            "servedBy": "nmi",
            "identity": "shop/web-identity",
            "error": None,
            "waitSeconds": 0,
        },
        "findings": [],
    }
    req = doc["request"]
    assert {k: req[k] for k in ("route", "status", "servedBy", "identity", "waitSeconds")} == {
        "route": "token",
        "status": 200,
        "servedBy": "nmi",
        "identity": "shop/web-identity",
        "waitSeconds": 0,
    }
    assert req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert body["token_type"] == "Bearer" and body["resource"] == "https://management.azure.com/"
    assert "NOT-A-REAL-CREDENTIAL" in body["access_token"]
    assert req["explanation"][0] == "request from Pod shop/web-7d9c (10.0.0.1) on node node-1"
    assert json.loads(json.dumps(doc)) == doc  # JSON types only


ANSI = re.compile(r"\033\[[0-9;]*m")


def test_colour_only_when_enabled() -> None:
    """Style(True) colours the same text Style(False) prints plainly (and plain is the default)."""
    w, p = _web()
    ex = explain(w, p)
    coloured = explain_text(ex, Style(True))
    plain = explain_text(ex, Style(False))
    assert "\033[1;36mINTERCEPTED\033[0m" in coloured
    assert "\033[" not in plain
    assert "\033[" not in explain_text(ex)  # no style given: plain
    assert ANSI.sub("", coloured) == plain  # colour adds escapes, nothing else


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        (_Tty(), {}, True),
        (_Tty(), {"NO_COLOR": "1"}, False),
        (_Tty(), {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value disables colour
        (io.StringIO(), {}, False),
    ],
)
def test_use_color(stream: io.StringIO, env: dict[str, str], expected: bool) -> None:
    assert use_color(stream, env) is expected


@pytest.mark.parametrize(
    ("arg", "name"),
    [("pod/web", "web"), ("pods/web", "web"), ("po/web", "web"), ("Pod/web", "web"), ("web", "web")],
)
def test_parse_pod_arg(arg: str, name: str) -> None:
    assert parse_pod_arg(arg) == name


@pytest.mark.parametrize("arg", ["deploy/web", "pod/", "pod/a/b", ""])
def test_parse_pod_arg_rejects(arg: str) -> None:
    with pytest.raises(UsageError):
        parse_pod_arg(arg)


def test_request_command_carries_kubeconfig_and_context() -> None:
    p = pod("web", "shop")
    argv = request_command(p, CID1, kubeconfig="/tmp/k c", context="aks-prod", kubectl=True)
    assert argv == (
        "kubectl", "nmisim", "request", "--cluster", "--kubeconfig", "/tmp/k c", "--context", "aks-prod",
        "--pod", "shop/web", "--query", f"client_id={CID1}",
    )  # fmt: skip


def test_the_suggested_request_carries_the_config_and_nmis_settings_as_given() -> None:
    """explain takes NMI's flags, --nmi-values and --config as evaluate and request do; the request it
    suggests carries them, and request parses them back to the same settings."""
    from nmisim.cli.main import build_parser  # noqa: PLC0415

    parser = build_parser()
    flags = [
        "--config", "/tmp/c.yaml", "--nmi-values", "v1.yaml", "--nmi-values", "v2.yaml",
        "--nmi-release-namespace", "kube-system", "--forceNamespaced", "--set-retry-after-header=false",
        "--find-identity-retry-interval", "2", "--operation-mode=managed", "--MICNamespace", "mic",
    ]  # fmt: skip
    args = parser.parse_args(["explain", "pod/web", "-n", "shop", *flags])
    given = settings_argv(args)
    assert given == (
        "--config", "/tmp/c.yaml", "--nmi-values", "v1.yaml", "--nmi-values", "v2.yaml",
        "--nmi-release-namespace", "kube-system", "--forceNamespaced=true", "--MICNamespace=mic",
        "--find-identity-retry-interval=2", "--operation-mode=managed", "--set-retry-after-header=false",
    )  # fmt: skip
    assert settings_argv(args, config=False)[:2] == ("--nmi-values", "v1.yaml")
    argv = request_command(
        pod("web", "shop"), CID1, kubeconfig=None, context=None, kubectl=False, settings=given
    )
    back = parser.parse_args(list(argv[1:]))
    names = ["config", "nmi_values", "nmi_release_namespace", "forceNamespaced", "MICNamespace",
             "find_identity_retry_interval", "operation_mode", "set_retry_after_header",
             "retry_attempts_for_created", "block_instance_metadata"]  # fmt: skip
    assert {n: getattr(back, n) for n in names} == {n: getattr(args, n) for n in names}
    assert back.retry_attempts_for_created is None  # not given: not passed on
    plain = parser.parse_args(["explain", "pod/web"])
    assert settings_argv(plain) == ()


@pytest.mark.parametrize(
    ("seconds", "served_by", "text"),
    [
        (0, "nmi", "0 s (no wait)"),
        (0, "imds", "0 s (IMDS answers directly)"),
        (1.2, "nmi", "1.2 s (NMI retries its pod lookup for 1.2 s first)"),
        (80, "nmi", "80 s (NMI keeps the caller waiting 80 s first)"),
        (100, "nmi", "100 s (NMI keeps the caller waiting 100 s first)"),
    ],
)
def test_wait_note(seconds: float, served_by: str, text: str) -> None:
    assert wait_note(seconds, served_by) == text


def test_the_trace_is_the_engines_and_only_when_asked() -> None:
    """``evaluate`` computes no trace unless asked (the operator never asks), and the trace does not
    change the result's identity; explain prints exactly the engine's decisions."""
    w, p = _web()
    plain, traced = w.evaluate(p), w.evaluate(p, trace=True)
    assert plain.trace == () and traced.trace and plain == traced
    assert plain.to_json() == traced.to_json()
    assert explain(w, p).deciders == tuple(d.text for d in traced.trace)
