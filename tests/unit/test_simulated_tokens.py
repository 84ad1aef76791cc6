"""Simulated tokens can never pass for real ones: ``nmisim request`` on a bound pod answers 200 with an
access_token that says so and is not shaped like a JWT (no cluster needed: the offline engine is the same
code the operator runs)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from nmisim.cli.main import main

OBJECTS = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: "1", labels: {aadpodidbinding: web}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.1.5}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: web-id, namespace: shop}
spec:
  type: 0
  clientID: 11111111-2222-3333-4444-555555555555
  resourceID: /subscriptions/0/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/w
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: web-binding, namespace: shop}
spec: {azureIdentity: web-id, selector: web}
"""


def jwt_shaped(token: str) -> bool:
    """Three dot-separated parts whose first is base64url JSON (a JOSE header), as every JWT is."""
    parts = token.split(".")
    if len(parts) != 3 or not token.startswith("eyJ"):
        return False
    try:
        json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return True


def test_jwt_shaped_recognises_a_jwt() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
    assert jwt_shaped(f"{header}.eyJzdWIiOiJ4In0.c2ln")
    assert not jwt_shaped("eyJ.not.json")
    assert not jwt_shaped("nmisim-simulated-token.NOT-A-REAL-CREDENTIAL.x")


@pytest.mark.parametrize("resource", ["https://management.azure.com/", "https://vault.azure.net", "api://x"])
def test_simulated_tokens_are_never_credentials(
    resource: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objs = tmp_path / "objs.yaml"
    objs.write_text(OBJECTS)
    argv = ["request", "-f", str(objs), "--pod", "shop/web", "--query", f"resource={resource}", "-o", "json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    answer = json.loads(out)
    assert answer["status"] == 200
    body = json.loads(answer["body"])
    assert body["resource"] == resource
    token = body["access_token"]
    assert "NOT-A-REAL-CREDENTIAL" in token
    assert not jwt_shaped(token), token
    assert not re.search(r"\beyJ[\w-]{10,}", out), "something JWT-like in the output"
