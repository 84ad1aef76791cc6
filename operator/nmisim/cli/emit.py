"""``nmisim migrate --emit DIR``: the plan as files a person reviews and applies (docs/migration.md "--emit").

- ``serviceaccounts.yaml``: the ServiceAccounts to create, and the annotations to add to existing ones;
- ``patches/<kind>-<namespace>-<name>.yaml``: a strategic-merge patch per workload's pod template (the
  ``azure.workload.identity/use`` label, ``serviceAccountName``, the proxy annotation where planned);
- ``recreate/<kind>-<namespace>-<name>.yaml``: Jobs and bare Pods, whose pod templates cannot be changed in
  place: the object with the patch applied, to ``kubectl replace --force`` (live clusters only);
- ``kustomization.yaml``: from files, the input files (copied under ``base/``) with the patches and the
  ServiceAccounts; ``kubectl kustomize DIR`` is the migrated manifests;
- ``federated-credentials.sh``: the ``az`` commands that create the federated credentials;
- ``simulationconfig-patch.yaml``: the same credentials recorded in SimulationConfig, the simulated Entra's
  record, so that ``nmisim migrate --verify`` (and the operator) know they exist;
- ``apply.sh``: applies the above to the cluster (kubectl), ``cleanup.sh``: the clean-up, commented out.

Nothing is applied by nmisim itself.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from nmisim.engine.config import CONFIG_NAME
from nmisim.engine.migration.assess import MigrationInput, Report
from nmisim.engine.migration.objects import INJECT_PROXY_ANNOTATION, USE_LABEL
from nmisim.engine.migration.plan import SA_KEEP, WorkloadPlan
from nmisim.engine.workloads import API_VERSIONS
from nmisim.sources.files import LoadError, expand_paths

#: kinds whose pod template cannot be patched in place
_RECREATE: Final = ("Job", "Pod")
#: server-set fields dropped before a replace --force
_SERVER_FIELDS: Final = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
)
_JOB_LABELS: Final = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)


def _template_patch(plan: WorkloadPlan) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {USE_LABEL: "true"}}
    if plan.proxy:
        meta["annotations"] = {INJECT_PROXY_ANNOTATION: "true"}
    return {"metadata": meta, "spec": {"serviceAccountName": plan.service_account}}


def workload_patch(plan: WorkloadPlan) -> dict[str, Any]:
    """The strategic-merge patch of the workload (for a Pod: of the pod itself)."""
    tpl = _template_patch(plan)
    kind = plan.workload.kind
    if kind == "Pod":
        return tpl
    if kind == "CronJob":
        return {"spec": {"jobTemplate": {"spec": {"template": tpl}}}}
    if kind == "PodTemplate":
        return {"template": tpl}
    return {"spec": {"template": tpl}}


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(patch)


def recreated(obj: Mapping[str, Any], plan: WorkloadPlan) -> dict[str, Any]:
    """A Job or Pod as read, with the patch applied and the server's fields dropped (for replace --force)."""
    out: dict[str, Any] = _merge(obj, workload_patch(plan))
    out.pop("status", None)
    md = out.setdefault("metadata", {})
    for key in _SERVER_FIELDS:
        md.pop(key, None)
    if plan.workload.kind == "Job":
        spec = out.get("spec") or {}
        if not spec.get("manualSelector"):
            spec.pop("selector", None)
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            for key in _JOB_LABELS:
                labels.pop(key, None)
            for key in _JOB_LABELS:
                (md.get("labels") or {}).pop(key, None)
    if plan.workload.kind == "Pod":
        md.pop("ownerReferences", None)
        spec = out.get("spec") or {}
        spec.pop("nodeName", None)
        spec.pop("serviceAccount", None)  # the deprecated alias of the old serviceAccountName
    return out


def _file_name(plan: WorkloadPlan) -> str:
    w = plan.workload
    return f"{w.kind.lower()}-{w.namespace}-{w.name}.yaml"


def _dump_all(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, width=1000) if docs else ""


def emit(directory: str, report: Report, inp: MigrationInput, args: argparse.Namespace) -> list[str]:
    """Write the plan into ``directory``; returns the files written. Raises LoadError when it cannot."""
    root = Path(directory)
    try:
        return _emit(root, report, inp, args)
    except OSError as exc:
        raise LoadError(f"--emit {directory}: {exc.strerror or exc}") from None


def _emit(root: Path, report: Report, inp: MigrationInput, args: argparse.Namespace) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "patches").mkdir(exist_ok=True)
    written: list[str] = []

    def write(rel: str, text: str, mode: int = 0o644) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        written.append(rel)

    plans = [p for p in report.plans if p.migrates]
    live = bool(getattr(args, "cluster", False))
    # ServiceAccounts: one per (namespace, name), created or annotated
    sas: dict[tuple[str, str], dict[str, Any]] = {}
    for p in plans:
        if p.service_account_action == SA_KEEP:
            continue
        key = (p.workload.namespace, p.service_account)
        sa = sas.setdefault(
            key,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": key[1], "namespace": key[0], "annotations": {}},
            },
        )
        sa["metadata"]["annotations"].update(dict(sorted(p.service_account_annotations.items())))
    write("serviceaccounts.yaml", _dump_all([sas[k] for k in sorted(sas)]))
    patch_entries = []
    apply_lines = [
        "#!/bin/sh",
        "# nmisim migrate --emit: review, then run. Applies the plan with kubectl.",
        "set -eu",
        'cd "$(dirname "$0")"',
    ]
    apply_lines.append("kubectl apply -f serviceaccounts.yaml")
    for p in plans:
        name = _file_name(p)
        w = p.workload
        obj = inp.objects.get(w.key)
        # a strategic-merge patch names its object, as kustomize needs (kubectl patch accepts it too)
        patch = {
            "apiVersion": str((obj or {}).get("apiVersion") or API_VERSIONS.get(w.kind, "v1")),
            "kind": w.kind,
            "metadata": {"name": w.name, "namespace": w.namespace},
            **workload_patch(p),
        }
        write(f"patches/{name}", yaml.safe_dump(patch, sort_keys=False))
        patch_entries.append(
            {"path": f"patches/{name}", "target": {"kind": w.kind, "name": w.name, "namespace": w.namespace}}
        )
        if not live:
            continue
        if w.kind in _RECREATE and obj is not None:
            write(f"recreate/{name}", yaml.safe_dump(recreated(obj, p), sort_keys=False))
            apply_lines.append(f"kubectl replace --force -f recreate/{name}")
        else:
            apply_lines.append(
                f"kubectl patch {w.kind.lower()} {shlex.quote(w.name)} -n {shlex.quote(w.namespace)} "
                f"--type strategic --patch-file patches/{name}"
            )
    # the federated credentials: az commands, and the simulated Entra's record
    wi = inp.config
    fic_lines = [
        "#!/bin/sh",
        "# nmisim migrate --emit: the federated identity credentials the plan needs.",
        "set -eu",
    ]
    if not wi.issuer:
        fic_lines.append(
            "AKS_OIDC_ISSUER=${AKS_OIDC_ISSUER:?set it: "
            "az aks show -g RG -n CLUSTER --query oidcIssuerProfile.issuerUrl -o tsv}"
        )
    records: list[dict[str, Any]] = [
        {
            "clientID": c.client_id,
            **({"name": c.name} if c.name else {}),
            "issuer": c.issuer,
            "subject": c.subject,
            "audiences": list(c.audiences),
        }
        for c in wi.federated_credentials
    ]
    seen = {(str(r["clientID"]).lower(), str(r["subject"])) for r in records}
    for p in plans:
        for c in p.credentials:
            if c.exists:
                continue
            fic_lines.append(c.command)
            if (c.client_id.lower(), c.subject) not in seen:
                seen.add((c.client_id.lower(), c.subject))
                records.append(
                    {
                        "clientID": c.client_id,
                        "name": c.name,
                        "issuer": wi.issuer,
                        "subject": c.subject,
                        "audiences": [c.audience],
                    }
                )
    write("federated-credentials.sh", "\n".join(fic_lines) + "\n", 0o755)
    write(
        "simulationconfig-patch.yaml",
        "# merge patch for SimulationConfig/default: the credentials above, as the simulated Entra "
        "records them\n"
        + yaml.safe_dump({"spec": {"workloadIdentity": {"federatedCredentials": records}}}, sort_keys=False),
    )
    if live:
        apply_lines.append(
            f"kubectl patch simulationconfig {CONFIG_NAME} --type merge "
            "--patch-file simulationconfig-patch.yaml"
        )
    else:
        resources = ["serviceaccounts.yaml"]
        files, _ = expand_paths([f for f in args.files if f != "-"], bool(getattr(args, "recursive", False)))
        for i, f in enumerate(files):
            rel = f"base/{i:03d}-{Path(f).name}"
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            written.append(rel)
            resources.append(rel)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
            "patches": patch_entries,
        }
        write("kustomization.yaml", yaml.safe_dump(kustomization, sort_keys=False))
        apply_lines.append("kubectl apply -k .")
        apply_lines.append(
            f"kubectl patch simulationconfig {CONFIG_NAME} --type merge "
            "--patch-file simulationconfig-patch.yaml  # nmisim's record"
        )
    write("apply.sh", "\n".join(apply_lines) + "\n", 0o755)
    clean = [
        "#!/bin/sh",
        "# nmisim migrate --emit: clean-up, in order, once `nmisim migrate --verify` shows every pod "
        "migrated.",
        "# Uncomment step by step.",
        "set -eu",
    ]
    for p in plans:
        clean.append(f"# {p.workload.key}")
        clean.extend(f"# {step}" for step in p.cleanup)
    write("cleanup.sh", "\n".join(clean) + "\n", 0o755)
    return written
