"""The local cluster itself behaves like a real one: scheduling, fake nodes, tokens, RBAC, restarts."""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from tests.support import Cluster, eventually

pytestmark = pytest.mark.cluster


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return items


def test_nodes_are_ready_with_pod_cidrs(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes")["items"]
    ready = [
        n
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
    assert len(ready) >= 2, [n["metadata"]["name"] for n in nodes]
    for n in ready:
        assert n["spec"].get("podCIDR"), n["metadata"]["name"]


def test_deployment_pods_run_with_distinct_ips_on_fake_nodes(cluster: Cluster, namespace: str) -> None:
    if not cluster.local:
        pytest.skip("needs kwok's fake nodes: a real kubelet never runs registry.invalid images")
    cluster.kubectl(
        "create", "deployment", "d", "--image=registry.invalid/none:1", "--replicas=2", "-n", namespace
    )

    def running() -> list[dict[str, Any]]:
        pods = _pods(cluster, namespace, "app=d")
        ok = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return ok if len(ok) == 2 else []

    pods = eventually(running, timeout=60, what="2 Running pods of deployment d")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2, ips
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    for p in pods:
        node = nodes[p["spec"]["nodeName"]]
        cidr = ipaddress.ip_network(node["spec"]["podCIDR"])
        assert ipaddress.ip_address(p["status"]["podIP"]) in cidr, (p["status"]["podIP"], cidr)


def test_host_network_pod_gets_node_ip(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "hn"},
                "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "registry.invalid/x"}]},
            }
        ),
        namespace,
    )
    pod = eventually(
        lambda: (p := cluster.get_json("pod", "hn", "-n", namespace))["status"].get("podIP") and p,
        what="hostNetwork pod IP",
    )
    node = cluster.get_json("node", pod["spec"]["nodeName"])
    internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert pod["status"]["podIP"] in internal


def test_job_pod_completes(cluster: Cluster, namespace: str) -> None:
    if not cluster.local:
        pytest.skip("needs kwok's fake nodes: a real kubelet never runs registry.invalid images")
    cluster.kubectl("create", "job", "j", "--image=registry.invalid/none:1", "-n", namespace)
    eventually(
        lambda: any(p["status"].get("phase") == "Succeeded" for p in _pods(cluster, namespace, "job-name=j")),
        timeout=60,
        what="the Job's pod to succeed",
    )


def _api(cluster: Cluster, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request with a bearer token only (no client certificate), as a pod would make it."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    server = cfg["clusters"][0]["cluster"]["server"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(server + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), None


def _api_get(cluster: Cluster, path: str, token: str) -> int:
    return _api(cluster, path, token)[0]


def test_token_for_service_account_authenticates_and_rbac_denies(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT from the TokenRequest API
    # Authenticated (not 401) but not authorised (403) to list pods or read secrets.
    assert _api_get(cluster, f"/api/v1/namespaces/{namespace}/pods", token) == 403
    assert _api_get(cluster, f"/api/v1/namespaces/{namespace}/secrets", token) == 403
    assert _api_get(cluster, "/api/v1/namespaces/default/pods", "not-a-token") == 401
    code, who = _api(
        cluster,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        token,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert code == 201, code
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"
    can = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "pods",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:nobody",
        check=False,
    )
    assert can.stdout.strip() == "no"


def test_restarted_apiserver_keeps_data(cluster: Cluster, namespace: str) -> None:
    if not cluster.local:
        pytest.skip("restarts a component of the embedded local cluster")
    cluster.kubectl("create", "configmap", "keep", "--from-literal=k=v", "-n", namespace)
    cluster.cluster_sh("restart", "kube-apiserver")
    data = eventually(
        lambda: cluster.get_json("configmap", "keep", "-n", namespace)["data"],
        timeout=60,
        what="configmap back",
    )
    assert data == {"k": "v"}
