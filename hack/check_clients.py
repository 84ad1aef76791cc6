"""Check the clients image's programs against fakes on 127.0.0.1, without the image, a cluster or Azure.

    python3 hack/check_clients.py --python-new VENV/bin/python [--python-old VENV/bin/python] [--azgo BIN]

VENV holds azure-identity (the image's 1.27.0; the old one 1.6.1), installed from the wheels hack/image.sh
downloads. The script makes a throw-away CA and a certificate for 127.0.0.1 (openssl), serves a fake Entra
over HTTPS and a fake IMDS over HTTP, both on 127.0.0.1 only, and runs azpy.py (and azgo) with the
variables the Workload Identity webhook injects, AZURE_AUTHORITY_HOST pointing at the fake, and the CA
trusted the way the image trusts the simulated Entra's (REQUESTS_CA_BUNDLE, SSL_CERT_FILE). It checks
the request shape each SDK sends (form fields, paths, headers), the JSON line each client prints
(claims, AADSTS code, HTTP status, never a whole JWT) and the old SDK's IMDS requests (the proxy's side).

Nothing leaves the host: HTTP(S)_PROXY point at a closed loopback port (so any other host fails at
once), Go's instance discovery is disabled, DefaultAzureCredential's chain is limited by
AZURE_TOKEN_CREDENTIALS where an SDK honours it, and the old SDK's IMDS address (a module constant) is
replaced in-process by the fake's. Exit 0 when every check holds; a failed check prints its output.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from ssl import PROTOCOL_TLS_SERVER, SSLContext
from typing import Any, ClassVar, Final

ROOT: Final = Path(__file__).resolve().parents[1]
AZPY: Final = ROOT / "hack" / "images" / "clients" / "azpy.py"
TENANT: Final = "72f988bf-0000-4000-8000-00000000beef"
GOOD: Final = "00000000-0000-4000-8000-00000000a001"  # has a federated credential in the fake
SECOND: Final = "00000000-0000-4000-8000-00000000a002"  # a second identity, also federated
NO_FIC: Final = "00000000-0000-4000-8000-00000000a003"  # no federated credential: AADSTS70021
ASSERTION: Final = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6c2EifQ.c2ln"
SCOPE: Final = "https://management.azure.com/.default"
DEAD_PROXY: Final = "http://127.0.0.1:9"


def b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def fake_jwt(client_id: str, resource: str) -> str:
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{TENANT}/",
        "appid": client_id,
        "tid": TENANT,
        "oid": "11111111-0000-4000-8000-" + client_id[-12:],
        "nmisim": "simulated token - not issued by Microsoft Entra ID",
        "exp": 4102444800,
    }
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)


class Fake(BaseHTTPRequestHandler):
    """Entra's openid-configuration and token endpoint and IMDS's token path, as the clients use them."""

    seen: ClassVar[list[Seen]] = []
    base: ClassVar[str] = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, form: dict[str, str] | None = None) -> Seen:
        url = urllib.parse.urlsplit(self.path)
        s = Seen(
            self.command,
            url.path,
            dict(urllib.parse.parse_qsl(url.query)),
            {k.lower(): v for k, v in self.headers.items()},
            form or {},
        )
        self.seen.append(s)
        return s

    def do_GET(self) -> None:
        s = self.record()
        if s.path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
            self.answer(
                200,
                {
                    "token_endpoint": f"{self.base}/{TENANT}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{self.base}/{TENANT}/oauth2/v2.0/authorize",
                    "issuer": f"{self.base}/{TENANT}/v2.0",
                    "jwks_uri": f"{self.base}/{TENANT}/discovery/v2.0/keys",
                },
            )
        elif s.path == "/metadata/identity/oauth2/token":
            if s.headers.get("metadata") != "true":
                self.answer(
                    400, {"error": "invalid_request", "error_description": "Required metadata header"}
                )
                return
            who = s.query.get("client_id") or s.query.get("msi_res_id") or GOOD
            token = fake_jwt(who, s.query.get("resource", ""))
            self.answer(
                200,
                {
                    "access_token": token,
                    "expires_in": 3599,
                    "expires_on": 4102444800,
                    "resource": s.query.get("resource", ""),
                    "token_type": "Bearer",
                },
            )
        else:
            self.answer(404, {"error": "not_found", "path": s.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        s = self.record(form)
        if s.path != f"/{TENANT}/oauth2/v2.0/token":
            self.answer(404, {"error": "not_found"})
            return
        cid = form.get("client_id", "")
        if form.get("client_assertion") != ASSERTION or cid not in (GOOD, SECOND):
            desc = (
                "AADSTS70021: No matching federated identity record found for presented assertion. "
                "Assertion Issuer: 'https://kubernetes.default.svc'. Assertion Subject: "
                "'system:serviceaccount:ns:sa'. Assertion Audience: 'api://AzureADTokenExchange'."
            )
            self.answer(400, {"error": "invalid_request", "error_description": desc, "error_codes": [70021]})
            return
        resource = form.get("scope", "").split(" ")[0].removesuffix(".default")
        self.answer(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": fake_jwt(cid, resource),
            },
        )


def serve(tls: SSLContext | None) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


def make_ca(d: Path) -> tuple[Path, SSLContext]:
    """A throw-away CA and a certificate for IP:127.0.0.1 signed by it: the CA's PEM, the server's context."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=nmisim check_clients CA - not Microsoft",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(d / "srv.key"),
        "-out",
        str(d / "srv.csr"),
    )
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    ssl(
        "x509",
        "-req",
        "-in",
        str(d / "srv.csr"),
        "-CA",
        str(d / "ca.pem"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(d / "ext"),
        "-out",
        str(d / "srv.pem"),
    )
    ctx = SSLContext(PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "srv.pem", d / "srv.key")
    return d / "ca.pem", ctx


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def check(self, what: str, ok: bool, detail: Any) -> None:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}: {detail}")


VERBOSE: list[bool] = [False]


def run(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if VERBOSE[0]:
        print("  $", " ".join(Path(a).name if a.startswith("/") else a for a in argv)[:160])
        print("   ", (proc.stdout + proc.stderr).strip()[:1500])
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout + proc.stderr
    except (ValueError, IndexError):
        return {}, proc.stdout + proc.stderr


def no_jwt_printed(raw: str) -> bool:
    return "c2lnbmF0dXJl" not in raw  # every fake token's signature part


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-new", required=True, help="a python with azure-identity >= 1.13 (1.27.0)")
    parser.add_argument("--python-old", help="a python with azure-identity 1.6.1")
    parser.add_argument("--azgo", help="the azgo binary")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each client's output")
    args = parser.parse_args()
    VERBOSE[0] = args.verbose
    c = Checks()
    with tempfile.TemporaryDirectory(prefix="nmisim-check-clients-") as tmp:
        d = Path(tmp)
        ca, tls = make_ca(d)
        # The image's bundle: the system's CAs plus the simulated Entra's (hack/image.sh build_clients).
        bundle = d / "bundle.pem"
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        bundle.write_text((system.read_text() if system.exists() else "") + ca.read_text())
        entra, entra_url = serve(tls)
        imds, imds_url = serve(None)
        Fake.base = entra_url
        token_file = d / "azure-identity-token"
        token_file.write_text(ASSERTION)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "AZURE_CLIENT_ID": GOOD,
            "AZURE_TENANT_ID": TENANT,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": entra_url + "/",
            "REQUESTS_CA_BUNDLE": str(bundle),
            "SSL_CERT_FILE": str(bundle),
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        py_form = {"client_assertion", "client_assertion_type", "client_id", "grant_type", "scope"}

        def python_wi(py: str, label: str) -> None:
            for cid, extra in (
                (GOOD, []),
                (SECOND, ["--client-id", SECOND]),
                (NO_FIC, ["--client-id", NO_FIC]),
            ):
                Fake.seen.clear()
                out, raw = run([py, str(AZPY), "wi", *extra, "--scope", SCOPE], env)
                posts = [s for s in Fake.seen if s.method == "POST"]
                c.check(
                    f"{label} wi {cid[-4:]}: one POST, no discovery",
                    len(Fake.seen) == 1 and len(posts) == 1,
                    Fake.seen,
                )
                if posts:
                    f = posts[0].form
                    c.check(
                        f"{label} wi {cid[-4:]}: form fields",
                        set(f) == py_form
                        and f["client_id"] == cid
                        and f["grant_type"] == "client_credentials"
                        and f["scope"] == SCOPE
                        and f["client_assertion_type"].endswith(":jwt-bearer"),
                        f,
                    )
                if cid == NO_FIC:
                    c.check(
                        f"{label} wi {cid[-4:]}: AADSTS70021 reported",
                        out.get("ok") is False
                        and out.get("aadsts") == 70021
                        and out.get("entra_error") == "invalid_request"
                        and out.get("error") == "ClientAuthenticationError",
                        raw,
                    )
                    c.check(f"{label} wi {cid[-4:]}: HTTP status kept", out.get("status") == 400, raw)
                else:
                    claims = out.get("claims", {})
                    c.check(
                        f"{label} wi {cid[-4:]}: token's claims",
                        out.get("ok") is True
                        and claims.get("appid") == cid
                        and claims.get("tid") == TENANT
                        and claims.get("aud") == "https://management.azure.com/"
                        and "simulated" in claims.get("nmisim", ""),
                        raw,
                    )
                c.check(
                    f"{label} wi {cid[-4:]}: no token printed",
                    no_jwt_printed(raw) and "token" not in out,
                    raw,
                )

        python_wi(args.python_new, "py-new")
        # DAC: only the workload identity credential (the SDK's AZURE_TOKEN_CREDENTIALS): no IMDS probe.
        Fake.seen.clear()
        out, raw = run(
            [args.python_new, str(AZPY), "dac"],
            {**env, "AZURE_TOKEN_CREDENTIALS": "WorkloadIdentityCredential"},
        )
        c.check(
            "py-new dac: token from WorkloadIdentityCredential",
            out.get("ok") is True
            and out.get("claims", {}).get("appid") == GOOD
            and out.get("source") == "WorkloadIdentityCredential",
            raw,
        )
        out, raw = run(
            [args.python_new, str(AZPY), "dac", "--client-id", NO_FIC],
            {**env, "AZURE_TOKEN_CREDENTIALS": "WorkloadIdentityCredential"},
        )
        c.check(
            "py-new dac --client-id (no credential): AADSTS70021",
            out.get("ok") is False and out.get("aadsts") == 70021,
            raw,
        )
        # imds mode (urllib): by resource ID, the way the proxy is asked for what no SDK here can name.
        Fake.seen.clear()
        rid = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
        out, raw = run([args.python_new, str(AZPY), "imds", "--msi-res-id", rid, "--endpoint", imds_url], env)
        req = Fake.seen[0] if Fake.seen else None
        c.check(
            "imds --msi-res-id: GET with Metadata and msi_res_id",
            req is not None
            and req.headers.get("metadata") == "true"
            and req.query.get("msi_res_id") == rid
            and req.query.get("resource") == "https://management.azure.com/"
            and req.query.get("api-version") == "2018-02-01",
            req,
        )
        c.check(
            "imds --msi-res-id: claims",
            out.get("ok") is True
            and out.get("status") == 200
            and out.get("claims", {}).get("appid") == rid
            and no_jwt_printed(raw),
            raw,
        )
        out, raw = run([args.python_new, str(AZPY), "--msi-res-id", rid], env)
        c.check("--msi-res-id outside imds mode is a usage error", out == {} and "imds mode" in raw, raw)

        if args.python_old:
            old = args.python_old
            out, raw = run([old, str(AZPY), "wi"], env)
            c.check(
                "py-old wi: the SDK is too old, said in JSON",
                out.get("ok") is False
                and out.get("error") == "NotImplementedError"
                and out.get("sdk") == "azure-identity 1.6.1",
                raw,
            )
            # The old SDK's IMDS address is a module constant: this harness points it at the fake IMDS.
            patch = (
                "import runpy, sys; import azure.identity._credentials.imds as m; "
                f"m.IMDS_URL = {imds_url + '/metadata/identity/oauth2/token'!r}; "
                f"sys.argv = ['azpy'] + sys.argv[1:]; runpy.run_path({str(AZPY)!r}, run_name='__main__')"
            )
            for mode, extra in (("mi", ["--client-id", SECOND]), ("dac", []), ("mi", [])):
                Fake.seen.clear()
                out, raw = run([old, "-c", patch, mode, *extra], env)
                want = SECOND if extra else (GOOD if mode == "dac" else None)
                gets = [s for s in Fake.seen if s.headers.get("metadata") == "true"]
                c.check(
                    f"py-old {mode} {extra}: IMDS GET with Metadata, client_id {want}",
                    bool(gets)
                    and gets[-1].query.get("client_id") == want
                    and gets[-1].query.get("resource") == "https://management.azure.com",
                    Fake.seen,
                )
                c.check(
                    f"py-old {mode} {extra}: token claims",
                    out.get("ok") is True
                    and out.get("claims", {}).get("appid") == (want or GOOD)
                    and no_jwt_printed(raw),
                    raw,
                )
                if mode == "dac":
                    c.check("py-old dac: source", out.get("source") == "ManagedIdentityCredential", raw)

        if args.azgo:
            go_form = {
                "client_assertion",
                "client_assertion_type",
                "client_id",
                "grant_type",
                "scope",
                "client_info",
            }
            for cid, extra in (
                (GOOD, []),
                (SECOND, ["-client-id", SECOND]),
                (NO_FIC, ["-client-id", NO_FIC]),
            ):
                Fake.seen.clear()
                out, raw = run(
                    [args.azgo, "-wi", "-disable-instance-discovery", *extra, "-retries", "-1"], env
                )
                paths = [(s.method, s.path) for s in Fake.seen]
                c.check(
                    f"azgo -wi {cid[-4:]}: openid-configuration then POST",
                    paths[:1] == [("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration")]
                    and ("POST", f"/{TENANT}/oauth2/v2.0/token") in paths,
                    paths,
                )
                posts = [s for s in Fake.seen if s.method == "POST"]
                if posts:
                    f = posts[0].form
                    c.check(
                        f"azgo -wi {cid[-4:]}: form fields",
                        set(f) == go_form
                        and f["client_id"] == cid
                        and f["client_info"] == "1"
                        and f["scope"].split()[0] == SCOPE,
                        f,
                    )
                if cid == NO_FIC:
                    c.check(
                        f"azgo -wi {cid[-4:]}: AADSTS70021",
                        out.get("ok") is False
                        and out.get("aadsts") == 70021
                        and out.get("status") == 400
                        and out.get("error") == "AuthenticationFailedError",
                        raw,
                    )
                else:
                    c.check(
                        f"azgo -wi {cid[-4:]}: claims",
                        out.get("ok") is True and out.get("claims", {}).get("appid") == cid,
                        raw,
                    )
                c.check(f"azgo -wi {cid[-4:]}: no token printed", no_jwt_printed(raw), raw)
            out, raw = run(
                [args.azgo, "-dac", "-disable-instance-discovery"],
                {**env, "AZURE_TOKEN_CREDENTIALS": "WorkloadIdentityCredential"},
            )
            c.check(
                "azgo -dac: token and source",
                out.get("ok") is True
                and out.get("claims", {}).get("appid") == GOOD
                and out.get("source") == "WorkloadIdentityCredential",
                raw,
            )
            out, raw = run([args.azgo, "-disable-instance-discovery"], env)
            c.check(
                "azgo: -disable-instance-discovery alone is a usage error",
                out == {} and "needs one" in raw,
                raw,
            )
        entra.shutdown()
        imds.shutdown()
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
