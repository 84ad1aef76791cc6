"""``nmisim entra``'s HTTPS server (aiohttp): the simulated Microsoft Entra token endpoint pods reach as
``https://login.microsoftonline.com/`` (docs/migration.md "The simulated Entra").

Routes: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (its endpoints built from the Host the client
used), ``GET /{tenant}/discovery/v2.0/keys`` (the simulator's own key, which signs its fake access tokens),
``POST /{tenant}/oauth2/v2.0/token`` (:func:`nmisim.entra.exchange.token`); anything else is a 404 JSON.
The body of a token request is read to :data:`~nmisim.entra.exchange.MAX_BODY` bytes within
:data:`BODY_TIMEOUT` seconds; whatever goes wrong on the wire is answered in Entra's error JSON.

The issuers' keys are fetched over HTTPS (:class:`HttpsTransport`): anonymously (no credentials, no proxy,
no netrc), verified against ``--issuer-ca`` (else the system's CAs), with host names mapped to
``--issuer-address`` so that the cluster's issuer ``https://kubernetes.default.svc`` is reached at
``127.0.0.1:<port>`` with that server name; link-local addresses (IMDS's 169.254.169.254) are never dialled.

One log line per exchange and Prometheus metrics on their own listener (``--metrics-listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from nmisim.entra.exchange import (
    MAX_BODY,
    Answer,
    Directory,
    correlation_of,
    error_body,
    rejected,
    token,
)
from nmisim.entra.issuer import DiscoveryError, IssuerKeys
from nmisim.entra.jwt import PrivateKey

log = logging.getLogger("nmisim.entra")

#: seconds to read a token request's body
BODY_TIMEOUT: Final = 10.0
#: an issuer's discovery document or JWKS: bytes read at most, seconds allowed
FETCH_MAX_BYTES: Final = 1 << 20
FETCH_TIMEOUT: Final = 5.0
JSON_TYPE: Final = "application/json; charset=utf-8"
_HOST: Final = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_TENANT: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
COMMON_TENANTS: Final = frozenset({"common", "organizations", "consumers"})


def link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_link_local
    except ValueError:
        return False


#: kube-apiserver answers /openid/v1/jwks as application/jwk-set+json and 406 to an Accept without it
#: (measured on the real node: ``jwks: HTTP 406`` with application/json alone)
ISSUER_ACCEPT: Final = "application/json, application/jwk-set+json"


class OverrideResolver(AbstractResolver):
    """Names in ``overrides`` (``"*"``: every name) resolve to their ``(ip, port)``; others through the
    system resolver; a link-local answer is refused."""

    def __init__(self, overrides: Mapping[str, tuple[str, int]]) -> None:
        self.overrides = dict(overrides)
        self._system = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = self.overrides.get(host.lower()) or self.overrides.get("*")
        if target is not None:
            ip, tport = target
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [
                ResolveResult(
                    hostname=host, host=ip, port=tport, family=fam, proto=0, flags=socket.AI_NUMERICHOST
                )
            ]
        out = [r for r in await self._system.resolve(host, port, family) if not link_local(r["host"])]
        if not out:
            raise OSError(f"{host}: no usable address (link-local addresses are never dialled)")
        return out

    async def close(self) -> None:
        await self._system.close()


class HttpsTransport:
    """GET over HTTPS for :class:`~nmisim.entra.issuer.IssuerKeys`; created inside the running loop."""

    def __init__(
        self, ca_file: str | None, overrides: Mapping[str, tuple[str, int]], on_fetch: Callable[[bool], None]
    ) -> None:
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        # hack/cluster.sh's CA has no keyUsage: Go's clients accept it, Python 3.13's strict default does not
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        self.ssl_context = ctx
        self.session = ClientSession(
            connector=TCPConnector(ssl=ctx, resolver=OverrideResolver(overrides), force_close=True),
            timeout=ClientTimeout(total=FETCH_TIMEOUT),
            trust_env=False,
        )
        self.on_fetch = on_fetch

    async def __call__(self, url: str) -> tuple[int, bytes]:
        ok = False
        try:
            host = urlsplit(url).hostname or ""
            if link_local(host):
                raise DiscoveryError(f"{url}: link-local addresses are never dialled")
            async with self.session.get(
                url, allow_redirects=False, headers={"Accept": ISSUER_ACCEPT}
            ) as resp:
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 << 10):
                    body += chunk
                    if len(body) > FETCH_MAX_BYTES:
                        raise DiscoveryError(f"{url}: answer over {FETCH_MAX_BYTES} bytes")
                ok = resp.status == 200
                return resp.status, bytes(body)
        except DiscoveryError:
            raise
        except Exception as exc:  # aiohttp's ClientError, ssl errors, timeouts: all are "cannot fetch"
            raise DiscoveryError(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self.on_fetch(ok)

    async def close(self) -> None:
        await self.session.close()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nmisim_entra_token_requests",
            "token requests answered, by outcome (issued or AADSTSnnnn) and the check that answered",
            ["outcome", "check"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "nmisim_entra_token_request_duration_seconds",
            "time to answer a token request",
            ["outcome"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.fetches = Counter(
            "nmisim_entra_issuer_fetches",
            "issuer documents fetched (discovery, JWKS), by result",
            ["result"],
            registry=self.registry,
        )
        self.loads = Counter(
            "nmisim_entra_directory_loads",
            "reads of the federated credentials, by result",
            ["result"],
            registry=self.registry,
        )
        self.credentials = Gauge(
            "nmisim_entra_federated_credentials", "federated credentials known", registry=self.registry
        )
        self.clients = Gauge(
            "nmisim_entra_applications", "applications (client IDs) known", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(slots=True)
class Options:
    listen: tuple[str, int]
    tls_cert: str | None = None
    tls_key: str | None = None
    issuer_ca: str | None = None
    #: host name (or ``*``) -> (ip, port)
    issuer_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    clock_offset: float = 0.0
    #: seconds between re-reads of the directory (0: only on SIGHUP)
    reload_seconds: float = 30.0
    metrics_listen: tuple[str, int] | None = None
    log_json: bool = False


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={
            "Content-Type": JSON_TYPE,
            "Cache-Control": "no-store, no-cache",
            "Pragma": "no-cache",
            **(headers or {}),
        },
    )


def openid_configuration(host: str, tenant: str) -> dict[str, Any]:
    """Entra's v2.0 discovery document for ``tenant`` as seen at ``https://{host}``."""
    base = f"https://{host}/{tenant}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"https://{host}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver", "oid"],
        "tenant_region_scope": None,
        "cloud_instance_name": "microsoftonline.com",
        "nmisim": "simulated Entra - not Microsoft Entra ID",
    }


class EntraServer:
    """The app, its directory (re-read by :meth:`reload`) and the issuer keys."""

    def __init__(
        self,
        options: Options,
        load: Callable[[], Directory],
        signer: PrivateKey,
        *,
        keys: IssuerKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.load = load
        self.signer = signer
        self.clock = clock
        self.metrics = Metrics()
        self.directory = load()
        self._count(self.directory)
        self.metrics.loads.labels("ok").inc()
        self._transport: HttpsTransport | None = None
        self._own_keys = keys is None
        self.keys = keys or IssuerKeys(self._fetch)
        self._runners: list[web.AppRunner] = []
        self.ports: list[int] = []

    def _count(self, d: Directory) -> None:
        self.metrics.credentials.set(len(d.credentials))
        self.metrics.clients.set(len(d.clients))

    async def _fetch(self, url: str) -> tuple[int, bytes]:
        if self._transport is None:
            o = self.options
            self._transport = HttpsTransport(
                o.issuer_ca,
                o.issuer_addresses,
                lambda ok: self.metrics.fetches.labels("ok" if ok else "error").inc(),
            )
        return await self._transport(url)

    async def reload(self, *, forget_keys: bool = False) -> None:
        """Read the directory again (in a thread: a cluster read blocks); a failure keeps the old one.
        ``forget_keys`` (SIGHUP): the issuers' cached keys are fetched again on next use."""
        if forget_keys and self._own_keys:
            self.keys.clear()
        try:
            d = await asyncio.to_thread(self.load)
        except Exception as exc:
            self.metrics.loads.labels("error").inc()
            log.warning("entra: reading the federated credentials failed, keeping the last ones: %s", exc)
            return
        self.metrics.loads.labels("ok").inc()
        if d != self.directory:
            log.info(
                "entra: directory re-read: tenant %s, %d federated credentials, %d applications",
                d.tenant_id,
                len(d.credentials),
                len(d.clients),
            )
        self.directory = d
        self._count(d)

    # --- handlers -------------------------------------------------------------------------------------

    def _host(self, request: web.Request) -> str | None:
        host = request.host
        return host if _HOST.match(host) else None

    def _tenant_error(self, tenant: str, request: web.Request) -> web.Response | None:
        if tenant.lower() == self.directory.tenant_id.lower() or tenant.lower() in COMMON_TENANTS:
            return None
        cid = correlation_of(request.headers.get("client-request-id"))
        return _json(400, error_body(90002, {"tenant": tenant[:64]}, self.clock(), cid))

    async def discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        bad = self._tenant_error(tenant, request)
        if bad is not None:
            return bad
        host = self._host(request)
        if host is None:
            return _json(400, {"error": "invalid_request", "error_description": "bad Host header"})
        return _json(200, openid_configuration(host, tenant))

    async def jwks(self, request: web.Request) -> web.Response:
        bad = self._tenant_error(request.match_info["tenant"], request)
        if bad is not None:
            return bad
        return _json(200, {"keys": [self.signer.public().jwk()]})

    async def token(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        tenant = request.match_info["tenant"]
        cid = correlation_of(request.headers.get("client-request-id"))
        headers = {"client-request-id": cid} if cid else {}
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            answer = rejected(
                90015, {}, self.clock(), cid, check="form", detail=f"body over {MAX_BODY} bytes"
            )
            headers["Connection"] = "close"
        except (TimeoutError, OSError, ValueError) as exc:
            detail = f"body not read: {type(exc).__name__}"
            answer = rejected(900144, {"name": "grant_type"}, self.clock(), cid, check="form", detail=detail)
            headers["Connection"] = "close"
        else:
            answer = await token(
                tenant,
                body,
                request.headers.get("Content-Type", ""),
                directory=self.directory,
                keys=self.keys,
                signer=self.signer,
                now=self.clock(),
                clock_offset=self.options.clock_offset,
                correlation_id=cid,
            )
        seconds = time.monotonic() - started
        self._record(tenant, answer, seconds, cid)
        return _json(answer.status, answer.body, headers)

    def _record(self, tenant: str, a: Answer, seconds: float, cid: str) -> None:
        outcome = "issued" if a.code == 0 else f"AADSTS{a.code}"
        self.metrics.requests.labels(outcome, a.check).inc()
        self.metrics.duration.labels(outcome).observe(seconds)
        fields = {
            "tenant": tenant[:64],
            "client_id": a.client_id,
            "iss": a.iss,
            "sub": a.sub,
            "aud": a.aud,
            "outcome": outcome,
            "status": a.status,
            "check": a.check,
            "ms": round(seconds * 1000, 1),
            "detail": a.detail,
            "correlation_id": cid,
        }
        if self.options.log_json:
            log.info("%s", json.dumps({"msg": "token exchange", **fields}, separators=(",", ":")))
        else:
            log.info("token exchange %s", " ".join(f"{k}={json.dumps(v)}" for k, v in fields.items()))

    async def not_found(self, request: web.Request) -> web.Response:
        return _json(
            404,
            {
                "error": "not_found",
                "error_description": "nmisim simulated Entra: no endpoint "
                f"{request.method} {request.path[:200]}",
            },
        )

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status in {404, 405}:
                return await self.not_found(request)
            return _json(exc.status, {"error": "invalid_request", "error_description": exc.reason})
        except Exception:
            log.exception("entra: %s %s failed", request.method, request.path[:200])
            return _json(
                500, {"error": "server_error", "error_description": "nmisim simulated Entra: internal error"}
            )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self.jwks)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def ssl_context(self) -> ssl.SSLContext | None:
        o = self.options
        if not o.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(
            o.tls_cert, o.tls_key, password=lambda: b""
        )  # encrypted: an error, never a prompt
        return ctx

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self.options.listen[0], self.options.listen[1], ssl_context=self.ssl_context()
        )
        await site.start()
        self._runners.append(runner)
        self.ports.append(_port(runner))
        if self.options.metrics_listen:
            mapp = web.Application()
            mapp.router.add_get("/metrics", self.metrics_handler)
            mrunner = web.AppRunner(mapp, access_log=None)
            await mrunner.setup()
            await web.TCPSite(mrunner, *self.options.metrics_listen).start()
            self._runners.append(mrunner)
            self.ports.append(_port(mrunner))

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Start, re-read the directory on SIGHUP and every ``reload_seconds``, stop on SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        hup = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        await self.start()
        if ready is not None:
            ready()
        try:
            while not stop.is_set():
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())]
                timeout = self.options.reload_seconds or None
                _, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in pending:
                    w.cancel()
                if stop.is_set():
                    break
                forget = hup.is_set()
                hup.clear()
                await self.reload(forget_keys=forget)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()


def _port(runner: web.AppRunner) -> int:
    server = runner.addresses
    return int(server[0][1]) if server else 0
