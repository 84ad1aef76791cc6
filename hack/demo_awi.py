"""`make demo AWI=1`'s last part, where the real node runs: one pod before and after the move to Azure
Workload Identity, live. Before: shop's `live-web` (hack/demo_live.py) asks IMDS with azure-identity's
`ManagedIdentityCredential` and NMI (nmisim serve) answers with shop's web identity. After: the same
application as `live-wi`, migrated as `nmisim migrate` plans it (a ServiceAccount annotated with the
identity's client ID, the federated credential, the `azure.workload.identity/use` label), admitted by AWI
v1.6.0's real webhook (hack/awi-up.sh), asks with `WorkloadIdentityCredential` and gets its token from the
simulated Entra (`nmisim entra`). Beside each answer, what `nmisim request` predicts for the same pod.

    .venv/bin/python hack/demo_awi.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from realpod import clients_pod
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
KUBECTL = shutil.which("kubectl", path=str(BIN)) or "kubectl"
NMISIM = str(BIN / "nmisim")
NS, BEFORE, AFTER = "shop", "live-web", "live-wi"
BINDING = {"aadpodidbinding": "shop-web"}
LIVE = {"app.kubernetes.io/part-of": "nmisim-demo-live"}
ISSUER = "https://kubernetes.default.svc"  # hack/cluster.sh: the API server's service-account issuer
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def say(msg: str) -> None:
    console.print(f"[bold]\\[demo][/bold] {msg}")


def run(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(
            f"demo: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:4]))} "
            f"failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
        )
    return proc.stdout


def kubectl(*args: str, stdin: str | None = None) -> str:
    return run(KUBECTL, *args, stdin=stdin)


def sdk(pod: str, *argv: str) -> dict[str, Any]:
    out = kubectl("exec", "-n", NS, pod, "--", *argv)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def identity_of(answer: dict[str, Any]) -> str:
    """Whom the SDK's token names: a JWT's appid (the simulated Entra's), else NMI's fake token's suffix."""
    if not answer.get("ok"):
        return f"no token ({answer.get('error')})"
    if answer.get("claims"):
        return str(answer["claims"].get("appid"))
    return str(answer.get("token", "")).rpartition(".")[2]


def wait_for_credentials(metrics_url: str, count: int, timeout: float = 30) -> None:
    """Until the simulated Entra has re-read its directory (every 2 s; real Entra takes seconds to minutes
    to propagate a new federated credential, and an exchange before that gets AADSTS70021)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("nmisim_entra_federated_credentials ") and float(line.split()[1]) >= count:
                    return
        time.sleep(0.5)
    raise SystemExit(
        f"demo: the simulated Entra did not load {count} federated credentials in {timeout:.0f} s"
    )


def main() -> int:
    env = dict(
        line.split("=", 1)
        for line in run(str(ROOT / "hack" / "awi-up.sh"), "env").splitlines()
        if "=" in line
    )
    ident = json.loads(kubectl("get", "azureidentity", "web-identity", "-n", NS, "-o", "json"))
    client_id = ident["spec"]["clientID"]
    say(f"before: {NS}/{BEFORE} asks IMDS with azure-identity's ManagedIdentityCredential (NMI answers)")
    before = sdk(BEFORE, "azpy", "mi")
    today = json.loads(run(NMISIM, "request", "--cluster", "--pod", f"{NS}/{BEFORE}", "-o", "json"))

    say(
        f"the migration of one pod, as nmisim migrate plans it: ServiceAccount {AFTER} with "
        f"azure.workload.identity/client-id={client_id}, its federated credential, the use label"
    )
    spec = json.loads(kubectl("get", "simulationconfig", "default", "-o", "json"))["spec"]
    wi = spec.setdefault("workloadIdentity", {})
    wi["issuer"], wi["tenantID"] = ISSUER, env["AWI_TENANT_ID"]
    subject = f"system:serviceaccount:{NS}:{AFTER}"
    creds = [c for c in wi.get("federatedCredentials", []) if c.get("subject") != subject]
    wi["federatedCredentials"] = [
        *creds,
        {"clientID": client_id, "name": AFTER, "issuer": ISSUER, "subject": subject},
    ]
    kubectl(
        "patch",
        "simulationconfig",
        "default",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec", "value": spec}]),
    )
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": AFTER,
            "namespace": NS,
            "annotations": {"azure.workload.identity/client-id": client_id},
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(sa))
    wait_for_credentials(env["ENTRA_METRICS"], len(wi["federatedCredentials"]))
    kubectl("delete", "pod", AFTER, "-n", NS, "--ignore-not-found", "--wait=true")
    pod = clients_pod(
        AFTER,
        {**BINDING, **LIVE, "azure.workload.identity/use": "true"},
        namespace=NS,
        container="app",
        securityContext={"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False},
    )
    pod["spec"]["serviceAccountName"] = AFTER
    # the pod reaches the simulated Entra as login.microsoftonline.com (the node's bridge), nothing else
    pod["spec"]["hostAliases"] = [
        {"ip": env["ENTRA_ADDRESS"].split(":")[0], "hostnames": [env["ENTRA_HOST"]]}
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kubectl("wait", "--for=condition=Ready", f"pod/{AFTER}", "-n", NS, "--timeout=90s")
    admitted = json.loads(kubectl("get", "pod", AFTER, "-n", NS, "-o", "json"))
    injected = sorted(e["name"] for e in admitted["spec"]["containers"][0].get("env", []))
    say(f"the real webhook injected {', '.join(injected)}")
    say(f"after: {NS}/{AFTER} asks with WorkloadIdentityCredential (the simulated Entra answers)")
    after = sdk(AFTER, "azpy", "wi")
    planned = json.loads(
        run(
            NMISIM,
            "request",
            "--cluster",
            "--pod",
            f"{NS}/{AFTER}",
            "-o",
            "json",
            "--after",
            "--verify",
            "--phase",
            "removed",
        )
    )["after"]

    table = Table(title=f"One pod before and after the migration (shop's web identity {client_id})")
    for col in ("", "pod", "asks", "token for (client ID)", "nmisim request predicted"):
        table.add_column(col, no_wrap=True)
    rows = (
        ("before", BEFORE, "IMDS → NMI", identity_of(before), today),
        ("after", AFTER, "Entra (simulated)", identity_of(after), planned),
    )
    same_all = True
    for when, name, how, got, want in rows:
        # NMI's simulated token names the client ID after its last dot; Entra's names it in appid
        token = str(json.loads(want.get("body") or "{}").get("access_token", ""))
        want_id = (token.rpartition(".")[2] if when == "before" else str(want.get("identity") or "")).lower()
        same = want.get("status") == 200 and got.lower() == want_id
        same_all &= same
        table.add_row(
            when,
            f"{NS}/{name}",
            how,
            got,
            "[green]the same[/green]" if same else f"[red]{want.get('status')} {want_id}[/red]",
        )
    console.print(table)
    console.print(f"  Try it:  kubectl exec -n {NS} {AFTER} -- azpy wi")
    console.print(f"           nmisim request --cluster --pod {NS}/{AFTER} --after --verify")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
