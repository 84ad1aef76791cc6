"""The simulated Entra's OIDC discovery client with an injected transport: discovery then JWKS, the cache
by kid and TTL, the refetch on an unknown kid (rate-limited), and every failure as DiscoveryError."""

from __future__ import annotations

import asyncio
import json

import pytest
from entra_support import ISSUER, issuer_documents, key

from nmisim.entra.issuer import DiscoveryError, IssuerKeys, UnknownKey

JWKS = "https://127.0.0.1:6443/openid/v1/jwks"


class Fake:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.calls: list[str] = []
        self.set_keys("issuer")

    def set_keys(self, *names: str) -> None:
        meta, jwks = issuer_documents(ISSUER, JWKS, *(key(n).public() for n in names))
        self.routes = {ISSUER + "/.well-known/openid-configuration": (200, meta), JWKS: (200, jwks)}

    async def __call__(self, url: str) -> tuple[int, bytes]:
        self.calls.append(url)
        if url not in self.routes:
            raise OSError("connection refused")
        return self.routes[url]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_discovery_then_jwks_then_cached() -> None:
    fake, clock = Fake(), Clock()
    keys = IssuerKeys(fake, clock=clock, ttl=300, refetch_interval=5)

    async def go() -> None:
        assert await keys.key(ISSUER, "issuer") == key("issuer").public()
        assert fake.calls == [ISSUER + "/.well-known/openid-configuration", JWKS]
        await keys.key(ISSUER, "issuer")
        assert len(fake.calls) == 2  # cached
        clock.t += 300
        await keys.key(ISSUER, "issuer")
        assert len(fake.calls) == 4  # the TTL ran out

    asyncio.run(go())


def test_unknown_kid_refetches_once_per_interval() -> None:
    fake, clock = Fake(), Clock()
    keys = IssuerKeys(fake, clock=clock, ttl=300, refetch_interval=5)

    async def go() -> None:
        await keys.key(ISSUER, "issuer")
        fake.set_keys("issuer", "rotated")  # the API server's key was rotated
        clock.t += 1
        with pytest.raises(UnknownKey):
            await keys.key(ISSUER, "rotated")  # within the interval: no refetch
        assert len(fake.calls) == 2
        clock.t += 5
        assert await keys.key(ISSUER, "rotated") == key("rotated").public()
        assert len(fake.calls) == 4
        clock.t += 5
        with pytest.raises(UnknownKey):
            await keys.key(ISSUER, "junk")
        with pytest.raises(UnknownKey):
            await keys.key(ISSUER, "junk")
        assert len(fake.calls) == 6  # junk kids cost one refetch per interval, not one per request

    asyncio.run(go())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"meta": (401, b'{"kind":"Status"}')}, "HTTP 401", id="discovery forbidden"),
        pytest.param({"meta": None}, "OSError", id="issuer unreachable"),
        pytest.param({"meta": (200, b"not json")}, "not JSON", id="discovery not JSON"),
        pytest.param({"meta": (200, b"[]")}, "not a JSON object", id="discovery a list"),
        pytest.param({"meta_doc": {"issuer": ISSUER + "/", "jwks_uri": JWKS}}, "issuer", id="another issuer"),
        pytest.param({"meta_doc": {"issuer": ISSUER}}, "no jwks_uri", id="no jwks_uri"),
        pytest.param(
            {"meta_doc": {"issuer": ISSUER, "jwks_uri": "http://x/jwks"}}, "not https", id="http jwks"
        ),
        pytest.param({"jwks": (500, b"{}")}, "HTTP 500", id="jwks 500"),
        pytest.param({"jwks": (200, b'{"keys": 1}')}, "no keys list", id="jwks without keys"),
    ],
)
def test_failures_are_discovery_errors(change: dict[str, object], why: str) -> None:
    fake = Fake()
    meta_url = ISSUER + "/.well-known/openid-configuration"
    if "meta" in change:
        if change["meta"] is None:
            del fake.routes[meta_url]
        else:
            fake.routes[meta_url] = change["meta"]  # type: ignore[assignment]
    if "meta_doc" in change:
        fake.routes[meta_url] = (200, json.dumps(change["meta_doc"]).encode())
    if "jwks" in change:
        fake.routes[JWKS] = change["jwks"]  # type: ignore[assignment]
    keys = IssuerKeys(fake)
    with pytest.raises(DiscoveryError, match=why):
        asyncio.run(keys.key(ISSUER, "issuer"))
    assert keys.failures == 1


def test_a_failure_is_not_cached_and_a_recovery_is_seen() -> None:
    fake = Fake()
    good = dict(fake.routes)
    fake.routes = {}
    keys = IssuerKeys(fake, refetch_interval=5)

    async def go() -> None:
        with pytest.raises(DiscoveryError):
            await keys.key(ISSUER, "issuer")
        fake.routes = good
        assert await keys.key(ISSUER, "issuer") == key("issuer").public()

    asyncio.run(go())


def test_non_rsa_and_encryption_keys_are_skipped() -> None:
    fake = Fake()
    meta, _ = issuer_documents(ISSUER, JWKS)
    jwks = {
        "keys": [
            {"kty": "EC", "kid": "ec"},
            {**key("other").public().jwk(), "use": "enc"},
            key("issuer").public().jwk(),
        ]
    }
    fake.routes = {
        ISSUER + "/.well-known/openid-configuration": (200, meta),
        JWKS: (200, json.dumps(jwks).encode()),
    }
    keys = IssuerKeys(fake)
    assert asyncio.run(keys.fetch(ISSUER)) == {"issuer": key("issuer").public()}


def test_a_trailing_slash_issuer_asks_the_same_document() -> None:
    fake = Fake()
    meta, jwks = issuer_documents(ISSUER + "/", JWKS, key("issuer").public())
    fake.routes = {ISSUER + "/.well-known/openid-configuration": (200, meta), JWKS: (200, jwks)}
    assert asyncio.run(IssuerKeys(fake).key(ISSUER + "/", "issuer")) == key("issuer").public()
