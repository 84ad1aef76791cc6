"""`make demo`'s last part, where the real node runs: the node agent (`kubectl apply -k manifests/nmi/`)
answers live requests from three real pods shaped like the sample's (one bound to shop's identity, one
with no identity, one AKS add-on in kube-system that the default exception exempts). Each pod runs
`curl` at 169.254.169.254 through NMI's DNAT; beside each answer, what `nmisim request --cluster`
predicts for the same pod. The unbound pod's request is held as NMI holds it (80 s at NMI's defaults),
in the background while the other two are answered.

    .venv/bin/python hack/demo_live.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from realpod import clients_pod
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
KUBECTL = shutil.which("kubectl", path=str(BIN)) or "kubectl"
NMISIM = str(BIN / "nmisim")
URL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
LIVE = {"app.kubernetes.io/part-of": "nmisim-demo-live"}
#: (namespace, name, labels, what the sample says about such a pod)
PODS = (
    ("shop", "live-web", {"aadpodidbinding": "shop-web"}, "bound: shop's web-identity"),
    ("shop", "live-unbound", {"app": "live-unbound"}, "no identity"),
    ("kube-system", "live-addon", {"kubernetes.azure.com/managedby": "aks"}, "AKS add-on, exempt"),
)
# A log (no terminal) gets the table 120 columns wide, not rich's default 80.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def say(msg: str) -> None:
    console.print(f"[bold]\\[demo][/bold] {msg}")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def pod(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return clients_pod(
        name,
        {**labels, **LIVE},
        namespace=namespace,
        container="app",
        securityContext={"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False},
    )


def curl_argv(namespace: str, name: str) -> list[str]:
    """kubectl's arguments for curl's token request from the pod, its time appended to the answer."""
    return ["exec", "-n", namespace, name, "--", "curl", "-s", "-i", "--max-time", "200",
            "-H", "Metadata:true", "-w", "\n@@%{time_total}", URL]  # fmt: skip


def parse(out: str) -> dict[str, Any]:
    response, _, took = out.rpartition("\n@@")
    head, _, body = response.partition("\n\n")
    status = int(head.split()[1]) if head.startswith("HTTP/") else 0
    return {"status": status, "body": body, "seconds": float(took or 0)}


def predicted(namespace: str, name: str) -> dict[str, Any]:
    out = subprocess.run(
        [NMISIM, "request", "--cluster", "--pod", f"{namespace}/{name}", "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def short(body: str, width: int = 44) -> str:
    body = " ".join(body.split())
    return body if len(body) <= width else body[: width - 1] + "…"


def main() -> int:
    say("the node agent: kubectl apply -k manifests/nmi/ (nmisim serve as NMI's DaemonSet)")
    kubectl("apply", "-k", str(ROOT / "manifests" / "nmi"))
    kubectl("-n", "nmisim-agent", "rollout", "status", "daemonset/nmisim-agent", "--timeout=120s")
    for ns, name, _, _ in PODS:
        kubectl("delete", "pod", name, "-n", ns, "--ignore-not-found", "--wait=true")
    say("three real pods on the real node, shaped like the sample's (image nmisim-clients:dev: curl, SDKs)")
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [pod(ns, n, labels) for ns, n, labels, _ in PODS],
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    for ns, name, _, _ in PODS:
        kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", ns, "--timeout=90s")
    # The agent sees a pod once the API server has its IP; the bound pod's 200 says it is known.
    deadline = time.monotonic() + 60
    while parse(kubectl(*curl_argv("shop", "live-web"), check=False))["status"] != 200:
        if time.monotonic() > deadline:
            raise SystemExit("demo: the agent did not answer the bound pod within 60 s")
        time.sleep(0.5)

    wants = {(ns, n): predicted(ns, n) for ns, n, _, _ in PODS}
    waiting = {(ns, n): subprocess.Popen([KUBECTL, *curl_argv(ns, n)], stdout=subprocess.PIPE, text=True)
               for ns, n, _, _ in PODS}  # fmt: skip
    longest = max(w["waitSeconds"] for w in wants.values())
    say(f"curl from each pod at once; NMI holds the unbound pod's request {longest:.0f} s, as real NMI does")
    columns = (TextColumn("  waiting for NMI's answers"), BarColumn(bar_width=30), TimeElapsedColumn())
    started = time.monotonic()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("wait", total=longest)
        while any(p.poll() is None for p in waiting.values()):
            bar.update(task, completed=min(time.monotonic() - started, longest))
            time.sleep(0.2)
    got = {key: parse(p.communicate()[0]) for key, p in waiting.items()}

    table = Table(title="Live requests from real pods (curl → 169.254.169.254 → NMI's DNAT → nmisim serve)")
    for col in ("pod", "sample", "live answer", "after", "nmisim request predicts", "same"):
        table.add_column(col, no_wrap=col != "live answer")
    same_all = True
    for ns, name, _, what in PODS:
        g, w = got[(ns, name)], wants[(ns, name)]
        same = g["status"] == w["status"] and g["body"] == w["body"]
        same_all &= same
        table.add_row(
            f"{ns}/{name}",
            what,
            f"{g['status']} {short(g['body'])}",
            f"{g['seconds']:.1f} s",
            f"{w['status']} after {w['waitSeconds']:g} s",
            "[green]yes[/green]" if same else "[red]NO[/red]",
        )
    console.print(table)
    console.print(f"  Try it:  kubectl exec -n shop live-web -- curl -s -H Metadata:true '{URL}'")
    console.print("           nmisim request --cluster --pod shop/live-web")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
