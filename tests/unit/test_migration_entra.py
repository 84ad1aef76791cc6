"""The simulated Entra's token exchange (workload-identity.md §4 "FIC rules and limits"; the closing list's
rule 6). Upstream: ``docs/book/src/troubleshooting.md`` (AADSTS70021, the issuer's trailing slash),
``docs/book/src/topics/federated-identity-credential.md`` (20 per identity), ``pkg/cmd/serviceaccount``
(subject ``system:serviceaccount:<ns>:<sa>``, audience ``api://AzureADTokenExchange``).
"""

from __future__ import annotations

import pytest

from nmisim.engine.config import FederatedCredential
from nmisim.engine.migration.entra import FIC_LIMIT, exchange, near_miss, subject

CID = "aaaaaaaa-0000-0000-0000-000000000001"
OTHER = "bbbbbbbb-0000-0000-0000-000000000002"
ISSUER = "https://westeurope.oic.prod-aks.azure.com/tenant/uuid/"
AUD = "api://AzureADTokenExchange"
SUBJ = "system:serviceaccount:ns1:api"


def fic(
    client_id: str = CID, issuer: str = ISSUER, subj: str = SUBJ, audiences: tuple[str, ...] = (AUD,)
) -> FederatedCredential:
    return FederatedCredential(
        client_id=client_id, name="f", issuer=issuer, subject=subj, audiences=audiences
    )


def ex(creds: list[FederatedCredential], client_id: str = CID, audience: str = AUD) -> str:
    return exchange(
        creds, client_id=client_id, issuer=ISSUER, namespace="ns1", service_account="api", audience=audience
    ).error


AADSTS70021 = (
    "AADSTS70021: No matching federated identity record found for presented assertion. "
    f"Assertion Issuer: '{ISSUER}'. Assertion Subject: '{SUBJ}'. Assertion Audience: '{AUD}'."
)


def test_subject_format() -> None:
    """pkg/cmd/serviceaccount phases federated-identity: subject system:serviceaccount:<ns>:<sa>."""
    assert subject("ns1", "api") == SUBJ


@pytest.mark.parametrize(
    ("creds", "ok"),
    [
        pytest.param([fic()], True, id="troubleshooting.md exact issuer, subject, audience"),
        pytest.param(
            [fic(issuer=ISSUER.rstrip("/"))], False, id="troubleshooting.md issuer without trailing slash"
        ),
        pytest.param([fic(issuer=ISSUER + "/")], False, id="troubleshooting.md issuer with an extra slash"),
        pytest.param([fic(issuer=ISSUER.upper())], False, id="troubleshooting.md issuer exact case"),
        pytest.param([fic(subj="system:serviceaccount:ns1:default")], False, id="subject names another SA"),
        pytest.param(
            [fic(subj="system:serviceaccount:ns2:api")], False, id="subject names another namespace"
        ),
        pytest.param([fic(subj="system:serviceaccount:NS1:api")], False, id="subject exact case"),
        pytest.param([fic(audiences=("api://other",))], False, id="audience does not match"),
        pytest.param([fic(audiences=("api://other", AUD))], True, id="audience among several"),
        pytest.param([fic(client_id=OTHER)], False, id="FIC on another identity"),
        pytest.param([fic(client_id=CID.upper())], True, id="client IDs are GUIDs: case-insensitive"),
        pytest.param([], False, id="no FIC at all"),
    ],
)
def test_exchange_needs_an_exact_fic(creds: list[FederatedCredential], ok: bool) -> None:
    error = ex(creds)
    if ok:
        assert error == ""
    else:
        assert error == AADSTS70021


def test_exchange_with_custom_audience() -> None:
    """§1.3: the webhook's --audience overrides the default; the FIC's audience must then match."""
    assert ex([fic(audiences=("api://custom",))], audience="api://custom") == ""
    assert ex([fic()], audience="api://custom").startswith("AADSTS70021")


def test_exchange_for_the_identity_asked() -> None:
    creds = [fic(), fic(client_id=OTHER, subj="system:serviceaccount:ns1:other")]
    assert ex(creds, OTHER).startswith("AADSTS70021"), "OTHER's FIC is for another ServiceAccount"
    assert exchange(
        creds, client_id=OTHER, issuer=ISSUER, namespace="ns1", service_account="other", audience=AUD
    ).ok


@pytest.mark.parametrize(
    ("cred", "says"),
    [
        pytest.param(fic(issuer=ISSUER.rstrip("/")), "has issuer", id="troubleshooting.md trailing slash"),
        pytest.param(fic(subj=SUBJ.upper()), "has subject", id="subject case"),
        pytest.param(fic(audiences=("x",)), "has audiences", id="audience"),
        pytest.param(fic(client_id=OTHER), "", id="not on this identity: no near miss"),
    ],
)
def test_near_miss_names_the_cause(cred: FederatedCredential, says: str) -> None:
    text = near_miss([cred], client_id=CID, issuer=ISSUER, subj=SUBJ, audience=AUD)
    assert (says in text) if says else text == ""


def test_fic_limit_is_20() -> None:
    """federated-identity-credential.md / overview "Limitations": at most 20 FICs per identity."""
    assert FIC_LIMIT == 20
