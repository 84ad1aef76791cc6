"""Helpers of the fault tests: operators to kill, convergence checked against ``nmisim evaluate``, Events.

Each test reports one line ``FAULT <name>: <what was injected>; <figure observed>`` (see :func:`report`);
the lines are printed as they happen and again in pytest's terminal summary.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nmisim.controller import status as S
from tests.support import (
    CLUSTER_DIR,
    Cluster,
    OperatorProcess,
    eventually,
)

NMISIM = str(Path(sys.executable).parent / "nmisim")
BOOKKEEPING = {"observedPodResourceVersion", "lastTransitionTime", "transitions", "podUID"}
#: status.migration is the migration engine's answer, not evaluate's: checked apart (a class per phase)
MIGRATION = "migration"
MIGRATION_CLASSES = {
    "blocked-at-admission",
    "loses-access",
    "different-identity",
    "gains-access",
    "same-identity",
    "unaffected",
}
REPORT: list[str] = []


def report(name: str, injected: str, figure: str) -> str:
    line = f"FAULT {name}: {injected}; {figure}"
    REPORT.append(line)
    print(f"\n{line}", flush=True)
    return line


# --- the operator under test ------------------------------------------------------------------------------


class Operator(OperatorProcess):
    """``nmisim run`` that can be killed at any moment: readiness counts seedings since its own start."""

    def start(self, wait: bool = True) -> None:
        self._seeded_before = self.seeded_count()
        if "--peering" in self.extra:  # a replica among others: no --standalone
            env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
            cmd = [NMISIM, "run", "--all-namespaces", f"--metrics-port={self.metrics_port}", *self.extra]
            with self.log.open("ab") as out:
                out.write(f"\n===== start: {' '.join(cmd)}\n".encode())
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            self.starts += 1
        else:
            super().start(wait=False)
        if wait:
            self.wait_seeded()

    def seeded_count(self) -> int:
        return self.log.read_text(errors="replace").count("seeded:") if self.log.exists() else 0

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}; log: {self.log}")
        return self.seeded_count() > self._seeded_before

    def wait_seeded(self, timeout: float = 90) -> None:
        eventually(self.ready, timeout=timeout, what=f"operator seeded (log: {self.log})")

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / 100.0

    def tracebacks(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if "Traceback" in line]


# --- objects ----------------------------------------------------------------------------------------------


def apply(cluster: Cluster, namespace: str, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objs), timeout=120)


def deployment(cluster: Cluster, namespace: str, name: str, replicas: int, labels: dict[str, str]) -> None:
    """A Deployment of ``replicas`` pods (the fast way to get a burst of pods)."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"burst": name}},
            "template": {
                "metadata": {"labels": {"burst": name, **labels}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }
    apply(cluster, namespace, body)


def pods_running(cluster: Cluster, namespace: str, count: int, timeout: float = 180) -> None:
    def check() -> bool:
        items = cluster.get_json("pods", "-n", namespace)["items"]
        up = [p for p in items if p["status"].get("podIP") and "deletionTimestamp" not in p["metadata"]]
        return len(up) == count == len(items)

    eventually(check, timeout=timeout, interval=1, what=f"{count} pods running in {namespace}")


# --- convergence: the stored answers against `nmisim evaluate` on the same objects ------------------------


def _normalise_expected(result: dict[str, Any]) -> dict[str, Any]:
    # evaluate's report adds where a result comes from and each finding's severity and gate state
    expected = {k: v for k, v in result.items() if k not in ("namespace", "name", "workload", "source")}
    found = expected.get("findings", [])
    expected["findings"] = [{"code": f["code"], "message": f["message"]} for f in found]
    expected["tokenRequest"] = {k: v for k, v in expected["tokenRequest"].items() if v is not None}
    return {k: v for k, v in expected.items() if v is not None}


def mismatches(cluster: Cluster, namespaces: Iterable[str]) -> list[str]:
    """Everything the operator's answers in these namespaces get wrong, as readable lines; [] when none.

    Checks: every pod has an NMIVerdict for its own uid equal to ``nmisim evaluate --cluster``; there is no
    NMIVerdict without its pod; each exception's ``matchedPods`` is what the verdicts say."""
    wanted = set(namespaces)
    proc = subprocess.run(
        [NMISIM, "evaluate", "--cluster", "--kubeconfig", str(cluster.kubeconfig), "-o", "json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    expected = {
        (r["namespace"], r["name"]): r for r in json.loads(proc.stdout)["results"] if r["namespace"] in wanted
    }
    pods = {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["uid"]
        for p in cluster.get_json("pods", "-A")["items"]
        if p["metadata"]["namespace"] in wanted
    }
    verdicts = {
        (v["metadata"]["namespace"], v["metadata"]["name"]): v
        for v in cluster.get_json("nmiverdicts", "-A")["items"]
        if v["metadata"]["namespace"] in wanted
    }
    out: list[str] = []
    for key, result in sorted(expected.items()):
        v = verdicts.get(key)
        if v is None:
            out.append(f"{key}: no verdict")
            continue
        status = v.get("status") or {}
        if status.get("podUID") != pods.get(key):
            out.append(f"{key}: verdict of another pod ({status.get('podUID')})")
            continue
        got = {k: val for k, val in status.items() if k not in BOOKKEEPING and k != MIGRATION}
        if got != _normalise_expected(result):
            out.append(f"{key}: {got.get('verdict')} != {result['verdict']}")
        migration = status.get(MIGRATION)
        if migration is not None and set((migration.get("class") or {}).values()) - MIGRATION_CLASSES:
            out.append(f"{key}: migration class {migration.get('class')}")
    out.extend(f"{key}: verdict without pod" for key in sorted(set(verdicts) - set(pods)))
    exempting: dict[tuple[str, str], int] = defaultdict(int)
    for (ns, _), r in expected.items():
        if r["verdict"] == "exempt":
            for name in r["exceptions"]:
                exempting[(ns, name)] += 1
    for e in cluster.get_json("azurepodidentityexceptions", "-A")["items"]:
        key = (e["metadata"]["namespace"], e["metadata"]["name"])
        if key[0] in wanted:
            matched = (e.get("status") or {}).get("matchedPods")
            if matched != exempting.get(key, 0):
                out.append(f"exception {key}: matchedPods {matched} != {exempting.get(key, 0)}")
    return out


def converge(cluster: Cluster, namespaces: Iterable[str], timeout: float = 60) -> float:
    """Wait until :func:`mismatches` is empty; return the seconds it took."""
    names = list(namespaces)
    started = time.monotonic()
    last: list[str] = []

    def done() -> bool:
        nonlocal last
        last = mismatches(cluster, names)
        return not last

    try:
        eventually(done, timeout=timeout, interval=1, what="verdicts equal to nmisim evaluate")
    except AssertionError as exc:
        raise AssertionError(f"not converged after {timeout}s: {len(last)} wrong, e.g. {last[:8]}") from exc
    return time.monotonic() - started


# --- Events ------------------------------------------------------------------------------------------------


def _transition(event: dict[str, Any]) -> int:
    last = event["metadata"]["name"].rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else 0


@dataclass
class EventAudit:
    """The operator's pod Events in some namespaces, per pod uid, in transition order."""

    by_uid: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    total: int = 0
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[int, int]:
        """How many pods had 1, 2, ... Events."""
        out: dict[int, int] = defaultdict(int)
        for seq in self.by_uid.values():
            out[len(seq)] += 1
        return dict(sorted(out.items()))


def audit_events(cluster: Cluster, namespaces: Iterable[str]) -> EventAudit:
    """Check that each transition of each existing pod was announced once: no reason repeated back to back
    (a transition announced twice), numbers strictly increasing, the last one the verdict's own reason."""
    audit = EventAudit()
    names = set(namespaces)
    verdicts = {
        (v.get("status") or {}).get("podUID"): v for v in cluster.get_json("nmiverdicts", "-A")["items"]
    }
    for ns in sorted(names):
        for e in cluster.get_json("events", "-n", ns)["items"]:
            if e.get("source", {}).get("component") != "nmisim" or e["involvedObject"].get("kind") != "Pod":
                continue
            audit.by_uid.setdefault(e["involvedObject"]["uid"], []).append((_transition(e), e["reason"]))
            audit.total += 1
    for uid, seq in audit.by_uid.items():
        seq.sort()
        numbers = [n for n, _ in seq]
        reasons = [r for _, r in seq]
        if len(set(numbers)) != len(numbers):
            audit.problems.append(f"{uid}: transition numbers repeated {seq}")
        if any(a == b for a, b in itertools.pairwise(reasons)):
            audit.problems.append(f"{uid}: same transition announced twice {seq}")
        v = verdicts.get(uid)
        if v is not None and S.event_reason(v.get("status")) not in (None, reasons[-1]):
            st = v["status"]
            audit.problems.append(
                f"{uid}: Events {seq}, verdict {st.get('verdict')} (transition {st.get('transitions')})"
            )
    return audit


# --- etcd ----------------------------------------------------------------------------------------------


def _etcd(path: str, body: dict[str, Any]) -> dict[str, Any]:
    ports = dict(
        line.split("=", 1) for line in (CLUSTER_DIR / "ports.env").read_text().splitlines() if "=" in line
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports['ETCD_PORT']}{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def etcd_compact() -> int:
    """Compact etcd to its current revision (physically): every older resourceVersion is gone."""
    rev = int(_etcd("/v3/kv/range", {"key": base64.b64encode(b"/registry/").decode()})["header"]["revision"])
    _etcd("/v3/kv/compaction", {"revision": str(rev), "physical": True})
    return rev
