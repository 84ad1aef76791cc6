"""``nmisim entra``'s server over real sockets and real TLS: the simulated Entra (certificate for
login.microsoftonline.com from a CA named as simulated) and a fake OIDC issuer (another aiohttp server, TLS
for kubernetes.default.svc, reached through --issuer-address) in one event loop thread; the client is
http.client with the Entra CA, as an SDK with the CA in its bundle."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from entra_support import (
    CID,
    CID_NO_FIC,
    FORM_TYPE,
    ISSUER,
    TENANT,
    assertion,
    form,
    issuer_documents,
    key,
    make_directory,
    pki,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmisim.entra import server as server_module
from nmisim.entra.exchange import Directory
from nmisim.entra.jwt import decode, verify_rs256
from nmisim.entra.server import EntraServer, Options

HOST = "login.microsoftonline.com"
ENTRA_CA = "nmisim simulated Entra CA - not Microsoft"


class FakeIssuer:
    """The API server's OIDC endpoints, over TLS, anonymous; ``status`` makes discovery fail."""

    def __init__(self) -> None:
        self.status = 200
        self.port = 0
        self.hits: list[str] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        p = pki("issuer", "nmisim-local-ca", "DNS:kubernetes.default.svc", "IP:127.0.0.1", strict=False)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(p.cert, p.key)
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.meta)
        app.router.add_get("/openid/v1/jwks", self.jwks)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    def docs(self) -> tuple[bytes, bytes]:
        return issuer_documents(
            ISSUER, f"https://127.0.0.1:{self.port}/openid/v1/jwks", key("issuer").public()
        )

    async def meta(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        assert "Authorization" not in request.headers  # anonymous, as Entra
        if self.status != 200:
            return web.Response(status=self.status, text='{"kind":"Status"}')
        return web.Response(body=self.docs()[0], content_type="application/json")

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        # as kube-apiserver: 406 unless the Accept header admits application/jwk-set+json
        if "application/jwk-set+json" not in request.headers.get("Accept", ""):
            return web.Response(status=406, text='{"kind":"Status","code":406}')
        return web.Response(body=self.docs()[1], content_type="application/jwk-set+json")


class Stack:
    """The fake issuer and the simulated Entra in one loop thread."""

    def __init__(self, directory: Directory | None = None, offset: float = 0.0) -> None:
        self.issuer = FakeIssuer()
        self.directory = directory or make_directory()
        self.offset = offset
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.entra: EntraServer | None = None

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> Stack:
        self.thread.start()
        self.run(self.issuer.start())
        p = pki("entra", ENTRA_CA, f"DNS:{HOST}")
        options = Options(
            listen=("127.0.0.1", 0),
            tls_cert=str(p.cert),
            tls_key=str(p.key),
            issuer_ca=str(
                pki(
                    "issuer", "nmisim-local-ca", "DNS:kubernetes.default.svc", "IP:127.0.0.1", strict=False
                ).ca
            ),
            issuer_addresses={"kubernetes.default.svc": ("127.0.0.1", self.issuer.port)},
            clock_offset=self.offset,
            metrics_listen=("127.0.0.1", 0),
        )
        self.entra = EntraServer(options, lambda: self.directory, key("entra"))
        self.run(self.entra.start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.entra is not None
        self.run(self.entra.stop())
        if self.issuer.runner is not None:
            self.run(self.issuer.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def port(self) -> int:
        assert self.entra is not None
        return self.entra.ports[0]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        ctx = ssl.create_default_context(cafile=str(pki("entra", ENTRA_CA, f"DNS:{HOST}").ca))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13's clients
        conn = _Conn(self.port, ctx)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)
        finally:
            conn.close()

    def token(self, body: bytes, tenant: str = TENANT, **headers: str) -> tuple[int, dict[str, str], Any]:
        return self.request(
            "POST", f"/{tenant}/oauth2/v2.0/token", body, {"Content-Type": FORM_TYPE, **headers}
        )


class _Conn(http.client.HTTPSConnection):
    """Dials 127.0.0.1 and verifies the certificate for login.microsoftonline.com (hostAliases' effect)."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        super().__init__(HOST, port, context=ctx, timeout=20)
        self._ctx = ctx

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=HOST)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack() as s:
        yield s


def test_discovery_document_is_built_from_the_host_the_client_used(stack: Stack) -> None:
    status, headers, doc = stack.request("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration")
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    base = f"https://{HOST}:{stack.port}/{TENANT}"
    assert doc["issuer"] == f"{base}/v2.0"
    assert doc["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert doc["jwks_uri"] == f"{base}/discovery/v2.0/keys"
    status, _, body = stack.request(
        "GET", "/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration"
    )
    assert status == 400 and body["error"] == "invalid_tenant" and body["error_codes"] == [90002]


def test_token_round_trip_verified_with_the_published_key(stack: Stack) -> None:
    cid = "0b5d4c3a-1111-4222-8333-444455556666"
    status, headers, body = stack.token(form(), **{"client-request-id": cid})
    assert status == 200, body
    assert headers["client-request-id"] == cid
    assert headers["cache-control"].startswith("no-store")
    _, _, jwks = stack.request("GET", f"/{TENANT}/discovery/v2.0/keys")
    (jwk,) = jwks["keys"]
    jws = decode(body["access_token"])
    assert jwk["kid"] == jws.header["kid"]
    from nmisim.entra.jwt import PublicKey  # noqa: PLC0415

    assert verify_rs256(PublicKey.from_jwk(jwk), jws.signing_input, jws.signature)
    assert jws.claims["nmisim"] == "simulated token - not issued by Microsoft Entra ID"
    assert "/openid/v1/jwks" in stack.issuer.hits  # the JWKS was fetched over TLS, through --issuer-address


def test_70021_over_the_wire(stack: Stack) -> None:
    status, _, body = stack.token(form(client_id=CID_NO_FIC))
    assert status == 400 and body["error_codes"] == [70021]
    assert f"Assertion Issuer: '{ISSUER}'" in body["error_description"]


def test_90061_when_the_issuer_refuses_then_recovers(stack: Stack) -> None:
    stack.issuer.status = 401
    assert stack.entra is not None
    stack.entra.keys.clear()  # SIGHUP's effect (reload(forget_keys=True))
    try:
        status, _, body = stack.token(form())
        assert status == 400 and body["error_codes"] == [90061] and "error_uri" not in body
    finally:
        stack.issuer.status = 200
    status, _, body = stack.token(form())
    assert status == 200, body


def test_not_found_and_wrong_methods_are_json_404s(stack: Stack) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", f"/{TENANT}/oauth2/v2.0/token"),
        ("POST", "/x/y"),
        ("GET", "/common/discovery/instance"),
    ]:
        status, headers, body = stack.request(method, path)
        assert status == 404 and body["error"] == "not_found", (method, path)
        assert headers["content-type"].startswith("application/json")


def test_a_body_over_the_limit_is_entras_json(stack: Stack) -> None:
    status, _, body = stack.token(b"a=" + b"x" * (200 << 10))
    assert status == 400 and body["error_codes"] == [90015]


def test_a_stalled_body_is_answered_not_held(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "BODY_TIMEOUT", 0.5)
    ctx = ssl.create_default_context(cafile=str(pki("entra", ENTRA_CA, f"DNS:{HOST}").ca))
    with (
        socket.create_connection(("127.0.0.1", stack.port), 10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as s,
    ):
        s.sendall(
            f"POST /{TENANT}/oauth2/v2.0/token HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {FORM_TYPE}\r\n"
            "Content-Length: 1000\r\n\r\ngrant_type=".encode()
        )
        started = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert time.monotonic() - started < 5
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(payload)["error_codes"] == [900144]


def test_metrics_and_the_log_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nmisim.entra"):
        stack.token(form(client_id=CID_NO_FIC))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("token exchange"))
    for part in (
        f'tenant="{TENANT}"',
        f'client_id="{CID_NO_FIC}"',
        f'iss="{ISSUER}"',
        'sub="system:serviceaccount:ns:app"',
        'aud="api://AzureADTokenExchange"',
        'outcome="AADSTS70021"',
        "status=400",
        "ms=",
    ):
        assert part in line, line
    assert stack.entra is not None
    conn = http.client.HTTPConnection("127.0.0.1", stack.entra.ports[1], timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert 'nmisim_entra_token_requests_total{check="credential",outcome="AADSTS70021"}' in text
    assert "nmisim_entra_token_request_duration_seconds_bucket" in text
    assert "nmisim_entra_federated_credentials 1.0" in text
    assert 'nmisim_entra_issuer_fetches_total{result="ok"}' in text


def test_700024_with_the_clock_offset_over_the_wire() -> None:
    with Stack(offset=7200) as s:
        status, _, body = s.token(form(assertion()))
    assert status == 401 and body["error"] == "invalid_client" and body["error_codes"] == [700024]


def test_reload_reads_the_directory_again_and_keeps_it_on_failure(stack: Stack) -> None:
    assert stack.entra is not None
    entra = stack.entra
    old = entra.directory
    calls = []

    def load() -> Directory:
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bad file")
        return make_directory(
            *old.credentials,
            *make_directory().credentials,
            clients=(CID_NO_FIC, "dddddddd-0000-4000-8000-000000000004"),
        )

    entra.load = load
    try:
        stack.run(entra.reload())
        assert "dddddddd-0000-4000-8000-000000000004" in entra.directory.clients
        before = entra.directory
        stack.run(entra.reload())
        assert entra.directory is before
    finally:
        entra.load = lambda: old
        stack.run(entra.reload())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from([FORM_TYPE, "text/plain", "", "multipart/form-data; boundary=x"]),
)
def test_fuzzed_bodies_on_the_wire_get_entras_json(stack: Stack, body: bytes, content_type: str) -> None:
    status, _, answer = stack.request(
        "POST", f"/{TENANT}/oauth2/v2.0/token", body, {"Content-Type": content_type} if content_type else {}
    )
    assert status in {400, 401}
    assert answer["error_description"].startswith(f"AADSTS{answer['error_codes'][0]}: ")


def test_the_certificate_is_checked_by_clients() -> None:
    """A client that trusts only the system store refuses the simulated Entra (its CA is not Microsoft's)."""
    with Stack() as s:
        conn = _Conn(s.port, ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/")
        conn.close()
    assert CID  # the module's client id is the one with a credential


def test_the_issuer_fetch_is_not_strict_about_the_clusters_ca(stack: Stack) -> None:
    """hack/cluster.sh's CA has no keyUsage, which VERIFY_X509_STRICT (Python 3.13's default) refuses."""

    async def flags() -> int:
        t = server_module.HttpsTransport(None, {}, lambda ok: None)
        try:
            return int(t.ssl_context.verify_flags)
        finally:
            await t.close()

    assert not stack.run(flags()) & ssl.VERIFY_X509_STRICT
