"""Helpers of the simulated Entra's tests: RSA keys and certificates made by ``openssl`` (real keys, real
TLS), a fake OIDC issuer's documents, assertions signed as the kubelet's would be, and requests."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from nmisim.engine.config import FederatedCredential, WorkloadIdentityConfig
from nmisim.entra.exchange import ASSERTION_JWT_BEARER, Directory, directory
from nmisim.entra.issuer import DiscoveryError, UnknownKey
from nmisim.entra.jwt import PrivateKey, PublicKey, encode, private_key_from_pem

TENANT = "72f988bf-0000-4000-8000-00000000000a"
ISSUER = "https://kubernetes.default.svc"
CID = "aaaaaaaa-0000-4000-8000-000000000001"
CID_NO_FIC = "bbbbbbbb-0000-4000-8000-000000000002"
SUB = "system:serviceaccount:ns:app"
AUD = "api://AzureADTokenExchange"
FORM_TYPE = "application/x-www-form-urlencoded"
_DIR = Path(tempfile.mkdtemp(prefix="nmisim-entra-test-"))


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=120)


@functools.cache
def key_file(name: str, traditional: bool = False) -> Path:
    """An RSA-2048 key made by ``openssl genrsa`` (PKCS#8, or PKCS#1 with ``traditional``)."""
    path = _DIR / f"{name}.key"
    openssl("genrsa", *(["-traditional"] if traditional else []), "-out", str(path), "2048")
    return path


@functools.cache
def key(name: str, kid: str = "") -> PrivateKey:
    return private_key_from_pem(key_file(name).read_text(), kid or name)


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


@functools.cache
def pki(name: str, cn: str, *sans: str, strict: bool = True) -> Pki:
    """A CA named ``cn`` and a server certificate for ``sans`` (``DNS:x``/``IP:y``) it signed. ``strict``:
    the recipe the report gives the lead, which clients with ``VERIFY_X509_STRICT`` (Python 3.13's default)
    accept; otherwise hack/cluster.sh's recipe for the cluster's CA (no keyUsage on the CA)."""
    d = _DIR / name
    d.mkdir(exist_ok=True)
    ca, ca_key = d / "ca.crt", d / "ca.key"
    usage = ["-addext", "keyUsage=critical,keyCertSign,cRLSign"] if strict else []
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={cn}",
        *usage,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    srv_key, csr, crt = d / "tls.key", d / "tls.csr", d / "tls.crt"
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=server",
        "-keyout",
        str(srv_key),
        "-out",
        str(csr),
    )
    ext = d / "ext.cnf"
    leaf = "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
    ext.write_text(
        f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\n" + (leaf if strict else "")
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return Pki(ca, crt, srv_key)


def assertion(
    signer: PrivateKey | None = None,
    *,
    iss: str | None = ISSUER,
    sub: str = SUB,
    aud: Any = (AUD,),
    now: float | None = None,
    lifetime: int = 3600,
    header: Mapping[str, Any] | None = None,
    **extra: Any,
) -> str:
    """A projected ServiceAccount token as the kubelet gets it (a real one's claims), signed by ``signer``."""
    t = int(time.time() if now is None else now)
    claims = {
        "aud": list(aud) if isinstance(aud, tuple) else aud,
        "exp": t + lifetime,
        "iat": t,
        "nbf": t,
        "iss": iss,
        "sub": sub,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "app", "uid": "u"}},
        **extra,
    }
    return encode({k: v for k, v in claims.items() if v is not None}, signer or key("issuer"), header)


def form(client_assertion: str | None = None, **fields: str) -> bytes:
    """A token request's body as MSAL-go sends it (``client_info=1``, OIDC scopes besides /.default)."""
    base = {
        "grant_type": "client_credentials",
        "client_id": CID,
        "scope": "https://management.azure.com/.default openid offline_access profile",
        "client_assertion_type": ASSERTION_JWT_BEARER,
        "client_assertion": assertion() if client_assertion is None else client_assertion,
        "client_info": "1",
    }
    base.update(fields)
    return urlencode({k: v for k, v in base.items() if v is not None}).encode()


def fic(
    client_id: str = CID, issuer: str = ISSUER, subject: str = SUB, name: str = "fic"
) -> FederatedCredential:
    return FederatedCredential(
        client_id=client_id, name=name, issuer=issuer, subject=subject, audiences=(AUD,)
    )


def make_directory(*fics: FederatedCredential, clients: tuple[str, ...] = (CID_NO_FIC,)) -> Directory:
    wi = WorkloadIdentityConfig(issuer=ISSUER, tenant_id=TENANT, federated_credentials=fics or (fic(),))
    return directory(wi, (), clients)


class FakeKeys:
    """A key source that knows ``keys`` (or fails as the issuer's discovery would); counts the calls."""

    def __init__(self, *keys: PublicKey, fail: str = "") -> None:
        self.keys = {k.kid: k for k in keys}
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    async def key(self, issuer: str, kid: str) -> PublicKey:
        self.calls.append((issuer, kid))
        if self.fail:
            raise DiscoveryError(self.fail)
        if kid not in self.keys:
            raise UnknownKey(kid)
        return self.keys[kid]


def issuer_documents(issuer: str, jwks_uri: str, *keys: PublicKey) -> tuple[bytes, bytes]:
    """A Kubernetes API server's discovery document and JWKS (openidmetadata.go's shape)."""
    meta = {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    return json.dumps(meta).encode(), json.dumps({"keys": [k.jwk() for k in keys]}).encode()
