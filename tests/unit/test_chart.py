"""The Helm chart charts/nmisim/: lint, and what `helm template` renders (no cluster).

The chart must not drift from the kustomize base: with default values it renders the objects of
`kubectl kustomize manifests/` (but the Namespace, which a chart cannot own) with the same specs; the only
normalisation is removing Helm's four standard labels from objects' metadata (their values are checked).
Its CRDs are symlinks to crds/ and manifests/peering/, so they cannot differ; the tests check that helm
follows the links when it reads and packages the chart.

helm comes from hack/helm.sh (built from Go modules into the tool cache when missing). Without Go the
tests skip, except where NMISIM_REAL_NODE=1 or CI is set: there a missing helm fails them.
"""

from __future__ import annotations

import copy
import difflib
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import ROOT, kubectl_path

from nmisim import __version__
from nmisim.cli.main import build_parser

CHART = ROOT / "charts" / "nmisim"
RELEASE = "nmisim"
NAMESPACE = "nmisim-system"
#: Helm's standard labels, the only difference the comparison with manifests/ allows (metadata only).
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)

# The first test builds helm (a few minutes on 2 cores) unless it is in the cache already.
pytestmark = pytest.mark.timeout(1800)

Obj = dict[str, Any]
Key = tuple[str, str, str, str]


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def template(
    helm: str, *args: str, release: str = RELEASE, values: Obj | None = None, tmp: Path | None = None
) -> list[Obj]:
    cmd = [helm, "template", release, str(CHART), "--namespace", NAMESPACE, *args]
    if values is not None:
        assert tmp is not None
        f = tmp / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return _docs(proc.stdout)


def key(o: Obj) -> Key:
    meta = o["metadata"]
    return (o["apiVersion"], o["kind"], meta.get("namespace", ""), meta["name"])


def by_key(objs: list[Obj]) -> dict[Key, Obj]:
    out = {key(o): o for o in objs}
    assert len(out) == len(objs), "two objects with the same kind, namespace and name"
    return out


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, [key(o) for o in found]
    return found[0]


def container(objs: list[Obj]) -> Obj:
    c: Obj = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


def run_args(objs: list[Obj]) -> list[str]:
    """The operator's `nmisim` arguments (after the sh -c wrapper, if any)."""
    args: list[str] = container(objs)["args"]
    return args


def strip_helm_labels(o: Obj) -> Obj:
    o = copy.deepcopy(o)
    labels = o["metadata"]["labels"]
    got = {k: labels.pop(k, None) for k in HELM_LABELS}
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert got == {
        "helm.sh/chart": f"nmisim-{chart['version']}",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": chart["appVersion"],
    }, key(o)
    return o


@pytest.fixture(scope="session")
def kustomized() -> list[Obj]:
    proc = subprocess.run(
        [kubectl_path(), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return _docs(proc.stdout)


@pytest.fixture(scope="session")
def default(helm: str) -> list[Obj]:
    return template(helm)


def parse_run(args: list[str]) -> Any:
    """Parse rendered arguments with nmisim's own parser: the chart's flags must exist and type-check."""
    ns = build_parser().parse_args(args)
    assert ns.command == "run"
    return ns


# --- lint ---


@pytest.mark.parametrize("sets", [[], ["--set", "operator.replicas=3", "--set", "metrics.enabled=false"]])
def test_helm_lint(helm: str, sets: list[str]) -> None:
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *sets], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


# --- the kustomize base ---


def test_default_values_render_the_kustomize_base(default: list[Obj], kustomized: list[Obj]) -> None:
    want = by_key([o for o in kustomized if o["kind"] != "Namespace"])
    got = by_key([strip_helm_labels(o) for o in default])
    assert sorted(got) == sorted(want)
    for k, obj in want.items():
        assert got[k] == obj, f"{k}: chart (-) and manifests/ (+) differ\n{_yaml_diff(got[k], obj)}"


def _yaml_diff(a: Obj, b: Obj) -> str:
    def lines(o: Obj) -> list[str]:
        return yaml.safe_dump(o, sort_keys=True).splitlines()

    return "\n".join(difflib.unified_diff(lines(a), lines(b), "chart", "manifests", lineterm="", n=2))


def test_the_kustomize_base_has_one_namespace_and_the_chart_none(
    default: list[Obj], kustomized: list[Obj]
) -> None:
    namespaces = [o["metadata"]["name"] for o in kustomized if o["kind"] == "Namespace"]
    assert namespaces == [NAMESPACE]
    assert not [o for o in default if o["kind"] == "Namespace"]


def _pod_security_labels_in(text: str) -> dict[str, str]:
    return dict(re.findall(r"(pod-security\.kubernetes\.io/[a-z-]+)=([a-z0-9.]+)", text))


@pytest.mark.parametrize("doc", ["README.md", "templates/NOTES.txt"])
def test_documented_namespace_labels_are_the_kustomize_ones(doc: str) -> None:
    ns = yaml.safe_load((ROOT / "manifests" / "namespace.yaml").read_text())
    want = {k: v for k, v in ns["metadata"]["labels"].items() if k.startswith("pod-security.kubernetes.io/")}
    assert len(want) == 6
    assert _pod_security_labels_in((CHART / doc).read_text()) == want


def test_chart_app_version_is_the_operators() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_default_args_are_the_operators_defaults(default: list[Obj]) -> None:
    """The chart leaves out flags at nmisim run's defaults (so it matches manifests/): check them."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ns = parse_run(run_args(default))
    assert ns.all_namespaces
    assert ns.peering is None
    assert ns.metrics_port == values["metrics"]["port"]
    text = (CHART / "values.yaml").read_text()
    stated = f"{ns.api_qps:g} requests/s, a burst of {ns.api_burst}, {ns.concurrency} writes in flight"
    assert stated in text, "values.yaml's comment on apiQps/apiBurst/concurrency states other defaults"


# --- CRDs ---


def _repo_crd_files() -> list[Path]:
    return [*sorted((ROOT / "crds").glob("*.yaml")), ROOT / "manifests" / "peering" / "peering-crds.yaml"]


def test_chart_crds_are_links_to_the_repos() -> None:
    """crds/nmisim is crds/ itself, crds/kopf-peering.yaml is manifests/peering/peering-crds.yaml."""
    crds = CHART / "crds"
    assert sorted(p.name for p in crds.iterdir()) == ["kopf-peering.yaml", "nmisim"]
    assert (crds / "nmisim").readlink() == Path("../../../crds")
    assert (crds / "kopf-peering.yaml").readlink() == Path("../../../manifests/peering/peering-crds.yaml")
    assert (crds / "nmisim").resolve() == ROOT / "crds"
    assert (crds / "kopf-peering.yaml").resolve() == ROOT / "manifests" / "peering" / "peering-crds.yaml"
    # Helm installs every file under crds/ before the templates: CRDs only (no CR, no kustomization).
    assert {d["kind"] for d in _crd_docs()} == {"CustomResourceDefinition"}
    assert not [p for p in (ROOT / "crds").iterdir() if p.suffix not in (".yaml",)]


def _crd_docs() -> list[Obj]:
    return [d for f in _repo_crd_files() for d in _docs(f.read_text())]


def test_helm_reads_the_linked_crds(helm: str) -> None:
    """`helm show crds` prints every linked file, verbatim, and nothing else (it joins them with newlines)."""
    proc = subprocess.run([helm, "show", "crds", str(CHART)], capture_output=True, text=True, check=True)
    texts = [f.read_text() for f in _repo_crd_files()]
    for f, text in zip(_repo_crd_files(), texts, strict=True):
        assert text in proc.stdout, f
    assert len(proc.stdout) == sum(len(t) + 1 for t in texts)


def test_template_renders_crds_only_when_asked(helm: str, default: list[Obj]) -> None:
    assert not [o for o in default if o["kind"] == "CustomResourceDefinition"]
    with_crds = template(helm, "--include-crds")
    crds = sorted(o["metadata"]["name"] for o in with_crds if o["kind"] == "CustomResourceDefinition")
    assert crds == sorted(d["metadata"]["name"] for d in _crd_docs())


def test_packaged_chart_holds_the_crd_files(helm: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [helm, "package", str(CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (tgz,) = tmp_path.glob("nmisim-*.tgz")
    with tarfile.open(tgz) as tar:
        members = {m.name: m for m in tar.getmembers() if m.name.startswith("nmisim/crds/")}
        want = {f"nmisim/crds/nmisim/{p.name}": p for p in (ROOT / "crds").glob("*.yaml")}
        want["nmisim/crds/kopf-peering.yaml"] = ROOT / "manifests" / "peering" / "peering-crds.yaml"
        assert sorted(members) == sorted(want)
        for name, m in members.items():
            assert m.isfile(), name
            f = tar.extractfile(m)
            assert f is not None
            assert f.read() == want[name].read_bytes(), name


# --- values ---


def test_replicas_above_one_turn_on_peering(helm: str, default: list[Obj], tmp_path: Path) -> None:
    objs = template(helm, "--set", "operator.replicas=2")
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    peering = one(objs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "nmisim"
    c = container(objs)
    assert c["command"][:2] == ["/bin/sh", "-c"]
    assert c["command"][3] == "nmisim"  # $0 of the script
    args = run_args(objs)
    assert parse_run(args).peering == "nmisim"
    # Nothing else differs from the default rendering.
    assert args == [*run_args(default), "--peering=nmisim"]
    assert container(default)["command"] == ["nmisim"]
    rest = {k: v for k, v in by_key(objs).items() if k[1] != "ClusterKopfPeering"}
    rest_deploy = rest[key(deploy)]
    rest_deploy["spec"]["replicas"] = 1
    c["command"], c["args"] = ["nmisim"], run_args(default)
    assert rest == by_key(default)
    assert not [o for o in default if o["kind"] == "ClusterKopfPeering"]


def test_peering_priorities_are_integers_that_differ_per_pod(helm: str, tmp_path: Path) -> None:
    """Run the rendered sh -c wrapper with a fake nmisim: each pod name gets its own integer priority."""
    objs = template(helm, "--set", "operator.replicas=2", "--set", "operator.peering.name=other")
    c = container(objs)
    fake = tmp_path / "nmisim"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    priorities = []
    for pod in ("nmisim-operator-5d8f7c9b4-x7k2p", "nmisim-operator-5d8f7c9b4-q9z4m"):
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "POD_NAME": pod}
        out = subprocess.run([*c["command"], *c["args"]], capture_output=True, text=True, check=True, env=env)
        argv = out.stdout.splitlines()
        ns = parse_run(argv)
        assert ns.peering == "other"
        assert argv[-1].startswith("--priority=")
        priorities.append(ns.priority)
    assert all(isinstance(p, int) for p in priorities)
    assert priorities[0] != priorities[1]
    assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "other"


@pytest.mark.parametrize(
    ("mic", "aks", "names"),
    [
        (True, True, {("default", "mic-exception"), ("kube-system", "aks-addon-exception")}),
        (False, True, {("kube-system", "aks-addon-exception")}),
        (True, False, {("default", "mic-exception")}),
        (False, False, set()),
    ],
)
def test_exception_toggles(helm: str, mic: bool, aks: bool, names: set[tuple[str, str]]) -> None:
    objs = template(
        helm,
        "--set",
        f"exceptions.mic={str(mic).lower()}",
        "--set",
        f"exceptions.aksAddons={str(aks).lower()}",
    )
    got = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objs
        if o["kind"] == "AzurePodIdentityException"
    }
    assert got == names


def _crd_spec_properties() -> dict[str, set[str]]:
    crd = yaml.safe_load((ROOT / "crds" / "simulationconfigs.nmisim.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return {k: set(v["properties"]) for k, v in spec.items()}


SIMCFG_NMI = {"operationMode": "managed", "forceNamespaced": True, "retryAttemptsForCreated": 3}
SIMCFG_IMDS = {
    "systemAssigned": True,
    "userAssigned": [{"clientID": "00000000-0000-0000-0000-000000000001"}],
    "nodes": {"node-1": {"systemAssigned": False}},
}


@pytest.mark.parametrize(
    ("values", "spec"),
    [
        ({"nmi": SIMCFG_NMI, "imds": SIMCFG_IMDS}, {"nmi": SIMCFG_NMI, "imds": SIMCFG_IMDS}),
        ({"nmi": SIMCFG_NMI}, {"nmi": SIMCFG_NMI}),
        ({"imds": SIMCFG_IMDS}, {"imds": SIMCFG_IMDS}),
        ({}, {}),
    ],
    ids=["both", "nmi", "imds", "none"],
)
def test_simulation_config_values_land_in_spec(helm: str, tmp_path: Path, values: Obj, spec: Obj) -> None:
    props = _crd_spec_properties()
    for part, fields in values.items():
        assert set(fields) <= props[part], f"the test uses fields the CRD does not have: {part}"
    objs = template(helm, values={"simulationConfig": values}, tmp=tmp_path)
    cfg = one(objs, "SimulationConfig")
    assert cfg["metadata"]["name"] == "default"
    assert "namespace" not in cfg["metadata"]
    assert cfg["spec"] == spec


def test_simulation_config_can_be_left_out(helm: str) -> None:
    objs = template(helm, "--set", "simulationConfig.create=false")
    assert not [o for o in objs if o["kind"] == "SimulationConfig"]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("operator.replica=2", "additional properties 'replica' not allowed"),
        ("exceptions.mic=yes", "got string, want boolean"),
        ("operator.apiQps=-1", "minimum"),
        ("metrics.port=8080", "/metrics/port"),  # the health port
    ],
)
def test_schema_rejects_wrong_values(helm: str, setting: str, error: str) -> None:
    proc = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", setting], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert error in proc.stderr


def test_agent_is_a_placeholder(helm: str, default: list[Obj]) -> None:
    assert not [o for o in default if o["kind"] == "DaemonSet"]
    proc = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", "agent.enabled=true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "the nmisim node agent does not exist yet" in proc.stderr


def test_metrics_off(helm: str) -> None:
    objs = template(helm, "--set", "metrics.enabled=false")
    assert not [o for o in objs if o["kind"] == "Service"]
    assert [p["name"] for p in container(objs)["ports"]] == ["healthz"]
    assert parse_run(run_args(objs)).metrics_port == 0


def test_metrics_port_and_service(helm: str) -> None:
    objs = template(helm, "--set", "metrics.port=9100")
    assert parse_run(run_args(objs)).metrics_port == 9100
    assert {p["name"]: p["containerPort"] for p in container(objs)["ports"]} == {
        "healthz": 8080,
        "metrics": 9100,
    }
    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    objs = template(helm, "--set", "metrics.service.enabled=false")
    assert not [o for o in objs if o["kind"] == "Service"]
    assert "metrics" in {p["name"] for p in container(objs)["ports"]}


def test_operator_values(helm: str, tmp_path: Path) -> None:
    values = {
        "operator": {
            "image": {"repository": "registry.example/nmisim", "tag": "0.1.0", "pullPolicy": "Always"},
            "apiQps": 50.5,
            "apiBurst": 80,
            "concurrency": 4,
            "extraArgs": ["--verbose"],
            "resources": {"requests": {"cpu": "50m", "memory": "200Mi"}, "limits": {"memory": "512Mi"}},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "priorityClassName": "system-cluster-critical",
        }
    }
    objs = template(helm, values=values, tmp=tmp_path)
    c = container(objs)
    assert c["image"] == "registry.example/nmisim:0.1.0"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == values["operator"]["resources"]
    ns = parse_run(run_args(objs))
    assert (ns.api_qps, ns.api_burst, ns.concurrency, ns.verbose) == (50.5, 80, 4, True)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["tolerations"] == values["operator"]["tolerations"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    objs = template(helm, "--set", "operator.image.tag=")
    assert container(objs)["image"] == f"nmisim-operator:{__version__}"


@pytest.mark.parametrize(
    ("release", "args", "prefix"),
    [("nmisim", [], "nmisim"), ("sim", [], "sim-nmisim"), ("sim", ["--set", "fullnameOverride=x"], "x")],
)
def test_names_fit_together(helm: str, release: str, args: list[str], prefix: str) -> None:
    objs = template(helm, *args, release=release)
    sa = one(objs, "ServiceAccount")["metadata"]
    assert sa["name"] == prefix
    deploy = one(objs, "Deployment")
    assert deploy["metadata"]["name"] == f"{prefix}-operator"
    pod = deploy["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == sa["name"]
    binding = one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == one(objs, "ClusterRole")["metadata"]["name"] == f"{prefix}-operator"
    svc = one(objs, "Service")
    assert svc["metadata"]["name"] == f"{prefix}-metrics"
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # Fixed names, whatever the release: the operator and aad-pod-identity look them up by name.
    assert one(objs, "SimulationConfig")["metadata"]["name"] == "default"


# --- README ---


def _leaves(values: Obj, prefix: str = "") -> Iterator[str]:
    """Documented value paths: maps of free-form content (resources, nodeSelector, ...) count as one."""
    free_form = {
        "operator.resources",
        "operator.nodeSelector",
        "operator.affinity",
        "operator.podAnnotations",
    }
    free_form |= {"simulationConfig.nmi", "simulationConfig.imds"}
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path not in free_form:
            yield from _leaves(v, f"{path}.")
        else:
            yield path


def test_readme_values_table_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z.]+)` \|", readme, flags=re.MULTILINE))
    assert documented == set(_leaves(values))
