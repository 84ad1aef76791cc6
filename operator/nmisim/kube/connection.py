"""How to reach the API server (URL, TLS, credentials) and the GET requests informers make through it."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

#: ``observe(kind, verb, code)``: counts a request (the operator's /metrics; verb is the HTTP method, as
#: for its writes); code "error" when no answer came
Observer = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the API server: base URL, TLS, and a function giving the auth headers (called for
    every request, so refreshed credentials are used)."""

    server: str
    ssl: ssl.SSLContext | bool
    auth: Callable[[], dict[str, str]]


def ssl_context(info: Any) -> ssl.SSLContext | bool:
    """TLS settings of a kopf ``ConnectionInfo``."""
    if info.insecure:
        return False
    ctx = ssl.create_default_context()
    if info.ca_path:
        ctx.load_verify_locations(cafile=info.ca_path)
    elif info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        ctx.load_verify_locations(cadata=data)
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(info.certificate_path, info.private_key_path)
    elif info.certificate_data and info.private_key_data:
        raise ValueError("inline client certificate data is not supported; use file paths")
    return ctx


def from_login(info: Any) -> Connection:
    """The connection of a kopf ``ConnectionInfo`` (kopf's login)."""
    headers = dict(info.as_http_headers())
    return Connection(str(info.server).rstrip("/"), ssl_context(info), lambda: headers)


class Transport:
    """GET requests to one API server over one session. ``conn`` may be replaced (a new login)."""

    def __init__(self, conn: Connection, observe: Observer | None = None) -> None:
        self.conn = conn
        self.observe = observe
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        return self._session

    async def get(self, path: str, timeout: float, *, kind: str = "") -> aiohttp.ClientResponse:
        """Start a GET (the caller reads and releases the response)."""
        verb = "GET"
        try:
            resp = await self.session.get(
                self.conn.server + path,
                headers=self.conn.auth(),
                ssl=self.conn.ssl,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=10),
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            if self.observe is not None:
                self.observe(kind, verb, "error")
            raise
        if self.observe is not None:
            self.observe(kind, verb, str(resp.status))
        return resp

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
