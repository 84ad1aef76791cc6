"""``nmisim entra`` as a command: bad input is one line and exit 2; the real process reads the
SimulationConfig and ASO objects nmisim migrate reads, serves TLS, re-reads its input on SIGHUP and exits
0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from entra_support import CID, ISSUER, TENANT, key_file, openssl, pki

from nmisim.cli.entra import issuer_addresses
from nmisim.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
HOST = "login.microsoftonline.com"
CA = "nmisim simulated Entra CA - not Microsoft"
ASO_CID = "eeeeeeee-0000-4000-8000-000000000005"


def config_yaml(fics: str = "") -> str:
    return f"""apiVersion: nmisim.dev/v1alpha1
kind: SimulationConfig
metadata: {{name: default}}
spec:
  workloadIdentity:
    issuer: {ISSUER}
    tenantID: {TENANT}
    federatedCredentials:
    - {{clientID: {CID}, name: app, issuer: {ISSUER}, subject: "system:serviceaccount:ns:app"}}
{fics}"""


ASO = f"""---
apiVersion: managedidentity.azure.com/v1api20230131
kind: UserAssignedIdentity
metadata: {{name: aso-id, namespace: ns}}
spec: {{azureName: aso-id}}
status: {{clientId: {ASO_CID}}}
---
apiVersion: managedidentity.azure.com/v1api20230131
kind: FederatedIdentityCredential
metadata: {{name: aso-fic, namespace: ns}}
spec:
  owner: {{name: aso-id}}
  issuer: {ISSUER}
  subject: system:serviceaccount:ns:other
  audiences: [api://AzureADTokenExchange]
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "no input", id="no input"),
        pytest.param(
            ["-f", "{cfg}", "--listen", "10.89.0.1"], "--listen 10.89.0.1: expected IP:PORT", id="listen"
        ),
        pytest.param(["-f", "{cfg}", "--listen", "host:443"], "expected IP:PORT", id="listen name"),
        pytest.param(["-f", "{cfg}"], "--tls-cert/--tls-key are required", id="no tls"),
        pytest.param(["-f", "{cfg}", "--tls-cert", "{cfg}"], "go together", id="cert without key"),
        pytest.param(
            ["-f", "{cfg}", "--tls-cert", "/nope", "--tls-key", "/nope"],
            "--tls-cert /nope: no such file",
            id="missing cert",
        ),
        pytest.param(
            ["-f", "{cfg}", "--tls-cert", "{cfg}", "--tls-key", "{cfg}"],
            "--tls-cert/--tls-key:",
            id="cert not PEM",
        ),
        pytest.param(
            ["-f", "{cfg}", "--plain-http", "--issuer-address", "x=169.254.169.254:80"],
            "link-local",
            id="imds",
        ),
        pytest.param(
            ["-f", "{cfg}", "--plain-http", "--issuer-address", "=127.0.0.1:1"],
            "empty host name",
            id="empty name",
        ),
        pytest.param(
            ["-f", "{cfg}", "--plain-http", "--signing-key", "{cfg}"], "--signing-key", id="bad signing key"
        ),
        pytest.param(["-f", "{cfg}", "--plain-http", "--reload", "-1"], "--reload -1", id="reload"),
        pytest.param(["-f", "/nope.yaml", "--plain-http"], "/nope.yaml", id="missing file"),
        pytest.param(
            ["-f", "{cfg}", "--tls-cert", "{enc_cert}", "--tls-key", "{enc_key}"],
            "--tls-cert/--tls-key:",
            id="encrypted key: an error, not a password prompt",
        ),
        pytest.param(["-f", "{cfg}", "--cluster"], "exclude each other", id="files and cluster"),
        pytest.param(["-f", "{cfg}", "--kubeconfig", "{cfg}"], "go with --cluster", id="kubeconfig"),
        pytest.param(["-f", "{bad}", "--plain-http"], "spec.workloadIdentity", id="bad config"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_yaml())
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_yaml().replace("tenantID", "tenant"))
    enc_key = tmp_path / "enc.key"
    if "{enc_key}" in args:
        openssl("genrsa", "-aes256", "-passout", "pass:secret", "-out", str(enc_key), "2048")
    files = {"cfg": cfg, "bad": bad, "enc_key": enc_key, "enc_cert": pki("entra", CA, f"DNS:{HOST}").cert}
    argv = ["entra", *(a.format(**files) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nmisim: error: ") and message in err, err


def test_issuer_addresses() -> None:
    assert issuer_addresses(["kubernetes.default.svc=127.0.0.1:6443", "[::1]:8443"]) == {
        "kubernetes.default.svc": ("127.0.0.1", 6443),
        "*": ("::1", 8443),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    ctx = ssl.create_default_context(cafile=str(pki("entra", CA, f"DNS:{HOST}").ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with (
        socket.create_connection(("127.0.0.1", port), 10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as s,
    ):
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _metric(port: int, name: str) -> str:
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return next((line for line in data.decode().splitlines() if line.startswith(name)), "")


def test_the_process_serves_tls_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_yaml())
    aso = tmp_path / "aso.yaml"
    aso.write_text(ASO)
    p = pki("entra", CA, f"DNS:{HOST}")
    port, mport = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    cmd = [
        sys.executable, "-m", "nmisim.cli.main", "entra", "-f", str(cfg), "-f", str(aso),
        "--listen", f"127.0.0.1:{port}", "--tls-cert", str(p.cert), "--tls-key", str(p.key),
        "--metrics-listen", f"127.0.0.1:{mport}", "--signing-key", str(key_file("entra")), "--reload", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert f"tenant {TENANT}, 2 federated credentials" in first, first
        status, doc = _get(port, f"/{TENANT}/v2.0/.well-known/openid-configuration")
        assert status == 200 and doc["token_endpoint"] == f"https://{HOST}/{TENANT}/oauth2/v2.0/token"
        assert (
            _metric(mport, "nmisim_entra_federated_credentials ") == "nmisim_entra_federated_credentials 2.0"
        )
        cfg.write_text(
            config_yaml(
                f"    - {{clientID: {CID}, name: two, issuer: {ISSUER}/, "
                "subject: system:serviceaccount:ns:b}\n"
            )
        )
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while (
            _metric(mport, "nmisim_entra_federated_credentials ") != "nmisim_entra_federated_credentials 3.0"
        ):
            assert time.monotonic() < deadline, "SIGHUP did not re-read the input"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_input_reads_config_identities_and_aso_objects_never_pods(tmp_path: Path) -> None:
    """``--cluster`` against a fake API server (aiohttp on a real socket): SimulationConfig/default, the
    AzureIdentities and ASO's objects are read; the pods are not (the directory is re-read often)."""
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import yaml  # noqa: PLC0415
    from aiohttp import web  # noqa: PLC0415

    from nmisim.cli.entra import loader  # noqa: PLC0415
    from nmisim.cli.main import build_parser  # noqa: PLC0415

    config = yaml.safe_load(config_yaml())
    aso = list(yaml.safe_load_all(ASO))
    ident = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentity",
        "metadata": {"name": "id", "namespace": "ns"},
        "spec": {"type": 0, "clientID": "ffffffff-0000-4000-8000-000000000006", "resourceID": "/x/id"},
    }
    lists = {
        "/apis/aadpodidentity.k8s.io/v1/azureidentities": [ident],
        "/apis/managedidentity.azure.com/v1api20230131/userassignedidentities": [aso[0]],
        "/apis/managedidentity.azure.com/v1api20230131/federatedidentitycredentials": [aso[1]],
    }
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path == "/apis/nmisim.dev/v1alpha1/simulationconfigs/default":
            return web.json_response(config)
        if request.path in lists:
            return web.json_response({"metadata": {}, "items": lists[request.path]})
        return web.json_response({"kind": "Status", "code": 404}, status=404)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, int(runner.addresses[0][1])

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
        )
        args = build_parser().parse_args(["entra", "--cluster", "--kubeconfig", str(kubeconfig)])
        d = loader(args)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert d.tenant_id == TENANT
    assert {(f.client_id, f.subject) for f in d.credentials} == {
        (CID, "system:serviceaccount:ns:app"),
        (ASO_CID, "system:serviceaccount:ns:other"),
    }
    assert d.knows("ffffffff-0000-4000-8000-000000000006") and d.knows(ASO_CID) and d.knows(CID)
    assert not [p for p in seen if p.endswith("/pods")], seen
    assert "/apis/nmisim.dev/v1alpha1/simulationconfigs/default" in seen
