"""hack/awi.sh manifest: Azure Workload Identity v1.6.0's own deploy/azure-wi-webhook.yaml, changed only where
it must be (docs/development.md "hack/awi.sh"). The patched manifest is diffed against the original in the Go
module cache, so every change is one listed here and nothing else moved. Skipped (with the reason) where the
module was never downloaded: the test runs with GOPROXY=off and fetches nothing."""

from __future__ import annotations

import copy
import difflib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmisim.engine.config import WI_TENANT_STAND_IN

ROOT = Path(__file__).resolve().parents[2]
AWI = ROOT / "hack" / "awi.sh"
MODULE = "github.com/!azure/azure-workload-identity@v1.6.0"
TOLERATION = {"effect": "NoSchedule", "key": "nmisim.dev/node", "operator": "Equal", "value": "real"}


def original() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go not installed: hack/awi.sh needs it")
    modcache = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(modcache) / MODULE / "deploy" / "azure-wi-webhook.yaml"
    if not path.is_file():
        pytest.skip(f"{MODULE} is not in the Go module cache ({path}): run hack/awi.sh manifest once")
    return path


def run(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "NMISIM_AWI_TENANT"}
    environ.update({"NMISIM_CACHE": str(cache), "GOPROXY": "off", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        ["bash", str(AWI), "manifest", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=environ,
    )


def patched(cache: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = run(cache, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out.parent.parent == cache / "awi" and out.name == "azure-wi-webhook.yaml"
    return out.read_text()


def expected_objects(source: str, tenant: str) -> list[dict[str, Any]]:
    """The original's objects with exactly the documented changes applied."""
    objs = [o for o in yaml.safe_load_all(source) if o is not None]
    want = copy.deepcopy(objs)
    changed = set()
    for obj in want:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "ConfigMap" and name == "azure-wi-webhook-config":
            assert obj["data"] == {
                "AZURE_ENVIRONMENT": "${AZURE_ENVIRONMENT:-AzurePublicCloud}",
                "AZURE_TENANT_ID": "${AZURE_TENANT_ID}",
            }
            obj["data"] = {"AZURE_ENVIRONMENT": "AzurePublicCloud", "AZURE_TENANT_ID": tenant}
            changed.add(kind)
        elif kind == "Deployment":
            assert obj["spec"]["replicas"] == 2
            obj["spec"]["replicas"] = 1
            pod = obj["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"} and "tolerations" not in pod
            pod["nodeSelector"]["nmisim.dev/node"] = "real"
            pod["tolerations"] = [TOLERATION]
            (manager,) = pod["containers"]
            assert manager["resources"]["limits"] == {"cpu": "100m", "memory": "30Mi"}
            manager["resources"]["limits"]["memory"] = "64Mi"
            changed.add(kind)
    assert changed == {"ConfigMap", "Deployment"}
    return want


def test_the_patched_manifest_differs_from_upstreams_only_where_it_must(tmp_path: Path) -> None:
    source = original().read_text()
    text = patched(tmp_path)
    assert [o for o in yaml.safe_load_all(text) if o is not None] == expected_objects(
        source, WI_TENANT_STAND_IN
    )
    # and as text: the lines removed and added are exactly these (every other byte is upstream's)
    diff = list(difflib.unified_diff(source.splitlines(), text.splitlines(), lineterm="", n=0))
    removed = sorted(d[1:] for d in diff if d.startswith("-") and not d.startswith("---"))
    added = sorted(d[1:] for d in diff if d.startswith("+") and not d.startswith("+++"))
    assert removed == sorted(
        [
            "  AZURE_ENVIRONMENT: ${AZURE_ENVIRONMENT:-AzurePublicCloud}",
            "  AZURE_TENANT_ID: ${AZURE_TENANT_ID}",
            "  replicas: 2",
            "            memory: 30Mi",
        ]
    )
    assert added == sorted(
        [
            "  AZURE_ENVIRONMENT: AzurePublicCloud",
            f'  AZURE_TENANT_ID: "{WI_TENANT_STAND_IN}"',
            "  replicas: 1",
            "        nmisim.dev/node: real",
            "      tolerations:",
            "      - effect: NoSchedule",
            "        key: nmisim.dev/node",
            "        operator: Equal",
            "        value: real",
            "            memory: 64Mi",
        ]
    )
    assert "${" not in text
    # the images stay upstream's names: hack/awi.sh images builds them under these tags
    images = {
        line.split("image:")[1].strip() for line in text.splitlines() if line.strip().startswith("image:")
    }
    assert images == {"mcr.microsoft.com/oss/azure/workload-identity/webhook:v1.6.0"}


@pytest.mark.parametrize(
    ("args", "env", "tenant"),
    [
        (("0a1b2c3d-0000-4000-8000-000000000001",), {}, "0a1b2c3d-0000-4000-8000-000000000001"),
        ((), {"NMISIM_AWI_TENANT": "contoso.onmicrosoft.com"}, "contoso.onmicrosoft.com"),
        (
            ("12345",),
            {"NMISIM_AWI_TENANT": "ignored.example"},
            "12345",
        ),  # the argument wins; quoted: a string
    ],
)
def test_the_tenant_comes_from_the_argument_or_the_environment(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], tenant: str
) -> None:
    source = original().read_text()
    objs = [o for o in yaml.safe_load_all(patched(tmp_path, *args, env=env)) if o is not None]
    assert objs == expected_objects(source, tenant)


@pytest.mark.parametrize(
    "tenant", ["a b", 'x"; rm -rf /', "${AZURE_TENANT_ID}", "-lead", "t\nAZURE_ENVIRONMENT: X"]
)
def test_a_tenant_that_is_no_guid_or_domain_is_refused_on_one_line(tmp_path: Path, tenant: str) -> None:
    original()
    proc = run(tmp_path, tenant)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("[awi] error: tenant ID ")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not list(tmp_path.glob("awi/*/azure-wi-webhook.yaml"))
