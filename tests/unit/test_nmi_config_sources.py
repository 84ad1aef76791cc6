"""NMI's settings from the manifests that set them (issue 19 item 3): an NMI DaemonSet in the input, the
aad-pod-identity chart's values (``--nmi-values``), NMI's flags on ``evaluate``/``request``, their
precedence and conflicts (docs/cli.md, "NMI's settings from manifests, values and flags")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.cli.main import build_parser, main
from nmisim.engine.config import NMIConfig
from nmisim.engine.nmiflags import (
    CONFIG_FLAGS,
    Layer,
    NMISettingsError,
    go_parse_int,
    nmi_config_of,
    nmi_containers,
    parse_nmi_argv,
    render_chart,
    resolve,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures"
NMI = FIX / "nmi"
PODS = ["-f", str(FIX / "pods.yaml"), "-f", str(FIX / "identities.yaml")]
EXC = ["-f", str(FIX / "default-exceptions.yaml")]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def evaluate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    code, out, err = run(["evaluate", *argv, "-o", "json"], capsys)
    assert code == 0, err
    return {f"{r['namespace']}/{r['name']}": r for r in json.loads(out)["results"]}, err


def write(tmp_path: Path, name: str, docs: list[dict[str, Any]] | dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs) if isinstance(docs, list) else yaml.safe_dump(docs))
    return str(path)


def daemonset(name: str, args: list[str], *, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "nmi",
        "image": "mcr.microsoft.com/oss/azure/aad-pod-identity/nmi:v1.8.17",
    }
    container["args"] = args
    if env is not None:
        container["env"] = env
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"template": {"spec": {"hostNetwork": True, "containers": [container]}}},
    }


# --- NMI's argv as pflag parses it ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        (["--operation-mode=managed", "--forceNamespaced"], {},
         {"operation_mode": "managed", "force_namespaced": True}),
        (["--forceNamespaced=false"], {}, {"force_namespaced": False}),
        (["--retry-attempts-for-created", "3"], {}, {"retry_attempts_for_created": 3}),
        (["--retry-attempts-for-created=0x10"], {}, {"retry_attempts_for_created": 16}),
        (["--find-identity-retry-interval=010"], {}, {"find_identity_retry_interval_seconds": 8}),
        (["--MICNamespace=a", "--MICNamespace", "b"], {}, {"mic_namespace": "b"}),  # the last one wins
        (["--block-instance-metadata=T", "--metadata-header-required=0"], {},
         {"block_instance_metadata": True, "metadata_header_required": False}),
        (["-v=3", "-v", "2", "--node", "n", "--log-format=json"], {}, {}),  # accepted, not settings
        (["--", "--forceNamespaced"], {}, {}),  # after --, positional
        ([], {"FORCENAMESPACED": "true"}, {"force_namespaced": True}),
        ([], {"FORCENAMESPACED": "True"}, {}),  # main.go compares with exactly "true"
        (["--forceNamespaced=false"], {"FORCENAMESPACED": "true"}, {"force_namespaced": True}),  # flag || env
    ],
)  # fmt: skip
def test_pflag_parsing(argv: list[str], env: dict[str, str], want: dict[str, Any]) -> None:
    assert dict(parse_nmi_argv(argv, env, "ds").settings) == want


def test_a_bare_boolean_takes_no_value() -> None:
    """pflag: ``--forceNamespaced false`` is true, and ``false`` a positional argument NMI ignores."""
    parsed = parse_nmi_argv(["--forceNamespaced", "false"], {}, "ds")
    assert dict(parsed.settings) == {"force_namespaced": True} and parsed.positional == ("false",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-forceNamespaced"], "unknown shorthand flag: 'f' in -forceNamespaced"),
        (["--forcenamespaced"], "unknown flag: --forcenamespaced"),
        (["--metadata-header-required="], 'invalid argument "" for "--metadata-header-required"'),
        (["--retry-attempts-for-created=many"], 'invalid argument "many" for "--retry-attempts-for-created"'),
        (["--retry-attempts-for-assigned"], "flag needs an argument: --retry-attempts-for-assigned"),
    ],
)
def test_what_stops_nmi_at_parse(argv: list[str], message: str) -> None:
    with pytest.raises(NMISettingsError, match=r"ds: NMI v1\.8\.17 would not start: ") as exc:
        parse_nmi_argv(argv, {}, "ds")
    assert message in str(exc.value)


def test_go_parse_int() -> None:
    assert [go_parse_int(s) for s in ("16", "-3", "0x1F", "0b11", "0o17", "017", "1_000", "0")] == [
        16, -3, 31, 3, 15, 15, 1000, 0,
    ]  # fmt: skip
    assert [go_parse_int(s) for s in ("", "1e3", "08", "_1", "1_", "9223372036854775808")] == [None] * 6


def test_start_checks_are_nmis() -> None:
    assert (
        nmi_config_of({"operation_mode": "MANAGED", "force_namespaced": True}, "x").operation_mode
        == "managed"
    )
    with pytest.raises(NMISettingsError, match="operation mode Managd not supported"):
        nmi_config_of({"operation_mode": "Managd"}, "x")
    with pytest.raises(NMISettingsError, match="managed mode not intialized in force namespaced mode"):
        nmi_config_of({"operation_mode": "managed"}, "x")


# --- finding NMI among the input's objects ------------------------------------------------------------


def test_nmi_containers_by_image_or_program() -> None:
    other = {
        "kind": "DaemonSet",
        "metadata": {"name": "fluentd"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "f", "image": "fluent/fluentd:v1", "args": ["--operation-mode=managed"]}
                    ]
                }
            }
        },
    }
    by_command = {
        "kind": "DaemonSet",
        "metadata": {"name": "mine", "namespace": "pi"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "image": "busybox"},
                        {
                            "name": "x",
                            "image": "registry.local/custom:1",
                            "command": ["/bin/nmi", "--MICNamespace=$(NS)"],
                            "args": ["--forceNamespaced"],
                            "env": [
                                {"name": "NS", "value": "pi"},
                                {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            ],
                        },
                    ]
                }
            }
        },
    }
    deploy = {**daemonset("nmi", ["--forceNamespaced"]), "kind": "Deployment"}
    found = nmi_containers([other, by_command, deploy, daemonset("nmi", ["--node=$(N)", "--x=$$(N)"])])
    assert [(c.source, c.argv) for c in found] == [
        ("DaemonSet pi/mine", ("--MICNamespace=pi", "--forceNamespaced")),
        ("DaemonSet kube-system/nmi", ("--node=$(N)", "--x=$(N)")),
    ]  # fmt: skip


# --- the chart ------------------------------------------------------------------------------------------


def test_chart_defaults_render_upstreams_standard_daemonset() -> None:
    r = render_chart({}, "pod-identity", "v")
    assert "--operation-mode=standard" in r.argv and "--forceNamespaced" not in r.argv
    assert "--metadata-header-required=true" in r.argv and "--http-probe-port=8085" in r.argv
    assert dict(r.env) == {"FORCENAMESPACED": "false"}
    names = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]["podLabels"] for o in r.objects}
    assert names == {
        ("pod-identity", "mic"): {"app": "mic", "component": "mic", "app.kubernetes.io/component": "mic"},
        ("kube-system", "aks-addon-exception"): {"kubernetes.azure.com/managedby": "aks"},
    }
    assert dict(parse_nmi_argv(r.argv, r.env, "v").settings) == {
        "metadata_header_required": True, "operation_mode": "standard",
    }  # fmt: skip


def test_chart_managed_mode_adds_force_namespaced_and_drops_the_mic_exception() -> None:
    r = render_chart({"operationMode": "managed", "forceNamespaced": "false"}, "default", "v")
    i = r.argv.index("--operation-mode=managed")
    assert r.argv[i + 1] == "--forceNamespaced"
    assert "FORCENAMESPACED" not in r.env  # only in standard mode
    assert [o["metadata"]["name"] for o in r.objects] == ["aks-addon-exception"]
    cfg = nmi_config_of(parse_nmi_argv(r.argv, r.env, "v").settings, "v")
    assert (cfg.operation_mode, cfg.force_namespaced) == ("managed", True)


def test_chart_surprises_are_rendered_faithfully_and_noted() -> None:
    r = render_chart(
        {"installMICException": "false", "forceNamespaced": "True", "nmi": {"retryAttemptsForCreated": 0}},
        "default",
        "v",
    )
    assert len(r.objects) == 2  # a non-empty string is true to `if`
    assert not any(a.startswith("--retry-attempts-for-created") for a in r.argv)
    assert parse_nmi_argv(r.argv, r.env, "v").settings.get("force_namespaced") is None  # "True" != "true"
    assert len(r.notes) == 3 and any("NMI uses its default 16" in n for n in r.notes)
    assert render_chart({"installMICException": False}, "default", "v").objects == ()
    on = render_chart({"forceNamespaced": True}, "default", "v")  # unquoted true renders "true"
    assert parse_nmi_argv(on.argv, on.env, "v").settings["force_namespaced"] is True and not on.notes
    quoted = render_chart({"nmi": {"retryAttemptsForCreated": "0"}}, "default", "v")
    assert "--retry-attempts-for-created=0" in quoted.argv and not quoted.notes


def test_chart_identities() -> None:
    r = render_chart(
        {"azureIdentities": {"b-id": {"resourceID": "/subscriptions/s/rg/x", "clientID": "c1",
         "binding": {"name": "b-binding", "selector": "b"}},
         "a-id": {"namespace": "apps", "name": "alpha", "type": 1, "clientID": "c2", "tenantID": "t",
         "clientPassword": '{"name": "sec", "namespace": "apps"}',
         "binding": {"name": "ab", "selector": "a"}}}},
        "pi",
        "v",
    )  # fmt: skip
    got = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in r.objects[2:]]
    assert got == [
        ("AzureIdentity", "apps", "alpha"), ("AzureIdentityBinding", "apps", "ab"),
        ("AzureIdentity", "pi", "b-id"), ("AzureIdentityBinding", "pi", "b-binding"),
    ]  # fmt: skip
    assert r.objects[2]["spec"]["clientPassword"] == {"name": "sec", "namespace": "apps"}
    assert r.objects[5]["spec"] == {"azureIdentity": "b-id", "selector": "b"}
    with pytest.raises(NMISettingsError, match="resourceID is required!"):
        render_chart({"azureIdentities": {"x": {"clientID": "c", "binding": {"selector": "s"}}}}, "d", "v")


# --- precedence -----------------------------------------------------------------------------------------


def test_resolve_precedence_and_conflicts() -> None:
    layers = [
        Layer(
            "SimulationConfig/default", {"retry_attempts_for_created": 2, "mic_namespace": "x"}, whole=True
        ),
        Layer("DaemonSet a/nmi", {"mic_namespace": "x", "set_retry_after_header": True}, whole=True),
        Layer("the command line", {"set_retry_after_header": False}, whole=False),
    ]
    r = resolve(layers)
    assert r.config == NMIConfig(mic_namespace="x")
    assert r.provenance["retry_attempts_for_created"] == "DaemonSet a/nmi (NMI's default)"
    assert r.provenance["set_retry_after_header"] == "the command line"
    assert list(r.warnings) == [
        "NMI's --retry-attempts-for-created: SimulationConfig/default says 2, "
        "DaemonSet a/nmi (NMI's default) says 16; using 16 (DaemonSet a/nmi wins)",
        "NMI's --set-retry-after-header: DaemonSet a/nmi says true, the command line says false; "
        "using false (the command line wins)",
    ]


# --- the CLI ----------------------------------------------------------------------------------------------


def test_managed_daemonset_in_the_input_gives_managed_answers(capsys: pytest.CaptureFixture[str]) -> None:
    std, err = evaluate([*PODS, "-f", str(NMI / "nmi-standard.yaml")], capsys)
    assert err == ""
    managed, err = evaluate([*PODS, "-f", str(NMI / "nmi-managed.yaml")], capsys)
    assert err == ""
    # standard: MIC assigned the identity across namespaces; managed: forceNamespaced drops it
    assert std["finance/reports-1"]["tokenRequest"]["status"] == 200
    assert managed["finance/reports-1"]["tokenRequest"]["status"] == 404
    # standard waits out CREATED retries (16 x 5 s) for a pod without an identity; managed does not
    assert std["shop/worker-5b7c9d-r4t5y"]["tokenRequest"]["waitSeconds"] == 80
    assert not managed["shop/worker-5b7c9d-r4t5y"]["tokenRequest"]["waitSeconds"]
    assert managed["shop/web-6c9f8d7b5-q2w3e"]["tokenRequest"]["identity"] == "shop/web-identity"


def test_nmi_flags_on_evaluate_and_request(capsys: pytest.CaptureFixture[str]) -> None:
    res, _ = evaluate([*PODS, "--operation-mode=Managed", "--forceNamespaced"], capsys)
    assert res["finance/reports-1"]["tokenRequest"]["status"] == 404
    code, out, err = run(
        ["request", *PODS, "--pod", "shop/worker-5b7c9d-r4t5y", "--retry-attempts-for-created", "2",
         "--find-identity-retry-interval=3", "-o", "json"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["waitSeconds"] == 6


def test_evaluate_request_and_serve_share_nmis_flag_names() -> None:
    parser = build_parser()
    argv = [
        f"--{f.name}={'true' if f.kind == 'bool' else '1' if f.kind == 'int' else 'standard'}"
        for f in CONFIG_FLAGS
    ]
    for command in (["evaluate", "-f", "x"], ["request", "-f", "x", "--pod", "a/b"], ["serve"]):
        args = parser.parse_args([*command, *argv])
        assert (
            args.operation_mode == "standard"
            and args.forceNamespaced is True
            and args.MICNamespace == "standard"
        )


def test_values_file(capsys: pytest.CaptureFixture[str]) -> None:
    res, err = evaluate([*PODS, "--nmi-values", str(NMI / "values-managed.yaml")], capsys)
    assert err == ""
    # managed (the cross-namespace identity is dropped) with setRetryAfterHeader: 503, not 404
    assert res["finance/reports-1"]["tokenRequest"]["status"] == 503
    assert res["shop/web-6c9f8d7b5-q2w3e"]["tokenRequest"]["status"] == 200
    # in managed mode the chart installs only aks-addon-exception; MICNamespace is aad-pod-identity
    assert res["kube-system/omsagent-rs-5f8d7-xyz12"]["exception"] == "aks-addon-exception"
    assert res["default/mic-7d9c6b5f4-abcde"]["verdict"] == "intercepted"


def test_values_install_the_mic_exception_in_the_release_namespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    values = write(tmp_path, "v.yaml", {"nmi": {"micNamespace": "elsewhere"}})
    res, _ = evaluate([*PODS, "--nmi-values", values], capsys)
    assert res["default/mic-7d9c6b5f4-abcde"]["exception"] == "mic"  # the chart's name, not mic-exception
    assert res["kube-system/omsagent-rs-5f8d7-xyz12"]["exception"] == "aks-addon-exception"
    res, _ = evaluate([*PODS, "--nmi-values", values, "--nmi-release-namespace", "pi"], capsys)
    assert res["default/mic-7d9c6b5f4-abcde"]["verdict"] == "intercepted"  # no exception, no MIC shortcut
    res, _ = evaluate([*PODS, "--nmi-values", values, "--MICNamespace=default"], capsys)
    assert res["default/mic-7d9c6b5f4-abcde"]["exception"] == "mic"


def test_precedence_config_daemonset_values_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    managed_config = ["--config", str(FIX / "managed-config.yaml")]
    std_ds = ["-f", str(NMI / "nmi-standard.yaml")]
    res, err = evaluate([*PODS, *managed_config, *std_ds], capsys)
    assert res["finance/reports-1"]["tokenRequest"]["status"] == 200  # the DaemonSet wins: standard
    lines = err.splitlines()
    assert (
        "nmisim: warning: NMI's --operation-mode: SimulationConfig/default (--config "
        f"{FIX / 'managed-config.yaml'}) says managed, DaemonSet default/nmi (NMI's default) says standard; "
        "using standard (DaemonSet default/nmi wins)"
    ) in lines
    assert len(lines) == 2 and "--forceNamespaced" in lines[1]
    # values beat the DaemonSet, flags beat the values
    values = write(
        tmp_path, "v.yaml", {"nmi": {"retryAttemptsForCreated": 3, "findIdentityRetryIntervalInSeconds": 2}}
    )
    res, err = evaluate([*PODS, *std_ds, "--nmi-values", values], capsys)
    assert res["shop/worker-5b7c9d-r4t5y"]["tokenRequest"]["waitSeconds"] == 6
    assert err == ""  # the DaemonSet set neither: no conflict
    res, err = evaluate([*PODS, *std_ds, "--nmi-values", values, "--retry-attempts-for-created=1"], capsys)
    assert res["shop/worker-5b7c9d-r4t5y"]["tokenRequest"]["waitSeconds"] == 2
    assert err == (
        f"nmisim: warning: NMI's --retry-attempts-for-created: --nmi-values {values} says 3, "
        "the command line says 1; using 1 (the command line wins)\n"
    )


def test_same_daemonset_twice_is_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy = write(
        tmp_path, "again.yaml", daemonset("nmi-2", ["--operation-mode=managed", "--forceNamespaced=true"])
    )
    res, err = evaluate([*PODS, "-f", str(NMI / "nmi-managed.yaml"), "-f", copy], capsys)
    assert err == "" and res["finance/reports-1"]["tokenRequest"]["status"] == 404


@pytest.mark.parametrize(
    ("files", "values", "message"),
    [
        ([("ds.yaml", daemonset("nmi", ["--operation-mode=managed"]))], None,
         "nmisim: error: DaemonSet kube-system/nmi: NMI v1.8.17 would not start: managed mode not intialized "
         "in force namespaced mode"),
        ([("ds.yaml", daemonset("nmi", ["--operation-mode=managed", "--forceNamespaced"])),
          ("ds2.yaml", daemonset("nmi-old", ["--MICNamespace=x"]))], None,
         "nmisim: error: two NMI DaemonSets with different settings: DaemonSet kube-system/nmi and "
         "DaemonSet kube-system/nmi-old"),
        ([("ds.yaml", daemonset("nmi", ["-forceNamespaced"]))], None, "unknown shorthand flag: 'f'"),
        ([], {"operationMode": "bogus"}, "NMI v1.8.17 would not start: operation mode bogus not supported"),
        ([], {"nmi": {"metadataHeaderRequired": None}},
         'invalid argument "" for "--metadata-header-required"'),
        ([], {"operationMode": ["managed"]}, "operationMode: expected a string, got list"),
        ([], ["not", "a", "map"], "expected a map of chart values, got list"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2_with_one_line(
    files: list[tuple[str, dict[str, Any]]],
    values: Any,
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    argv = [*PODS, *EXC]
    for name, doc in files:
        argv += ["-f", write(tmp_path, name, doc)]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        argv += ["--nmi-values", str(path)]
    code, out, err = run(["evaluate", *argv], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("nmisim: error: ") and message in err, err


def test_a_bare_boolean_with_a_value_in_a_daemonset_is_warned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ds = write(tmp_path, "ds.yaml", daemonset("nmi", ["--block-instance-metadata", "false"]))
    code, out, err = run(["request", *PODS, "-f", ds, "--pod", "shop/web-6c9f8d7b5-q2w3e",
                          "--path", "/metadata/instance", "-o", "json"], capsys)  # fmt: skip
    assert code == 0 and json.loads(out)["status"] == 403  # true, as NMI reads it
    assert "NMI ignores the arguments 'false'" in err
