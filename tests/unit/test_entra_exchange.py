"""The simulated Entra's token request, as a function: each AADSTS answer, Entra's JSON shapes (the samples
of troubleshooting.md), the order of the checks, the credential rule shared with ``nmisim migrate``'s
prediction, and a fuzzed body that never gets anything but Entra's JSON."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from entra_support import (
    AUD,
    CID,
    CID_NO_FIC,
    FORM_TYPE,
    ISSUER,
    SUB,
    TENANT,
    FakeKeys,
    assertion,
    fic,
    form,
    key,
    make_directory,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from nmisim.engine.migration.entra import exchange as predicted_exchange
from nmisim.entra.exchange import (
    APPROXIMATED,
    CHECKS,
    CLOCK_SKEW,
    ERRORS,
    MAX_BODY,
    SIMULATED,
    Answer,
    Directory,
    token,
)
from nmisim.entra.jwt import decode, verify_rs256

NOW = 1_800_000_000.0
TRAILER = re.compile(
    r"\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\n"
    r"Timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$"
)


def call(
    body: bytes | None = None,
    *,
    tenant: str = TENANT,
    content_type: str = FORM_TYPE,
    directory: Directory | None = None,
    keys: FakeKeys | None = None,
    now: float = NOW,
    offset: float = 0.0,
    correlation: str = "",
) -> Answer:
    body = form(assertion(now=now)) if body is None else body
    return asyncio.run(
        token(
            tenant,
            body,
            content_type,
            directory=directory or make_directory(),
            keys=keys if keys is not None else FakeKeys(key("issuer").public()),
            signer=key("entra"),
            now=now,
            clock_offset=offset,
            correlation_id=correlation,
        )
    )


def code_of(a: Answer) -> int:
    body: Any = a.body
    return int(body["error_codes"][0]) if "error_codes" in body else 0


def test_success_is_entras_shape_and_says_it_is_simulated() -> None:
    a = call()
    assert a.status == 200 and a.code == 0 and a.check == "issued"
    assert set(a.body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert a.body["token_type"] == "Bearer" and a.body["expires_in"] == 3599 == a.body["ext_expires_in"]
    jws = decode(a.body["access_token"])
    assert verify_rs256(key("entra").public(), jws.signing_input, jws.signature)
    assert not verify_rs256(key("issuer").public(), jws.signing_input, jws.signature)
    c = jws.claims
    assert c["aud"] == "https://management.azure.com"
    assert c["appid"] == c["azp"] == CID
    assert c["tid"] == TENANT and c["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert c["nmisim"] == SIMULATED == "simulated token - not issued by Microsoft Entra ID"
    assert c["exp"] - c["iat"] == 3599 and c["iat"] == int(NOW)
    assert re.fullmatch(r"[0-9a-f-]{36}", c["oid"])
    assert (a.client_id, a.iss, a.sub, a.aud) == (CID, ISSUER, SUB, AUD)


def test_the_oid_is_stable_per_identity_and_differs_between_identities() -> None:
    d = make_directory(fic(), fic(client_id=CID_NO_FIC))

    def oid(cid: str) -> str:
        return str(
            decode(call(form(assertion(now=NOW), client_id=cid), directory=d).body["access_token"]).claims[
                "oid"
            ]
        )

    assert oid(CID) == oid(CID) != oid(CID_NO_FIC)


def test_70021_is_the_sample_of_troubleshooting_md_and_the_predictions_text() -> None:
    """troubleshooting.md:32: invalid_request, the description naming Assertion Issuer/Subject/Audience,
    error_codes, timestamp, trace_id, correlation_id, error_uri."""
    a = call(
        form(assertion(now=NOW), client_id=CID_NO_FIC), correlation="0b5d4c3a-1111-4222-8333-444455556666"
    )
    assert a.status == 400 and a.code == 70021 and a.check == "credential"
    b = a.body
    assert set(b) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert b["error"] == "invalid_request" and b["error_codes"] == [70021]
    assert b["error_uri"] == "https://login.microsoftonline.com/error?code=70021"
    assert b["correlation_id"] == "0b5d4c3a-1111-4222-8333-444455556666"
    assert b["timestamp"] == "2027-01-15 08:00:00Z"
    text, trailer = b["error_description"].split("\r\n", 1)
    assert text == (
        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: "
        f"'{ISSUER}'. Assertion Subject: '{SUB}'. Assertion Audience: '{AUD}'."
    )
    assert TRAILER.search(b["error_description"])
    assert f"Trace ID: {b['trace_id']}" in trailer
    # the prediction's text, word for word (one rule for both)
    predicted = predicted_exchange(
        make_directory().credentials,
        client_id=CID_NO_FIC,
        issuer=ISSUER,
        namespace="ns",
        service_account="app",
        audience=AUD,
    )
    assert predicted.error == text


def test_trailing_slash_issuer_is_70021_with_the_near_miss_in_the_log_detail() -> None:
    d = make_directory(fic(issuer=ISSUER + "/"))
    a = call(directory=d)
    assert a.code == 70021
    assert (
        "has issuer 'https://kubernetes.default.svc/', the cluster's is 'https://kubernetes.default.svc'"
        in a.detail
    )
    assert "Assertion Issuer: 'https://kubernetes.default.svc'." in a.body["error_description"]


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        pytest.param({"sub": "system:serviceaccount:ns:other"}, False, id="another ServiceAccount"),
        pytest.param({"sub": "system:serviceaccount:NS:app"}, False, id="subject case"),
        pytest.param({"aud": ["api://other"]}, False, id="another audience"),
        pytest.param({"aud": "api://AzureADTokenExchange"}, True, id="aud as a string"),
        pytest.param({"aud": ["api://other", AUD]}, True, id="aud list holding the credential's"),
        pytest.param({"iss": "https://other.issuer"}, False, id="another issuer"),
    ],
)
def test_credential_rule(claims: dict[str, Any], ok: bool) -> None:
    a = call(form(assertion(now=NOW, **claims)))
    assert (a.code == 0) is ok, a.body


def test_700024_expired_and_not_yet_valid_with_the_clock_offset() -> None:
    """The assertion read once and used after rotation: Entra's clock two hours on."""
    a = call(offset=7200)
    assert a.status == 401 and a.code == 700024 and a.check == "time"
    assert a.body["error"] == "invalid_client"
    assert a.body["error_description"].startswith(
        "AADSTS700024: Client assertion is not within its valid time range. "
        "Current time: 2027-01-15T10:00:00.0000000Z, assertion valid from 2027-01-15T08:00:00.0000000Z, "
        "expiry time of assertion 2027-01-15T09:00:00.0000000Z."
    )
    # the skew either side, and nothing more
    assert call(offset=3600 + CLOCK_SKEW - 1).code == 0
    assert call(offset=3600 + CLOCK_SKEW).code == 700024
    assert call(offset=-CLOCK_SKEW).code == 0
    assert call(offset=-CLOCK_SKEW - 1).code == 700024
    stale = form(assertion(now=NOW - 7200))
    assert call(stale).code == 700024


def test_90061_when_the_issuer_cannot_be_read_has_no_error_uri() -> None:
    a = call(keys=FakeKeys(fail="openid-configuration: HTTP 401"))
    assert a.status == 400 and a.code == 90061 and a.check == "signature"
    assert a.body["error"] == "invalid_request"
    assert a.body["error_description"].startswith(
        "AADSTS90061: Request to External OIDC endpoint failed.\r\n"
    )
    assert "error_uri" not in a.body
    assert a.detail == "openid-configuration: HTTP 401"


def test_700016_unknown_application() -> None:
    a = call(form(assertion(now=NOW), client_id="cccccccc-0000-4000-8000-000000000003"))
    assert a.status == 400 and a.code == 700016 and a.body["error"] == "unauthorized_client"
    assert (
        "Application with identifier 'cccccccc-0000-4000-8000-000000000003' was not found"
        in a.body["error_description"]
    )


def test_90002_another_tenant() -> None:
    a = call(tenant="00000000-0000-0000-0000-000000000000")
    assert a.status == 400 and a.code == 90002 and a.body["error"] == "invalid_tenant"
    assert "Tenant '00000000-0000-0000-0000-000000000000' not found" in a.body["error_description"]
    assert call(tenant=TENANT.upper()).code == 0


def test_700027_signatures() -> None:
    forged = form(assertion(key("other"), now=NOW, header={"kid": "issuer"}))
    a = call(forged)
    assert a.status == 401 and a.code == 700027 and a.body["error"] == "invalid_client"
    assert a.body["error_description"].startswith(
        "AADSTS700027: Client assertion failed signature validation."
    )
    assert call(form(assertion(key("other"), now=NOW))).code == 700027  # kid "other": not the issuer's
    assert call(form(assertion(now=NOW, header={"alg": "HS256"}))).code == 700027
    assert call(form(assertion(now=NOW, header={"kid": ""}))).code == 700027
    h, c, _ = assertion(now=NOW).split(".")
    assert call(form(f"{h}.{c}.")).code == 700027  # no signature


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        pytest.param(form(grant_type=None), FORM_TYPE, 900144, id="no grant_type"),  # type: ignore[arg-type]
        pytest.param(form(grant_type="password"), FORM_TYPE, 70003, id="grant password"),
        pytest.param(form(client_id=""), FORM_TYPE, 900144, id="empty client_id"),
        pytest.param(form(scope=None), FORM_TYPE, 900144, id="no scope"),  # type: ignore[arg-type]
        pytest.param(
            form(scope="https://management.azure.com/user_impersonation"),
            FORM_TYPE,
            1002012,
            id="scope not .default",
        ),
        pytest.param(form(scope="openid profile"), FORM_TYPE, 1002012, id="only OIDC scopes"),
        pytest.param(form(scope="a/.default b/.default"), FORM_TYPE, 1002012, id="two resources"),
        pytest.param(form(client_assertion_type="urn:other"), FORM_TYPE, 7000216, id="assertion type"),
        pytest.param(form(client_assertion=""), FORM_TYPE, 7000216, id="no assertion"),
        pytest.param(form(), "application/json", 900144, id="not a form"),
        pytest.param(
            b"grant_type=client_credentials&grant_type=client_credentials", FORM_TYPE, 9000411, id="duplicate"
        ),
        pytest.param(b"grant_type=%ff", FORM_TYPE, 900144, id="bad percent-encoding"),
        pytest.param(b"\xff\xfe", FORM_TYPE, 900144, id="not UTF-8"),
        pytest.param(b"&".join(b"a%d=1" % i for i in range(40)), FORM_TYPE, 90015, id="too many fields"),
        pytest.param(b"a=" + b"x" * MAX_BODY, FORM_TYPE, 90015, id="too big"),
        pytest.param(form("not.a.jwt"), FORM_TYPE, 50027, id="junk assertion"),
        pytest.param(form(assertion(now=NOW, iss=None)), FORM_TYPE, 50027, id="no iss"),
        pytest.param(form(assertion(now=NOW, aud=[])), FORM_TYPE, 50027, id="empty aud"),
        pytest.param(form(assertion(now=NOW, exp="soon")), FORM_TYPE, 50027, id="exp not a number"),
        pytest.param(form(assertion(now=NOW, exp=True)), FORM_TYPE, 50027, id="exp a boolean"),
    ],
)
def test_request_errors(body: bytes, content_type: str, code: int) -> None:
    a = call(body, content_type=content_type)
    assert a.code == code, a.body
    status, error, _ = ERRORS[code]
    assert a.status == status and a.body["error"] == error and a.body["error_codes"] == [code]
    assert a.body["error_description"].startswith(f"AADSTS{code}: ")
    assert TRAILER.search(a.body["error_description"])


def test_check_order() -> None:
    """Each request fails every check from one on; the answer is the first check's (CHECKS' order)."""
    expired = form(
        assertion(key("other"), now=NOW - 7200, sub="system:serviceaccount:x:y"), client_id="unknown"
    )
    keys = FakeKeys(fail="down")
    steps = [
        ("tenant", {"tenant": "other-tenant", "body": expired, "content_type": "text/plain"}, 90002),
        ("form", {"body": expired, "content_type": "text/plain"}, 900144),
        ("client", {"body": expired}, 700016),
        ("assertion", {"body": form("junk", client_id=CID)}, 50027),
        (
            "credential",
            {"body": form(assertion(key("other"), now=NOW - 7200, sub="system:serviceaccount:x:y"))},
            70021,
        ),
        ("signature", {"body": form(assertion(key("other"), now=NOW - 7200)), "keys": keys}, 90061),
        (
            "signature",
            {"body": form(assertion(key("other"), now=NOW - 7200, header={"kid": "issuer"}))},
            700027,
        ),
        ("time", {"body": form(assertion(now=NOW - 7200))}, 700024),
    ]
    seen = []
    for check, kwargs, code in steps:
        a = call(**kwargs)  # type: ignore[arg-type]
        assert (a.check, a.code) == (check, code), (check, a.body)
        seen.append(check)
    assert tuple(dict.fromkeys(seen)) == CHECKS
    assert not keys.calls[1:]  # the issuer was asked once: only after a credential matched


def test_issuer_is_only_contacted_for_a_credentials_issuer() -> None:
    keys = FakeKeys(key("issuer").public())
    call(form(assertion(now=NOW, iss="https://attacker.example")), keys=keys)
    call(form(assertion(now=NOW), client_id=CID_NO_FIC), keys=keys)
    assert keys.calls == []
    call(keys=keys)
    assert keys.calls == [(ISSUER, "issuer")]


def test_approximated_codes_are_known_codes() -> None:
    assert set(ERRORS) >= APPROXIMATED
    assert {70021, 90061} & APPROXIMATED == set()


_ASSERTIONS = [
    assertion(now=NOW),
    assertion(now=NOW - 7200),
    assertion(key("other"), now=NOW),
    assertion(now=NOW, sub="system:serviceaccount:x:y"),
]
_FIELDS = st.sampled_from(
    [
        "grant_type",
        "client_id",
        "scope",
        "client_assertion",
        "client_assertion_type",
        "client_info",
        "claims",
        "x",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "client_credentials",
            CID,
            "https://management.azure.com/.default",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ]
    ),
    st.sampled_from(_ASSERTIONS),
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(st.tuples(_FIELDS, _VALUES), max_size=8).map(lambda kv: urlencode(kv).encode()),
    ),
    st.sampled_from([FORM_TYPE, FORM_TYPE + "; charset=utf-8", "", "text/plain"]),
)
def test_fuzzed_bodies_get_entras_json_never_an_exception(body: bytes, content_type: str) -> None:
    a = call(body, content_type=content_type)
    assert a.status in {200, 400, 401}
    if a.status != 200:
        assert a.body["error_codes"][0] in ERRORS
        assert a.body["error_description"].startswith(f"AADSTS{a.body['error_codes'][0]}: ")


def test_now_is_real_time_by_default_in_issued_tokens() -> None:
    now = time.time()
    a = call(form(assertion(now=now)), now=now)
    assert abs(decode(a.body["access_token"]).claims["iat"] - now) < 2
