"""The simulated Entra's token endpoint, as a function: ``POST /{tenant}/oauth2/v2.0/token`` with a client
assertion (a pod's projected ServiceAccount token) in, Entra's token or Entra's error JSON out
(docs/migration.md "The simulated Entra").

The checks, in this order (the first that fails answers; :data:`CHECKS` names them, the tests pin it):

1. ``tenant``: the tenant in the path is the directory's (``spec.workloadIdentity.tenantID``), else
   AADSTS90002.
2. ``form``: the body is a form (``application/x-www-form-urlencoded``, UTF-8, at most
   :data:`MAX_FIELDS` fields, no field twice: AADSTS90015/AADSTS9000411), with ``grant_type`` (AADSTS900144)
   ``client_credentials`` (AADSTS70003), ``client_id`` and ``scope`` (AADSTS900144), a scope that is one
   resource's ``/.default`` besides OIDC's ``openid``/``profile``/``offline_access``/``email``
   (AADSTS1002012), and a ``client_assertion`` of type ``jwt-bearer`` (AADSTS7000216). Other fields
   (MSAL's ``client_info=1``, ``claims``) are accepted and ignored.
3. ``client``: ``client_id`` is an application the directory knows (AADSTS700016).
4. ``assertion``: a compact JWS whose claims hold ``iss``, ``sub`` (strings), ``aud`` (a string or a
   non-empty list of them) and a numeric ``exp`` (AADSTS50027).
5. ``credential``: a federated credential of ``client_id`` matches ``iss``/``sub``/``aud`` exactly
   (AADSTS70021): :func:`nmisim.engine.migration.entra.exchange_subject`, the rule ``nmisim migrate``
   predicts with. Only then is the issuer contacted: Entra fetches only the issuers its credentials name.
6. ``signature``: header ``alg`` RS256 with a ``kid`` (AADSTS700027); the issuer's discovery document and
   JWKS read (AADSTS90061 when they cannot be); the key ``kid`` among them and the RS256 signature valid
   (AADSTS700027).
7. ``time``: ``nbf`` (when present) and ``exp`` against Entra's clock (now plus the clock offset), with
   :data:`CLOCK_SKEW` either side (AADSTS700024).

Then: ``{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": JWT}``, the
JWT signed by the simulator's own key and saying it is simulated (claim ``nmisim``).

Codes, statuses and ``error`` values: 70021, 700024 and 90061 are in workload-identity.md with their texts
(troubleshooting.md, AWI #693); the others are Entra's codes as its clients report them, and where neither
source says the status or the exact text (90015, 7000216 for a wrong assertion type, 50027, 700027 for a
bad signature, 401 for every ``invalid_client``, the clock skew) nmisim chose: :data:`APPROXIMATED`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

from nmisim.engine.config import FederatedCredential, WorkloadIdentityConfig
from nmisim.engine.migration import entra as rule
from nmisim.entra.issuer import DiscoveryError, UnknownKey
from nmisim.entra.jwt import JWTError, PrivateKey, PublicKey, decode, encode, verify_rs256

CHECKS: Final = ("tenant", "form", "client", "assertion", "credential", "signature", "time")
GRANT_CLIENT_CREDENTIALS: Final = "client_credentials"
ASSERTION_JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SUFFIX: Final = "/.default"
OIDC_SCOPES: Final = frozenset({"openid", "profile", "offline_access", "email"})
#: form fields read at most (MSAL sends 6-8)
MAX_FIELDS: Final = 32
#: the request body read at most (a Kubernetes token is ~1 KiB; MSAL's whole form ~2 KiB)
MAX_BODY: Final = 64 << 10
#: tolerance on ``nbf``/``exp`` (nmisim's choice: Microsoft.IdentityModel's default ClockSkew)
CLOCK_SKEW: Final = 300
EXPIRES_IN: Final = 3599
SIMULATED: Final = "simulated token - not issued by Microsoft Entra ID"
ERROR_URI: Final = "https://login.microsoftonline.com/error?code={code}"

INVALID_REQUEST: Final = "invalid_request"
INVALID_CLIENT: Final = "invalid_client"

#: AADSTS code -> (HTTP status, ``error``, text before the trailer)
ERRORS: Final[Mapping[int, tuple[int, str, str]]] = {
    90002: (
        400,
        "invalid_tenant",
        "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may happen if "
        "there are no active subscriptions for the tenant.",
    ),
    90015: (400, INVALID_REQUEST, "AADSTS90015: Requested query string is too long."),
    9000411: (
        400,
        INVALID_REQUEST,
        "AADSTS9000411: The request is not properly formatted. The parameter '{name}' is duplicated.",
    ),
    900144: (
        400,
        INVALID_REQUEST,
        "AADSTS900144: The request body must contain the following parameter: '{name}'.",
    ),
    70003: (
        400,
        "unsupported_grant_type",
        "AADSTS70003: The app requested an unsupported grant type '{grant}'.",
    ),
    1002012: (
        400,
        "invalid_scope",
        "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must "
        "have a scope value with /.default suffixed to the resource identifier (application ID URI).",
    ),
    7000216: (
        401,
        INVALID_CLIENT,
        "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for the "
        "'client_credentials' grant type.",
    ),
    700016: (400, "unauthorized_client", rule.AADSTS700016),
    50027: (400, INVALID_REQUEST, "AADSTS50027: JWT token is invalid or malformed."),
    70021: (400, INVALID_REQUEST, rule.AADSTS70021),
    90061: (400, INVALID_REQUEST, "AADSTS90061: Request to External OIDC endpoint failed."),
    700027: (401, INVALID_CLIENT, "AADSTS700027: Client assertion failed signature validation."),
    700024: (
        401,
        INVALID_CLIENT,
        "AADSTS700024: Client assertion is not within its valid time range. Current time: {now}, "
        "assertion valid from {nbf}, expiry time of assertion {exp}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    ),
}
#: codes whose status, ``error`` or use here is nmisim's choice, not a documented fact (docs/migration.md)
APPROXIMATED: Final = frozenset({90002, 90015, 9000411, 7000216, 700016, 50027, 700027, 700024})
#: codes Entra answers without ``error_uri`` (the 90061 sample in troubleshooting.md has none)
NO_ERROR_URI: Final = frozenset({90061})


class KeySource(Protocol):
    async def key(self, issuer: str, kid: str) -> PublicKey: ...


@dataclass(frozen=True, slots=True)
class Directory:
    """What the simulated Entra knows: its tenant, the federated credentials, the applications."""

    tenant_id: str
    credentials: tuple[FederatedCredential, ...] = ()
    #: client IDs (lower case) of the applications in the tenant
    clients: frozenset[str] = frozenset()

    def knows(self, client_id: str) -> bool:
        return client_id.lower() in self.clients


def directory(
    wi: WorkloadIdentityConfig, credentials: Iterable[FederatedCredential], client_ids: Iterable[str] = ()
) -> Directory:
    """The directory of ``spec.workloadIdentity`` (its tenant and credentials) plus ``credentials`` (ASO's
    objects); the applications are every credential's identity and ``client_ids`` (the AzureIdentities and
    VM identities the input names)."""
    creds = (*wi.federated_credentials, *credentials)
    clients = frozenset(c.lower() for c in (*(f.client_id for f in creds), *client_ids) if c)
    return Directory(wi.tenant_id, creds, clients)


@dataclass(frozen=True, slots=True)
class Answer:
    """The endpoint's answer and what its log line says: ``code`` 0 when a token was issued."""

    status: int
    body: Mapping[str, Any]
    code: int = 0
    client_id: str = ""
    iss: str = ""
    sub: str = ""
    aud: str = ""
    #: why, beyond the code (the log line's ``detail``: a credential's near miss, the fetch error)
    detail: str = ""
    #: the check that answered (one of :data:`CHECKS`, or ``issued``)
    check: str = "issued"


@dataclass
class _Reject(Exception):
    check: str
    code: int
    fields: dict[str, str]
    detail: str = ""


def _entra_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def error_body(code: int, fields: Mapping[str, str], now: float, correlation_id: str = "") -> dict[str, Any]:
    """Entra's error JSON for ``code`` (plan §5: the description's trailer, ids, timestamp)."""
    _, error, text = ERRORS[code]
    trace_id = str(uuid.uuid4())
    correlation_id = correlation_id or str(uuid.uuid4())
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        text.format(**fields)
        + f"\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {stamp}"
    )
    body: dict[str, Any] = {
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    }
    if code not in NO_ERROR_URI:
        body["error_uri"] = ERROR_URI.format(code=code)
    return body


def correlation_of(header: str | None) -> str:
    """The client's ``client-request-id`` when it is a GUID (Entra echoes it as the correlation id)."""
    try:
        return str(uuid.UUID(header or ""))
    except ValueError:
        return ""


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """The form fields of ``body``; raises :class:`_Reject` (check ``form``)."""
    if len(body) > MAX_BODY:
        raise _Reject("form", 90015, {})
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise _Reject("form", 900144, {"name": "grant_type"}, f"content type {content_type!r}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise _Reject("form", 900144, {"name": "grant_type"}, "body is not UTF-8") from None
    except ValueError:
        raise _Reject("form", 90015, {}, "too many fields") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("form", 9000411, {"name": k[:64]})
        out[k] = v
    return out


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise _Reject("form", 900144, {"name": name})
    return value


def resource_of(scope: str) -> str:
    """The resource of a client-credentials ``scope``; raises :class:`_Reject` (AADSTS1002012)."""
    wanted = [s for s in scope.split() if s not in OIDC_SCOPES]
    if len(wanted) != 1 or not wanted[0].endswith(DEFAULT_SUFFIX) or wanted[0] == DEFAULT_SUFFIX:
        raise _Reject("form", 1002012, {"scope": scope[:256]})
    return wanted[0][: -len(DEFAULT_SUFFIX)]


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str) and aud:
        return [aud]
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return list(aud)
    raise _Reject("assertion", 50027, {}, "aud is neither a string nor a list of strings")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Reject("assertion", 50027, {}, f"{name} is not a number")
    return float(v)


def issue(
    directory: Directory, signer: PrivateKey, client_id: str, resource: str, now: float
) -> dict[str, Any]:
    """The success JSON: an access token for ``resource`` as ``client_id`` (simulated, and it says so)."""
    tid = directory.tenant_id
    oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"nmisim-entra:{tid.lower()}:{client_id.lower()}"))
    t = int(now)
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": t,
        "nbf": t,
        "exp": t + EXPIRES_IN,
        "appid": client_id,
        "azp": client_id,
        "appidacr": "2",
        "idtyp": "app",
        "oid": oid,
        "sub": oid,
        "tid": tid,
        "ver": "1.0",
        "uti": uuid.uuid4().hex,
        "nmisim": SIMULATED,
    }
    return {
        "token_type": "Bearer",
        "expires_in": EXPIRES_IN,
        "ext_expires_in": EXPIRES_IN,
        "access_token": encode(claims, signer),
    }


async def token(
    tenant: str,
    body: bytes,
    content_type: str,
    *,
    directory: Directory,
    keys: KeySource,
    signer: PrivateKey,
    now: float,
    clock_offset: float = 0.0,
    correlation_id: str = "",
) -> Answer:
    """Answer one token request (the checks of the module docstring, in their order)."""
    seen: dict[str, str] = {}
    try:
        return await _token(
            tenant,
            body,
            content_type,
            directory=directory,
            keys=keys,
            signer=signer,
            now=now,
            clock_offset=clock_offset,
            seen=seen,
        )
    except _Reject as r:
        return rejected(r.code, r.fields, now, correlation_id, check=r.check, detail=r.detail, **seen)


def rejected(
    code: int,
    fields: Mapping[str, str],
    now: float,
    correlation_id: str = "",
    *,
    check: str,
    detail: str = "",
    **seen: str,
) -> Answer:
    """Entra's error answer ``code`` (also the edge's, for what it rejects before :func:`token`)."""
    return Answer(
        ERRORS[code][0],
        error_body(code, fields, now, correlation_id),
        code,
        detail=detail,
        check=check,
        **seen,
    )


async def _token(
    tenant: str,
    body: bytes,
    content_type: str,
    *,
    directory: Directory,
    keys: KeySource,
    signer: PrivateKey,
    now: float,
    clock_offset: float,
    seen: dict[str, str],
) -> Answer:
    # 1. tenant
    if tenant.lower() != directory.tenant_id.lower():
        raise _Reject("tenant", 90002, {"tenant": tenant[:64]})
    # 2. form
    form = parse_form(body, content_type)
    grant = _required(form, "grant_type")
    if grant != GRANT_CLIENT_CREDENTIALS:
        raise _Reject("form", 70003, {"grant": grant[:64]})
    client_id = _required(form, "client_id")
    seen["client_id"] = client_id[:64]
    resource = resource_of(_required(form, "scope"))
    assertion = form.get("client_assertion", "")
    assertion_type = form.get("client_assertion_type", "")
    if not assertion or assertion_type != ASSERTION_JWT_BEARER:
        raise _Reject("form", 7000216, {}, f"client_assertion_type {assertion_type[:80]!r}")
    # 3. client
    if not directory.knows(client_id):
        raise _Reject("client", 700016, {"client_id": client_id[:64]})
    # 4. assertion
    try:
        jws = decode(assertion)
    except JWTError as exc:
        raise _Reject("assertion", 50027, {}, str(exc)) from None
    iss, sub = jws.claims.get("iss"), jws.claims.get("sub")
    if not isinstance(iss, str) or not isinstance(sub, str) or not iss or not sub:
        raise _Reject("assertion", 50027, {}, "iss or sub missing")
    seen["iss"], seen["sub"] = iss[:256], sub[:256]
    audiences = _audiences(jws.claims)
    seen["aud"] = audiences[0][:256]
    nbf, exp = _number(jws.claims, "nbf"), _number(jws.claims, "exp")
    if exp is None:
        raise _Reject("assertion", 50027, {}, "no exp")
    # 5. credential: the rule nmisim migrate predicts with
    results = [
        rule.exchange_subject(directory.credentials, client_id=client_id, issuer=iss, subj=sub, audience=a)
        for a in audiences
    ]
    if not any(r.ok for r in results):
        miss = rule.near_miss(
            directory.credentials, client_id=client_id, issuer=iss, subj=sub, audience=audiences[0]
        )
        raise _Reject("credential", 70021, {"issuer": iss, "subject": sub, "audience": audiences[0]}, miss)
    # 6. signature
    alg, kid = jws.header.get("alg"), jws.header.get("kid")
    if alg != "RS256" or not isinstance(kid, str) or not kid:
        raise _Reject("signature", 700027, {}, f"alg {alg!r}, kid {kid!r}: RS256 with a kid is required")
    try:
        key = await keys.key(iss, kid)
    except DiscoveryError as exc:
        raise _Reject("signature", 90061, {}, str(exc)) from None
    except UnknownKey as exc:
        raise _Reject("signature", 700027, {}, str(exc)) from None
    if not verify_rs256(key, jws.signing_input, jws.signature):
        raise _Reject("signature", 700027, {}, f"signature does not verify with key {kid!r}")
    # 7. time
    clock = now + clock_offset
    if (nbf is not None and clock < nbf - CLOCK_SKEW) or clock >= exp + CLOCK_SKEW:
        fields = {
            "now": _entra_time(clock),
            "nbf": _entra_time(nbf if nbf is not None else exp),
            "exp": _entra_time(exp),
        }
        raise _Reject("time", 700024, fields, f"clock offset {clock_offset:+g} s" if clock_offset else "")
    return Answer(200, issue(directory, signer, client_id, resource, now), 0, **seen)
