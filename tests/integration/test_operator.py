"""The operator against a real API server: verdicts, exception status, Events, only-on-change writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.controller.migration import migration_status
from nmisim.engine.config import SimulationConfig
from nmisim.engine.migration.assess import assess
from nmisim.engine.resources import parse
from nmisim.engine.world import World
from nmisim.sources.migration import from_live
from tests.support import Cluster, InClusterOperator, OperatorProcess, eventually, exception, pod, settle

pytestmark = pytest.mark.cluster

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
NMISIM = str(Path(sys.executable).parent / "nmisim")
BOOKKEEPING = {"observedPodResourceVersion", "lastTransitionTime", "transitions", "podUID"}
#: compared with the migration engine apart (test_verdicts_status_and_events_agree_with_the_engine)
MIGRATION = "migration"


def identity_and_binding(name: str, selector: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentity",
            "metadata": {"name": name},
            "spec": {
                "type": 0,
                "clientID": CLIENT_ID,
                "resourceID": "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg"
                "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name,
            },
        },
        {
            "apiVersion": "aadpodidentity.k8s.io/v1",
            "kind": "AzureIdentityBinding",
            "metadata": {"name": name + "-binding"},
            "spec": {"azureIdentity": name, "selector": selector},
        },
    ]


def apply(cluster: Cluster, namespace: str, *objs: dict[str, Any]) -> None:
    cluster.apply(yaml.safe_dump_all(objs), namespace)


def verdict(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "nmiverdict", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    status: dict[str, Any] | None = json.loads(proc.stdout).get("status")
    return status


def wait_verdict(cluster: Cluster, namespace: str, name: str, **expect: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = verdict(cluster, namespace, name)
        if not st:
            return None
        token = st.get("tokenRequest") or {}
        for key, value in expect.items():
            actual = token.get("status") if key == "token" else st.get(key)
            if actual != value:
                return None
        return st

    result: dict[str, Any] = eventually(
        check, timeout=30, what=f"verdict of {namespace}/{name} with {expect}"
    )
    return result


def engine_migration(cluster: Cluster, namespace: str, dump: str) -> dict[str, dict[str, Any]]:
    """The migration engine's status.migration for the pods of ``dump`` (pods and the aad-pod-identity
    objects of the namespace), with the namespace's ServiceAccounts and the Namespace as the cluster holds
    them; by pod name, nulls left out (the API server stores none)."""
    objs = yaml.safe_load(dump)["items"]
    world = World()
    for o in objs:
        parsed = parse(o)
        if parsed is not None and not isinstance(parsed, SimulationConfig):
            world.upsert(parsed)
    inp = from_live(
        world,
        pods=[o for o in objs if o.get("kind") == "Pod"],
        owners=[],
        service_accounts=cluster.get_json("serviceaccounts", "-n", namespace)["items"],
        namespaces=[cluster.get_json("namespace", namespace)],
        others=[],
        webhook_installed=False,
        warn=lambda _: None,
    )
    out = {}
    for a in assess(inp, "plan").pods:
        status = migration_status(a)
        out[a.name] = {k: v for k, v in status.items() if v is not None}
    return out


def _number(name: str) -> int:
    last = name.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else 0


def nmisim_events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")[
        "items"
    ]
    ours = [e for e in items if e.get("source", {}).get("component") == "nmisim"]
    # Creation times have one-second resolution; a pod Event's name ends with its transition number.
    ours.sort(key=lambda e: (e["metadata"]["creationTimestamp"], _number(e["metadata"]["name"])))
    return [e["reason"] for e in ours]


def running(cluster: Cluster, namespace: str, *names: str) -> None:
    def check() -> bool:
        pods = {p["metadata"]["name"]: p for p in cluster.get_json("pods", "-n", namespace)["items"]}
        return all(pods.get(n, {}).get("status", {}).get("podIP") for n in names)

    eventually(check, timeout=60, what=f"pods {names} running")


def test_verdicts_status_and_events_agree_with_the_engine(
    cluster: Cluster, operator: OperatorProcess | None, namespace: str
) -> None:
    apply(
        cluster,
        namespace,
        exception("platform", {"team": "Platform", "unused": "x"}),
        # Bindings match across namespaces (as in NMI): a selector of this test's own.
        *identity_and_binding("web-id", selector := f"web-{namespace[-6:]}"),
        pod("exempt-pod", {"team": "platform"}),  # value compared case-insensitively
        pod("denied-pod"),
        pod("bound-pod", {"aadpodidbinding": selector}),
        pod("hostnet-pod", host_network=True),
    )
    running(cluster, namespace, "exempt-pod", "denied-pod", "bound-pod", "hostnet-pod")
    wait_verdict(cluster, namespace, "exempt-pod", verdict="exempt", exception="platform")
    wait_verdict(cluster, namespace, "denied-pod", verdict="intercepted", token=404)
    bound = wait_verdict(cluster, namespace, "bound-pod", verdict="intercepted", token=200)
    assert bound["tokenRequest"]["identity"] == f"{namespace}/web-id"
    wait_verdict(cluster, namespace, "hostnet-pod", verdict="bypass")
    settle(operator or InClusterOperator(cluster))

    # The stored verdicts are exactly what `nmisim evaluate` says about the same objects.
    dump = cluster.kubectl(
        "get",
        "pods,azurepodidentityexceptions,azureidentities,azureidentitybindings",
        "-n",
        namespace,
        "-o",
        "yaml",
    ).stdout
    proc = subprocess.run(
        [NMISIM, "evaluate", "-f", "-", "-o", "json"], input=dump, capture_output=True, text=True, check=True
    )
    for result in json.loads(proc.stdout)["results"]:
        stored = verdict(cluster, namespace, result["name"])
        assert stored is not None
        # evaluate's report adds where a result comes from and each finding's severity and gate state
        expected = {k: v for k, v in result.items() if k not in ("namespace", "name", "workload", "source")}
        expected["findings"] = [{"code": f["code"], "message": f["message"]} for f in expected["findings"]]
        got = {k: v for k, v in stored.items() if k not in BOOKKEEPING and k != MIGRATION}
        expected["tokenRequest"] = {k: v for k, v in expected["tokenRequest"].items() if v is not None}
        expected = {k: v for k, v in expected.items() if v is not None}
        assert got == expected, result["name"]

    # Each verdict's status.migration is what the migration engine says of the same objects read live (as
    # `nmisim migrate` reads them): one workload per bare pod, in plan mode.
    migration = engine_migration(cluster, namespace, dump)
    assert sorted(migration) == ["bound-pod", "denied-pod", "exempt-pod", "hostnet-pod"]
    for name, expected_migration in migration.items():
        stored = verdict(cluster, namespace, name)
        assert stored is not None and stored.get(MIGRATION) == expected_migration, name

    exc = cluster.get_json("azurepodidentityexception", "platform", "-n", namespace)["status"]
    assert (exc["matchedPods"], exc["matchedPodsSample"]) == (1, ["exempt-pod"])
    ready = exc["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "PodsExempted")
    assert exc["observedGeneration"] == 1

    # Exactly one Event per pod, with the reason of its verdict.
    assert nmisim_events(cluster, namespace, "exempt-pod") == ["IMDSExempted"]
    assert nmisim_events(cluster, namespace, "denied-pod") == ["IMDSDenied"]
    assert nmisim_events(cluster, namespace, "bound-pod") == ["IMDSIntercepted"]
    assert nmisim_events(cluster, namespace, "hostnet-pod") == ["IMDSBypassed"]
    # The exception may be seen before its pods: then it first matched nothing. Either way one Event per
    # transition, ending with the pods matched.
    assert nmisim_events(cluster, namespace, "platform") in (
        ["ExceptionMatchesPods"],
        ["ExceptionMatchesNoPods", "ExceptionMatchesPods"],
    )

    # Nothing was written to the pods: no kopf annotations, no finalizers.
    for p in cluster.get_json("pods", "-n", namespace)["items"]:
        meta = p["metadata"]
        assert not meta.get("finalizers"), meta["name"]
        assert not [a for a in meta.get("annotations", {}) if "kopf" in a], meta["name"]
    # Each verdict is owned by its pod, so the garbage collector removes it with the pod.
    v = cluster.get_json("nmiverdict", "bound-pod", "-n", namespace)
    owner = v["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Pod", "bound-pod")
    if operator is not None:
        assert operator.errors_in_log() == []


def test_label_change_and_exception_lifecycle_flip_the_verdict(
    cluster: Cluster, operator: OperatorProcess | None, namespace: str
) -> None:
    apply(cluster, namespace, pod("p"))
    running(cluster, namespace, "p")
    wait_verdict(cluster, namespace, "p", verdict="intercepted", token=404)
    apply(cluster, namespace, exception("exc", {"app": "legacy"}))
    eventually(
        lambda: cluster.get_json("apie", "exc", "-n", namespace).get("status", {}).get("conditions"),
        what="exception status",
    )
    exc = cluster.get_json("apie", "exc", "-n", namespace)["status"]
    assert (exc["matchedPods"], exc["conditions"][0]["reason"]) == (0, "NoMatchingPods")

    cluster.kubectl("label", "pod", "p", "app=LEGACY", "-n", namespace)
    wait_verdict(cluster, namespace, "p", verdict="exempt", exception="exc")
    eventually(lambda: cluster.get_json("apie", "exc", "-n", namespace)["status"]["matchedPods"] == 1)

    cluster.kubectl("delete", "apie", "exc", "-n", namespace)
    wait_verdict(cluster, namespace, "p", verdict="intercepted", token=404)
    settle(operator or InClusterOperator(cluster))
    assert nmisim_events(cluster, namespace, "p") == ["IMDSDenied", "IMDSExempted", "IMDSDenied"]
    assert nmisim_events(cluster, namespace, "exc") == ["ExceptionMatchesNoPods", "ExceptionMatchesPods"]

    cluster.kubectl("delete", "pod", "p", "-n", namespace, "--wait=true")
    eventually(lambda: verdict(cluster, namespace, "p") is None, what="verdict removed with its pod")


def test_restart_with_nothing_changed_writes_nothing(
    cluster: Cluster, operator: OperatorProcess | None, namespace: str
) -> None:
    if operator is None:
        pytest.skip("restarts the operator process")
    apply(cluster, namespace, exception("e", {"app": "a"}), pod("a", {"app": "a"}), pod("b"))
    running(cluster, namespace, "a", "b")
    wait_verdict(cluster, namespace, "a", verdict="exempt")
    wait_verdict(cluster, namespace, "b", verdict="intercepted")
    # Other tests' namespaces are still being deleted: a real change that the restarted operator would
    # rightly count in the SimulationConfig totals. Wait for a cluster at rest first.
    eventually(
        lambda: (
            not [
                n
                for n in cluster.get_json("namespaces")["items"]
                if n["status"].get("phase") == "Terminating"
            ]
        ),
        timeout=120,
        what="no namespace terminating",
    )
    settle(operator)
    before = {n: nmisim_events(cluster, namespace, n) for n in ("a", "b", "e")}
    operator.restart()  # returns once the new process logged "seeded:"
    seeded = operator.seeded()
    # it has seen this test's objects (and whatever else the cluster holds)
    assert seeded["pods"] >= 2 and seeded["exceptions"] >= 1 and seeded["verdicts"] >= 2, seeded
    # "nothing written" only counts once it has done what seeding queued: not "not started yet"
    eventually(operator.caught_up, timeout=60, what=f"the restarted operator done with {seeded}")
    assert operator.writes_by_kind() == {}
    assert {n: nmisim_events(cluster, namespace, n) for n in ("a", "b", "e")} == before
    print(f"restart: 0 writes, events unchanged {before}")


def test_drifted_or_deleted_verdict_is_put_back_without_new_events(
    cluster: Cluster, operator: OperatorProcess | None, namespace: str
) -> None:
    apply(cluster, namespace, pod("p"))
    running(cluster, namespace, "p")
    wait_verdict(cluster, namespace, "p", verdict="intercepted")
    settle(operator or InClusterOperator(cluster))
    cluster.kubectl(
        "patch", "nmiverdict", "p", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"verdict": "bypass", "findings": []}}),
    )  # fmt: skip
    wait_verdict(cluster, namespace, "p", verdict="intercepted")
    cluster.kubectl("delete", "nmiverdict", "p", "-n", namespace)
    wait_verdict(cluster, namespace, "p", verdict="intercepted", token=404)
    settle(operator or InClusterOperator(cluster))
    assert nmisim_events(cluster, namespace, "p") == ["IMDSDenied"]


def test_simulation_config_change_reevaluates_every_pod(
    cluster: Cluster, operator: OperatorProcess | None, namespace: str
) -> None:
    apply(cluster, namespace, exception("e", {"app": "a"}), pod("a", {"app": "a"}))
    running(cluster, namespace, "a")
    # No identity on the VM: IMDS refuses, NMI answers the exempt pod 403.
    wait_verdict(cluster, namespace, "a", verdict="exempt", token=403)
    patch = {"spec": {"imds": {"systemAssigned": True}}}
    cluster.kubectl("patch", "simulationconfig", "default", "--type=merge", "-p", json.dumps(patch))
    try:
        st = wait_verdict(cluster, namespace, "a", verdict="exempt", token=200)
        assert st["tokenRequest"]["servedBy"] == "imds"
        cfg = cluster.get_json("simulationconfig", "default")["status"]
        assert cfg["totals"]["pods"] >= 1 and cfg["conditions"][0]["status"] == "True"
    finally:
        undo = {"spec": {"imds": {"systemAssigned": False}}}
        cluster.kubectl("patch", "simulationconfig", "default", "--type=merge", "-p", json.dumps(undo))
    wait_verdict(cluster, namespace, "a", verdict="exempt", token=403)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _expectation(path: Path) -> tuple[str, bool]:
    lines = path.read_text().splitlines()
    expect = lines[0].removeprefix("# expect:").strip() if lines[0].startswith("# expect:") else ""
    return expect, any(line.strip() == "# subresource: status" for line in lines[:5])


@pytest.mark.parametrize("path", sorted((FIXTURES / "crd-invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_crd_schema_rejects_invalid_objects(installed: Cluster, namespace: str, path: Path) -> None:
    expect, status = _expectation(path)
    assert expect, f"{path.name} needs an '# expect:' line"
    cluster = installed
    if status:
        obj = yaml.safe_load(path.read_text())
        # A finalizer holds the object: the operator deletes NMIVerdicts that belong to no pod.
        held = {k: v for k, v in obj.items() if k != "status"}
        held["metadata"] = {**held["metadata"], "finalizers": ["test.nmisim.dev/hold"]}
        cluster.apply(yaml.safe_dump(held), namespace)
        try:
            proc = cluster.kubectl(
                "replace", "--subresource=status", "-n", namespace, "-f", str(path), check=False
            )
        finally:
            release = '{"metadata":{"finalizers":null}}'
            kind, name = obj["kind"].lower(), obj["metadata"]["name"]
            cluster.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", release, check=False)
    else:
        proc = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expect in proc.stderr, proc.stderr
    print(f"{path.stem}: rejected: {proc.stderr.strip().splitlines()[-1][:160]}")


@pytest.mark.parametrize("path", sorted((FIXTURES / "crd-valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_crd_schema_accepts_odd_but_valid_objects(installed: Cluster, namespace: str, path: Path) -> None:
    proc = installed.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode == 0, proc.stderr


def test_service_account_is_least_privilege(installed: Cluster) -> None:
    sa = "--as=system:serviceaccount:nmisim-system:nmisim"

    def can(*args: str) -> bool:
        return installed.kubectl("auth", "can-i", *args, sa, check=False).stdout.strip() == "yes"

    assert can("watch", "pods", "--all-namespaces")
    assert can("create", "nmiverdicts.nmisim.dev", "-n", "any")
    assert can("patch", "azurepodidentityexceptions.aadpodidentity.k8s.io", "--subresource=status", "-n", "x")
    assert can("create", "events", "-n", "any")
    for verb, resource in [
        ("patch", "pods"), ("update", "pods"), ("delete", "pods"), ("create", "pods"),
        ("get", "secrets"), ("list", "secrets"),
        ("patch", "azurepodidentityexceptions.aadpodidentity.k8s.io"),
        ("delete", "azureidentities.aadpodidentity.k8s.io"),
        ("create", "deployments.apps"), ("patch", "configmaps"),
    ]:  # fmt: skip
        assert not can(verb, resource, "-n", "default"), f"may {verb} {resource}"
    listing = installed.kubectl("auth", "can-i", "--list", sa).stdout
    assert "*" not in listing.split("\n", 1)[1].split(), listing


def test_deployment_passes_pod_security_restricted(installed: Cluster, namespace: str) -> None:
    cluster = installed
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("create", "serviceaccount", "nmisim", "-n", namespace)
    rendered = cluster.kubectl("kustomize", str(Path(__file__).resolve().parents[2] / "manifests")).stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod_obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check"}, "spec": template["spec"]}
    ok = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod_obj), check=False
    )
    assert ok.returncode == 0, ok.stderr
    container["securityContext"]["allowPrivilegeEscalation"] = True
    bad = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod_obj), check=False
    )
    assert bad.returncode != 0 and "restricted" in bad.stderr, bad.stderr
