"""The simulated Entra: exchanging a pod's projected ServiceAccount token for an access token
(workload-identity.md §4 "FIC rules and limits", troubleshooting.md).

An exchange for client ID ``C`` by pod ``P`` succeeds iff identity ``C`` has a federated credential whose
issuer equals the cluster's issuer exactly (trailing slash included), whose subject is
``system:serviceaccount:<P.namespace>:<P.serviceAccount>`` and whose audiences contain the token's audience;
otherwise ``AADSTS70021``. At most 20 credentials per identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nmisim.engine.config import FederatedCredential

FIC_LIMIT: Final = 20
AADSTS70021: Final = (
    "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: "
    "'{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'."
)
AADSTS700016: Final = (
    "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
)


def subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


@dataclass(frozen=True, slots=True)
class Exchange:
    """The outcome of one token exchange: the identity's client ID, or Entra's error."""

    client_id: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def matches(fic: FederatedCredential, issuer: str, subj: str, audience: str) -> bool:
    return fic.issuer == issuer and fic.subject == subj and audience in fic.audiences


def exchange(
    credentials: Iterable[FederatedCredential],
    *,
    client_id: str,
    issuer: str,
    namespace: str,
    service_account: str,
    audience: str,
) -> Exchange:
    """Exchange the projected token of ``namespace/service_account`` for ``client_id``'s access token."""
    return exchange_subject(
        credentials,
        client_id=client_id,
        issuer=issuer,
        subj=subject(namespace, service_account),
        audience=audience,
    )


def exchange_subject(
    credentials: Iterable[FederatedCredential], *, client_id: str, issuer: str, subj: str, audience: str
) -> Exchange:
    """:func:`exchange` for an assertion's ``sub`` as it is (the simulated Entra's endpoint reads it from the
    token, which need not be a ServiceAccount's): the one rule both the prediction and the endpoint use."""
    if not client_id:
        return Exchange("", AADSTS700016.format(client_id=client_id))
    for fic in credentials:
        if fic.client_id.lower() == client_id.lower() and matches(fic, issuer, subj, audience):
            return Exchange(client_id)
    return Exchange(client_id, AADSTS70021.format(issuer=issuer, subject=subj, audience=audience))


def near_miss(
    credentials: Iterable[FederatedCredential], *, client_id: str, issuer: str, subj: str, audience: str
) -> str:
    """Why the closest credential on ``client_id`` does not match ("" when none is close): the usual
    cause is the issuer's trailing slash."""
    for fic in credentials:
        if fic.client_id.lower() != client_id.lower():
            continue
        if fic.subject == subj and audience in fic.audiences and fic.issuer.rstrip("/") == issuer.rstrip("/"):
            return (
                f"credential {fic.name or '(unnamed)'} has issuer {fic.issuer!r}, the cluster's is {issuer!r}"
            )
        if fic.issuer == issuer and audience in fic.audiences and fic.subject.lower() == subj.lower():
            return f"credential {fic.name or '(unnamed)'} has subject {fic.subject!r}, not {subj!r}"
        if fic.issuer == issuer and fic.subject == subj:
            return (
                f"credential {fic.name or '(unnamed)'} has audiences {list(fic.audiences)}, not {audience!r}"
            )
    return ""
