"""azpy.py (the clients image's Python client): what it prints of tokens and errors, its modes' arguments,
and its plain IMDS mode against a server on 127.0.0.1. The SDK itself is not needed (nor installed here):
the helpers import nothing from azure; hack/check_clients.py runs the SDK modes against local fakes."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NMI_TOKEN = "nmisim-simulated-token.NOT-A-REAL-CREDENTIAL.00000000-0000-4000-8000-000000000001"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("azpy", ROOT / "hack" / "images" / "clients" / "azpy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


azpy = load()


def b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def jwt(claims: dict[str, Any]) -> str:
    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c2lnbmF0dXJl"


def test_jwt_claims_decodes_the_payload_unverified_and_refuses_what_is_not_a_jwt() -> None:
    assert azpy.jwt_claims(jwt({"appid": "c", "tid": "t"})) == {"appid": "c", "tid": "t"}
    assert azpy.jwt_claims(NMI_TOKEN) is None  # three dotted parts, but no JSON inside
    assert azpy.jwt_claims("a.b") is None
    assert azpy.jwt_claims(f"x.{b64([1, 2])}.y") is None  # JSON, but not an object


def test_token_fields_prints_a_jwts_claims_never_the_jwt() -> None:
    token = jwt(
        {
            "aud": "https://management.azure.com/",
            "appid": "c1",
            "tid": "t1",
            "exp": 1,
            "nmisim": "simulated token - not issued by Microsoft Entra ID",
            "nmisim_case": "x",
        }
    )
    out = azpy.token_fields(token)
    assert "token" not in out and token not in json.dumps(out)
    assert out["claims"] == {
        "aud": "https://management.azure.com/",
        "appid": "c1",
        "tid": "t1",
        "nmisim": "simulated token - not issued by Microsoft Entra ID",
        "nmisim_case": "x",
    }
    assert out["token_length"] == len(token)


def test_token_fields_prints_nmis_simulated_token_whole_as_before() -> None:
    assert azpy.token_fields(NMI_TOKEN) == {"token": NMI_TOKEN}


@pytest.mark.parametrize(
    ("text", "code", "error"),
    [
        (  # azure-identity 1.27
            "Microsoft Entra ID error '(invalid_request) AADSTS70021: No matching federated identity record "
            "found for presented assertion.'\nContent: {...}",
            70021,
            "invalid_request",
        ),
        (  # azure-identity 1.6
            "Azure Active Directory error '(invalid_client) AADSTS700024: Client assertion is not within its "
            "valid time range.'",
            700024,
            "invalid_client",
        ),
        (  # azidentity (Go) quotes the raw body
            'RESPONSE 400: 400 Bad Request\n{\n  "error": "invalid_request",\n  "error_description": '
            '"AADSTS90061: Request to External OIDC endpoint failed."\n}',
            90061,
            "invalid_request",
        ),
        (
            "ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint.",
            None,
            None,
        ),
    ],
)
def test_aadsts_and_entra_error_are_parsed_from_each_sdks_text(
    text: str, code: int | None, error: str | None
) -> None:
    assert azpy.aadsts_of(text) == code
    assert azpy.entra_error_of(text) == error


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class SdkError(Exception):
    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response


def test_error_fields_find_the_status_and_the_code_in_the_cause() -> None:
    try:
        try:
            raise SdkError("AADSTS70021: No matching federated identity record", Response(400))
        except SdkError as inner:
            raise RuntimeError("WorkloadIdentityCredential: authentication failed") from inner
    except RuntimeError as err:
        out = azpy.error_fields(err)
    assert out == {
        "ok": False,
        "error": "RuntimeError",
        "message": "WorkloadIdentityCredential: authentication failed",
        "aadsts": 70021,
        "entra_error": None,
        "status": 400,
        "cause": "SdkError",
    }
    assert azpy.status_of(ValueError("no response")) is None


def test_imds_url_asks_by_each_id_and_turns_the_scope_into_a_resource() -> None:
    url = azpy.imds_url("http://127.0.0.1:1/", "https://vault.azure.net/.default", None, "/subs/x", None)
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == "/metadata/identity/oauth2/token"
    assert dict(urllib.parse.parse_qsl(parsed.query)) == {
        "api-version": "2018-02-01",
        "resource": "https://vault.azure.net/",
        "msi_res_id": "/subs/x",
    }
    assert "client_id=c" in azpy.imds_url("http://h", "r", "c", None, None)
    assert "object_id=o" in azpy.imds_url("http://h", "r", None, None, "o")


def test_imds_fields_read_the_answer_and_the_error() -> None:
    body = json.dumps({"access_token": jwt({"appid": "c"}), "expires_on": "9", "client_id": "c", "x": 1})
    ok = azpy.imds_fields(200, body)
    assert ok["ok"] is True and ok["claims"] == {"appid": "c"} and ok["client_id"] == "c" and "x" not in ok
    err = azpy.imds_fields(
        400, '{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity"}'
    )
    assert err["ok"] is False and err["aadsts"] == 70021 and err["entra_error"] == "invalid_request"
    assert err["status"] == 400 and err["error"] == "HTTPError"
    text = azpy.imds_fields(404, "no such identity\n")
    assert text["ok"] is False and text["aadsts"] is None and text["message"] == "no such identity\n"


def test_arguments_keep_the_old_invocation_and_refuse_resource_ids_outside_imds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = azpy.parse_args(["--client-id", "c", "--retries", "0"])
    assert (args.mode, args.client_id, args.retries) == ("mi", "c", 0)
    assert azpy.parse_args(["wi", "--client-id", "c"]).mode == "wi"
    assert azpy.parse_args(["imds", "--msi-res-id", "/r"]).msi_res_id == "/r"
    with pytest.raises(SystemExit) as exc:
        azpy.parse_args(["dac", "--msi-res-id", "/r"])
    assert exc.value.code == 2 and "imds mode" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        azpy.parse_args(["nope"])


class Imds(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Metadata")))
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        if "msi_res_id" in query:
            status, doc = 200, {"access_token": jwt({"xms_mirid": query["msi_res_id"]}), "expires_on": "9"}
        else:
            status, doc = 400, {"error": "invalid_request", "error_description": "Identity not found"}
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Imds.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_main(*argv: str) -> dict[str, Any]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        azpy.main(list(argv))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_imds_mode_asks_by_resource_id_with_the_metadata_header(imds: str) -> None:
    out = run_main("imds", "--msi-res-id", "/subscriptions/s/x", "--endpoint", imds)
    assert out["mode"] == "imds" and out["ok"] is True and out["status"] == 200
    assert out["claims"] == {"xms_mirid": "/subscriptions/s/x"} and "token" not in out
    path, metadata = Imds.seen[0]
    assert metadata == "true" and "msi_res_id=%2Fsubscriptions%2Fs%2Fx" in path
    assert "resource=https%3A%2F%2Fmanagement.azure.com%2F" in path


def test_imds_mode_reports_the_error_answer(imds: str) -> None:
    out = run_main("imds", "--client-id", "c", "--endpoint", imds)
    assert out["ok"] is False and out["status"] == 400 and out["entra_error"] == "invalid_request"
    assert out["aadsts"] is None and "Identity not found" in out["message"]


def test_imds_mode_reports_an_unreachable_endpoint() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    out = run_main("imds", "--endpoint", f"http://127.0.0.1:{port}", "--timeout", "5")
    assert out["ok"] is False and out["status"] is None and out["error"] == "URLError"
