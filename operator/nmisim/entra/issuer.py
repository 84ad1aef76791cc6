"""The simulated Entra's OIDC discovery client: the keys of a federated credential's issuer, as Entra reads
them (OpenID Connect Discovery 1.0 §4): ``GET {issuer}/.well-known/openid-configuration``, then its
``jwks_uri``; keys cached by ``kid`` for :data:`KEY_TTL` seconds, fetched again for a ``kid`` not in the
cache (at most once per :data:`REFETCH_INTERVAL` seconds per issuer, so junk ``kid`` values cannot make it
hammer the issuer). Every failure (transport, status, JSON, an ``issuer`` that is not the one asked for, a
non-https ``jwks_uri``) is :class:`DiscoveryError`, which the endpoint answers as AADSTS90061.

The transport is injected (:data:`Transport`: GET a URL, return status and body), so this module does no
I/O of its own: the edge (:mod:`nmisim.entra.server`) gives it an HTTPS client, the tests a fake.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from nmisim.entra.jwt import JWTError, PublicKey

#: how long fetched keys are trusted (nmisim's choice: Entra's own cache time is not published)
KEY_TTL: Final = 300.0
#: an unknown ``kid`` refetches the JWKS at most this often per issuer
REFETCH_INTERVAL: Final = 5.0
WELL_KNOWN: Final = "/.well-known/openid-configuration"

#: GET ``url`` -> (HTTP status, body); raises :class:`DiscoveryError` (or OSError) when it cannot
Transport = Callable[[str], Awaitable[tuple[int, bytes]]]


class DiscoveryError(Exception):
    """The issuer's discovery document or keys could not be read (AADSTS90061)."""


class UnknownKey(Exception):
    """The issuer's keys were read but none has the assertion's ``kid`` (a signature failure)."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + WELL_KNOWN


@dataclass(slots=True)
class _Cached:
    keys: dict[str, PublicKey] = field(default_factory=dict)
    fetched: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _json_object(status: int, body: bytes, what: str) -> Mapping[str, Any]:
    if status != 200:
        raise DiscoveryError(f"{what}: HTTP {status}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DiscoveryError(f"{what}: not JSON") from exc
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{what}: not a JSON object")
    return doc


class IssuerKeys:
    """Keys by issuer and ``kid``."""

    def __init__(
        self,
        transport: Transport,
        *,
        ttl: float = KEY_TTL,
        refetch_interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        #: fetches done and failed (the edge's metrics read them)
        self.fetches = 0
        self.failures = 0

    def clear(self) -> None:
        self._cache.clear()

    async def _get(self, url: str, what: str) -> Mapping[str, Any]:
        if urlsplit(url).scheme != "https":
            raise DiscoveryError(f"{what}: {url} is not https")
        try:
            status, body = await self.transport(url)
        except DiscoveryError:
            raise
        except (TimeoutError, OSError, ValueError) as exc:
            raise DiscoveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
        return _json_object(status, body, what)

    async def fetch(self, issuer: str) -> dict[str, PublicKey]:
        """The issuer's keys by ``kid``, read now."""
        self.fetches += 1
        try:
            meta = await self._get(discovery_url(issuer), "openid-configuration")
            if meta.get("issuer") != issuer:
                raise DiscoveryError(f"openid-configuration: issuer {meta.get('issuer')!r}, not {issuer!r}")
            jwks_uri = meta.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise DiscoveryError("openid-configuration: no jwks_uri")
            jwks = await self._get(jwks_uri, "jwks")
            keys = jwks.get("keys")
            if not isinstance(keys, list):
                raise DiscoveryError("jwks: no keys list")
        except DiscoveryError:
            self.failures += 1
            raise
        out: dict[str, PublicKey] = {}
        for jwk in keys:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = PublicKey.from_jwk(jwk)
            except JWTError:
                continue  # another key type (EC): not usable for RS256, not an error
            out[key.kid] = key
        return out

    async def key(self, issuer: str, kid: str) -> PublicKey:
        """The key ``kid`` of ``issuer``. Raises :class:`DiscoveryError` or :class:`UnknownKey`."""
        cached = self._cache.setdefault(issuer, _Cached())
        async with cached.lock:
            now = self.clock()
            stale = now - cached.fetched >= self.ttl
            missing = kid not in cached.keys and now - cached.fetched >= self.refetch_interval
            if stale or missing:
                try:
                    cached.keys = await self.fetch(issuer)
                except DiscoveryError:
                    cached.keys, cached.fetched = {}, float("-inf")
                    raise
                cached.fetched = now
            found = cached.keys.get(kid)
        if found is None:
            raise UnknownKey(f"no key {kid!r} among {issuer}'s {sorted(cached.keys)}")
        return found
