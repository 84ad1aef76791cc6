"""azpy asks for a token the way a Python application in a pod does, with azure-identity. Modes (the first
argument; none means ``mi``, so ``azpy --client-id X`` works as it always did):

- ``mi``: ManagedIdentityCredential (IMDS at http://169.254.169.254, or AZURE_POD_IDENTITY_AUTHORITY_HOST
  when set). ``--client-id`` asks for a user-assigned identity.
- ``wi``: WorkloadIdentityCredential from the variables the Workload Identity webhook injects
  (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST); ``--client-id``
  asks for another identity by client ID in code, as an application with two identities does.
  azure-identity >= 1.13 only: an older SDK says so in the JSON.
- ``dac``: DefaultAzureCredential, nothing excluded; ``--client-id`` is its managed_identity_client_id
  and workload_identity_client_id. ``source`` names the credential of the chain that answered.
- ``imds``: a plain urllib GET of IMDS's token path (``--msi-res-id``, ``--client-id``, ``--object-id``
  as query parameters, header ``Metadata: true``), for what no SDK version here can ask: an identity by
  its resource ID through the Workload Identity proxy.

The same file runs under azure-identity 1.27 (/opt/sdk, ``azpy``) and 1.6.1 (/opt/azpy-old, ``azpy-old``:
older than workload identity, so it goes to IMDS, i.e. through the proxy sidecar). It prints one JSON line:

  {"mode", "sdk": "azure-identity <version>", "ok": true, "claims": {...}, "expires_on", "seconds"}

where ``claims`` are the access token's claims that say whom it was issued to (aud, appid, tid, the
simulated Entra's ``nmisim`` claim, ...), decoded without verification; a token that is not a JWT (NMI's
simulated tokens) is printed whole as ``token`` instead, as before. A JWT is never printed. On failure:

  {"ok": false, "error": the exception's type, "message", "aadsts": the AADSTS code in the message (int),
   "entra_error": Entra's ``error`` value ("invalid_request", ...), "status": the HTTP status when the SDK
   kept it, "cause": the type of the exception it was raised from, "seconds"}

The helpers above ``main`` import nothing from azure, so the unit tests load this file without the SDK.
hack/image.sh installs it into nmisim-clients:dev.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Final

MODES: Final = ("mi", "wi", "dac", "imds")
DEFAULT_SCOPE: Final = "https://management.azure.com/.default"
IMDS_ENDPOINT: Final = "http://169.254.169.254"
IMDS_TOKEN_PATH: Final = "/metadata/identity/oauth2/token"
# The claims that say whom a token was issued to and by whom; the rest (signatures' inputs, times) is noise.
CLAIMS: Final = ("aud", "iss", "appid", "azp", "tid", "oid", "sub", "idtyp", "xms_mirid", "nmisim")
AADSTS_RE: Final = re.compile(r"AADSTS(\d+)")
# azure-identity's text: "Microsoft Entra ID error '(invalid_request) AADSTS70021: ..." (1.27) or
# "Azure Active Directory error '(invalid_client) ..." (1.6); Go's and raw bodies carry "error": "...".
ENTRA_ERROR_RES: Final = (
    re.compile(r"error '\((\w+)\)"),
    re.compile(r'"error"\s*:\s*"(\w+)"'),
)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (``header.payload.signature``), not verified; None when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_fields(token: str) -> dict[str, Any]:
    """What the JSON line says of a token: its identifying claims when it is a JWT (never the token), else
    the token itself (NMI's simulated tokens, which the node agent's tests compare whole)."""
    claims = jwt_claims(token)
    if claims is None:
        return {"token": token}
    picked: dict[str, Any] = {k: claims[k] for k in CLAIMS if k in claims}
    picked.update({k: v for k, v in claims.items() if k.startswith("nmisim") and k not in picked})
    return {"claims": picked, "token_length": len(token)}


def aadsts_of(text: str) -> int | None:
    """The first AADSTS code in an error's text (``AADSTS70021: No matching ...`` -> 70021)."""
    m = AADSTS_RE.search(text)
    return int(m.group(1)) if m else None


def entra_error_of(text: str) -> str | None:
    """Entra's ``error`` value as the SDK quotes it, or as a raw JSON body carries it."""
    for pattern in ENTRA_ERROR_RES:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def status_of(err: BaseException | None) -> int | None:
    """The HTTP status behind the SDK's error: azure-identity raises CredentialUnavailableError from
    the HttpResponseError that carried IMDS's (here: NMI's) answer, ClientAuthenticationError with
    Entra's response."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        status = getattr(err, "status_code", None)
        if isinstance(status, int):
            return status
        err = err.__cause__ or err.__context__
    return None


def messages_of(err: BaseException) -> str:
    """The error's text and its causes' (the AADSTS code may be in the inner one)."""
    texts: list[str] = []
    cur: BaseException | None = err
    while cur is not None and len(texts) < 5:
        texts.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(texts)


def error_fields(err: BaseException) -> dict[str, Any]:
    text = messages_of(err)
    return {
        "ok": False,
        "error": type(err).__name__,
        "message": str(err),
        "aadsts": aadsts_of(text),
        "entra_error": entra_error_of(text),
        "status": status_of(err),
        "cause": type(err.__cause__).__name__ if err.__cause__ else None,
    }


def resource_of(scope: str) -> str:
    """IMDS's ``resource`` for an SDK scope: ``https://x/.default`` -> ``https://x/``."""
    return scope[: -len(".default")] if scope.endswith("/.default") else scope


def imds_url(
    endpoint: str, scope: str, client_id: str | None, msi_res_id: str | None, object_id: str | None
) -> str:
    query = {"api-version": "2018-02-01", "resource": resource_of(scope)}
    for key, value in (("client_id", client_id), ("msi_res_id", msi_res_id), ("object_id", object_id)):
        if value:
            query[key] = value
    return endpoint.rstrip("/") + IMDS_TOKEN_PATH + "?" + urllib.parse.urlencode(query)


def imds_fields(status: int, body: str) -> dict[str, Any]:
    """IMDS's (or the proxy's) answer: the token's fields on 200, else the body's error."""
    out: dict[str, Any] = {"ok": status == 200, "status": status}
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status == 200 and isinstance(doc, dict) and isinstance(doc.get("access_token"), str):
        out.update(token_fields(doc["access_token"]))
        out.update(
            {k: v for k, v in doc.items() if k in ("client_id", "expires_on", "resource", "token_type")}
        )
        return out
    out["ok"] = False
    out["error"] = "HTTPError" if status else "URLError"
    out["message"] = body[:2000]
    out["aadsts"] = aadsts_of(body)
    out["entra_error"] = entra_error_of(body)
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="azpy", description="ask azure-identity for a token; one JSON line")
    parser.add_argument("mode", nargs="?", choices=MODES, default="mi", help="mi (default), wi, dac, imds")
    parser.add_argument("--client-id", default=None, help="the identity's client ID (mi, wi, dac, imds)")
    parser.add_argument("--msi-res-id", default=None, help="imds: the identity's resource ID")
    parser.add_argument("--object-id", default=None, help="imds: the identity's object ID")
    parser.add_argument("--scope", default=DEFAULT_SCOPE)
    parser.add_argument("--retries", type=int, default=None, help="retry_total (default: the SDK's)")
    parser.add_argument(
        "--endpoint", default=IMDS_ENDPOINT, help="imds: where IMDS is (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="imds: seconds to wait for the answer")
    args = parser.parse_args(argv)
    if args.mode != "imds" and (args.msi_res_id or args.object_id):
        parser.error("--msi-res-id and --object-id go with the imds mode (no SDK here asks by them)")
    return args


def sdk_version() -> str:
    try:
        from azure.identity import __version__  # noqa: PLC0415 (the helpers above run without the SDK)
    except ImportError:
        return "none"
    return f"azure-identity {__version__}"


def credential_for(args: argparse.Namespace) -> Any:
    """The SDK's credential for the mode, built with what both 1.6 and 1.27 accept."""
    from azure import identity  # noqa: PLC0415

    kwargs: dict[str, Any] = {}
    if args.retries is not None:
        kwargs["retry_total"] = args.retries
    if args.mode == "mi":
        return identity.ManagedIdentityCredential(client_id=args.client_id, **kwargs)
    if args.mode == "wi":
        if not hasattr(identity, "WorkloadIdentityCredential"):
            raise NotImplementedError(f"{sdk_version()} has no WorkloadIdentityCredential (1.13.0 added it)")
        if args.client_id:
            kwargs["client_id"] = args.client_id
        return identity.WorkloadIdentityCredential(**kwargs)
    if args.client_id:
        kwargs["managed_identity_client_id"] = args.client_id
        if hasattr(identity, "WorkloadIdentityCredential"):
            kwargs["workload_identity_client_id"] = args.client_id
    return identity.DefaultAzureCredential(**kwargs)


def run_sdk(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    credential: Any = None
    try:
        credential = credential_for(args)
        token = credential.get_token(args.scope)
        out.update(ok=True, **token_fields(token.token), expires_on=token.expires_on)
    except Exception as err:  # the SDK's error is the result
        out.update(error_fields(err))
    if args.mode == "dac" and credential is not None:
        # the chain keeps the credential that answered (1.6 and 1.27 alike); no public API says which
        answered = getattr(credential, "_successful_credential", None)
        out["source"] = type(answered).__name__ if answered is not None else None
    return out


def run_imds(args: argparse.Namespace) -> dict[str, Any]:
    url = imds_url(args.endpoint, args.scope, args.client_id, args.msi_res_id, args.object_id)
    request = urllib.request.Request(url, headers={"Metadata": "true"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP proxy from env
    try:
        with opener.open(request, timeout=args.timeout) as resp:
            return imds_fields(resp.status, resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as err:
        return imds_fields(err.code, err.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err), "status": None}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.monotonic()
    out: dict[str, Any] = {"mode": args.mode, "sdk": sdk_version() if args.mode != "imds" else "urllib"}
    out.update(run_imds(args) if args.mode == "imds" else run_sdk(args))
    if args.mode == "wi":
        out["authority_host"] = os.environ.get("AZURE_AUTHORITY_HOST")
    out["seconds"] = round(time.monotonic() - start, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
