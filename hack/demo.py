"""The second half of `make demo`: wait for the operator's verdicts on the sample cluster, then show them.

Reads what the operator wrote (NMIVerdicts, exception status) with kubectl, checks every sample pod
against examples/demo/expected.yaml, and prints a table, the findings and the next commands to try.
Exit 0 when every sample pod has the expected verdict, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
PART_OF = "app.kubernetes.io/part-of=nmisim-demo"
TTY = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def c(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


VERDICT_COLOUR = {"intercepted": "36", "exempt": "32", "bypass": "33", "inactive": "2"}


def kubectl(*args: str) -> Any:
    exe = shutil.which("kubectl", path=str(ROOT / ".venv" / "bin")) or "kubectl"
    out = subprocess.run([exe, *args, "-o", "json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def expected() -> dict[tuple[str, str], dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "examples" / "demo" / "expected.yaml").read_text())
    workloads = yaml.safe_load(doc["data"]["expected"])["workloads"]
    return {(w["namespace"], w["name"]): w for w in workloads}


def demo_pods() -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl("get", "pods", "-A", "-l", PART_OF)["items"]
    return pods


def verdicts() -> dict[tuple[str, str], dict[str, Any]]:
    items = kubectl("get", "nmiverdicts", "-A")["items"]
    return {(v["metadata"]["namespace"], v["metadata"]["name"]): v.get("status") or {} for v in items}


def progress() -> Progress:
    """The verdicts' progress bar: on a terminal only (a log gets the summary line that follows)."""
    return Progress(
        TextColumn("  verdicts"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("pods"),
        TimeElapsedColumn(),
        disable=not TTY,
    )


def matches(status: dict[str, Any], want: dict[str, Any]) -> bool:
    token = status.get("tokenRequest") or {}
    return (
        status.get("verdict") == want["verdict"]
        and token.get("status") == want["tokenStatus"]
        and sorted(status.get("exceptions") or []) == sorted(want["exceptions"])
    )


def wait(timeout: float) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    want = expected()
    started = time.monotonic()
    pods: list[dict[str, Any]] = []
    found: dict[tuple[str, str], dict[str, Any]] = {}
    print(c("Waiting for the operator's verdicts on the sample pods", "1"))
    with progress() as bar:
        task = bar.add_task("verdicts", total=None)
        while time.monotonic() - started < timeout:
            pods = demo_pods()
            found = verdicts()
            expected_pods = sum(
                daemonset_pods(w["namespace"], w["name"]) if w["pods"] == "nodes" else int(w["pods"])
                for w in want.values()
            )
            ready = [
                p for p in pods
                if (key := _workload(p)) in want
                and matches(found.get((p["metadata"]["namespace"], p["metadata"]["name"]), {}), want[key])
            ]  # fmt: skip
            bar.update(task, completed=len(ready), total=expected_pods)
            if len(ready) >= expected_pods and len(pods) >= expected_pods:
                break
            time.sleep(0.5)
    print(f"  {len(pods)} sample pods, verdicts in {time.monotonic() - started:.1f}s\n")
    return pods, found


def daemonset_pods(namespace: str, name: str) -> int:
    """The pods a sample DaemonSet runs: as many as its controller schedules (its nodeSelector keeps it
    off the real node), once the controller has seen its spec; until then one per node, to keep waiting."""
    ds = kubectl("get", "daemonset", name, "-n", namespace)
    status = ds.get("status") or {}
    if status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 1):
        return int(status.get("desiredNumberScheduled", 0))
    return len(kubectl("get", "nodes")["items"])


def _workload(pod: dict[str, Any]) -> tuple[str, str]:
    return pod["metadata"]["namespace"], pod["metadata"].get("labels", {}).get("app.kubernetes.io/name", "")


def report(pods: list[dict[str, Any]], found: dict[tuple[str, str], dict[str, Any]]) -> bool:
    want = expected()
    rows = [["NAMESPACE", "POD", "VERDICT", "EXCEPTION", "IDENTITY", "TOKEN", "WAIT", ""]]
    ok = True
    findings: dict[str, list[str]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for p in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        st = found.get((ns, name), {})
        token = st.get("tokenRequest") or {}
        good = _workload(p) in want and matches(st, want[_workload(p)])
        ok = ok and good
        verdict = st.get("verdict", "(none)")
        counts[verdict] += 1
        exc = st.get("exception") or ("(mic shortcut)" if st.get("micShortcut") else "-")
        ident = token.get("identity") or "-"
        if st.get("ambiguous"):
            ident += f" (+{len(st.get('identities', [])) - 1})"
        wait_s = token.get("waitSeconds") or 0
        rows.append([
            ns, name, verdict, exc, ident, str(token.get("status", "-")), f"{wait_s:g}s" if wait_s else "-",
            "ok" if good else "UNEXPECTED",
        ])  # fmt: skip
        for f in st.get("findings") or []:
            findings[f["code"]].append(f"{ns}/{name}: {f['message']}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(r, widths, strict=True)]
        if i == 0:
            print(c("   ".join(cells).rstrip(), "1"))
            continue
        cells[2] = c(cells[2], VERDICT_COLOUR.get(r[2], "31"))
        cells[7] = c(cells[7], "32" if r[7] == "ok" else "31;1")
        print("   ".join(cells).rstrip())
    print(
        f"\n{len(pods)} pods: {counts['intercepted']} intercepted, {counts['exempt']} exempt, "
        f"{counts['bypass']} bypass, {counts['inactive']} inactive"
    )
    print(c("\nFindings", "1"))
    for code in sorted(findings):
        print(f"  {c(code, '33')} ({len(findings[code])})")
        for line in findings[code][:2]:
            print(f"    {line}")
        if len(findings[code]) > 2:
            print(f"    … and {len(findings[code]) - 2} more")
    print(c("\nExceptions", "1"))
    for e in kubectl("get", "azurepodidentityexceptions", "-A")["items"]:
        st = e.get("status") or {}
        ready: dict[str, Any] = next((x for x in st.get("conditions", []) if x["type"] == "Ready"), {})
        where = f"{e['metadata']['namespace']}/{e['metadata']['name']}"
        print(
            f"  {where}: matches {st.get('matchedPods', '?')} pod(s)"
            f" — Ready={ready.get('status', '?')} ({ready.get('reason', '?')})"
        )
    return ok


def next_steps(pods: list[dict[str, Any]]) -> None:
    kubeconfig = os.environ.get("KUBECONFIG", str(ROOT / ".cluster" / "kubeconfig"))
    example = next((p for p in pods if p["metadata"]["namespace"] == "payments"), pods[0] if pods else None)
    target = (
        f"pod/{example['metadata']['name']} -n {example['metadata']['namespace']}" if example else "pod/NAME"
    )
    print(c("\nThe cluster and the operator keep running. Try:", "1"))
    print(f"  export KUBECONFIG={kubeconfig} PATH={ROOT / '.venv' / 'bin'}:$PATH")
    print("  kubectl get nmiverdicts -A                  # the operator's verdict per pod")
    print("  kubectl get azurepodidentityexceptions -A   # matched pods, Ready condition")
    print("  kubectl get events -A --field-selector reason=IMDSDenied")
    print(f"  kubectl nmisim explain {target}")
    print("  nmisim evaluate --cluster                   # the same answers, offline engine")
    print("  tail -f .cluster/logs/operator.log")
    print("Stop everything (cluster and operator): make cluster-down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    pods, found = wait(args.timeout)
    ok = report(pods, found)
    next_steps(pods)
    if not ok:
        print(c("\nSome sample pods do not have the expected verdict (see UNEXPECTED above).", "31;1"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
