"""The HTTP side of a simulated request: the request as the caller sends it, the answer it gets, and what
Go's ``net/http`` adds to every answer (nmi-semantics §2, §8.1, §8.3).

:class:`Explanation` collects the plain-word steps of one request (``RequestResult.explanation``) and
builds its :class:`RequestResult`; it is not the verdict's :class:`nmisim.engine.verdict.Decision` trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlencode

from nmisim.engine.imds import IMDS_HOST, TOKEN_PATH
from nmisim.engine.models import AzureIdentity
from nmisim.engine.paths import go_unescape_path

DEFAULT_QUERY: Final = (("api-version", "2018-02-01"), ("resource", "https://management.azure.com/"))
DEFAULT_HEADERS: Final = (("Metadata", "true"),)
TEXT_CT: Final = "text/plain; charset=utf-8"
JSON_UTF8_CT: Final = "application/json; charset=utf-8"

SERVED_BY_NMI: Final = "nmi"
SERVED_BY_IMDS: Final = "imds"

#: where the caller sends the request: IMDS's address (DNATed to NMI from pod network namespaces only)
TARGET_IMDS: Final = "imds"
#: NMI's own listen address and port, reached without the DNAT (``--nmi-listen-address``/``--nmi-port``)
TARGET_NMI: Final = "nmi"
TARGETS: Final = (TARGET_IMDS, TARGET_NMI)

#: net/http buffers this much of a handler's body before it must choose between Content-Length and
#: chunked encoding (``server.go`` ``bufferBeforeChunkingSize``)
GO_BUFFER_BEFORE_CHUNKING: Final = 2048


@lru_cache(maxsize=256)
def canonical_header(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey`` for ASCII names: ``metadata`` -> ``Metadata``.
    Memoised: a pure function of the name, asked for the same few names by every request."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request as the caller sends it. ``query`` and ``headers`` keep order and repeats.

    ``path`` is the path of the request target exactly as sent (escaped form: ``//``, ``..`` and ``%2e``
    reach NMI as they are); :meth:`url_path` is Go's ``URL.Path``, the decoded form routes match on.
    """

    method: str = "GET"
    path: str = TOKEN_PATH
    query: tuple[tuple[str, str], ...] = DEFAULT_QUERY
    headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS
    #: the query string exactly as sent, when known (``URL.RawQuery``); else ``query`` url-encoded
    raw: str | None = None

    def query_values(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.query:
            out.setdefault(k, []).append(v)
        return out

    def q(self, key: str) -> str:
        """``r.URL.Query().Get(key)``: the first value or ``""``."""
        for k, v in self.query:
            if k == key:
                return v
        return ""

    def header(self, name: str) -> str:
        """``r.Header.Get(name)``: names compare canonically, first value wins."""
        want = canonical_header(name)
        for k, v in self.headers:
            if canonical_header(k) == want:
                return v
        return ""

    def canonical_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.headers:
            out.setdefault(canonical_header(k), v)
        return out

    def raw_query(self) -> str:
        return self.raw if self.raw is not None else urlencode(list(self.query))

    def url_path(self) -> str | None:
        """Go's ``URL.Path`` for this target: percent-decoded; None for a malformed escape."""
        return go_unescape_path(self.path)

    def url(self) -> str:
        qs = self.raw_query()
        return f"http://{IMDS_HOST}{self.path}" + (f"?{qs}" if qs else "")


#: the default token request (for https://management.azure.com/, no identity named), which every pod's
#: verdict simulates
DEFAULT_REQUEST: Final = HttpRequest()


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What the caller gets back (product.md §4 ``nmisim request``)."""

    route: str
    status: int | None
    headers: dict[str, str]
    body: str
    served_by: str | None
    identity: str | None
    wait_seconds: float
    explanation: tuple[str, ...]
    #: the error text the caller sees, if any (plain text without the trailing newline)
    error: str | None = None
    #: the AzureIdentity NMI chose, if any (for findings)
    azure_identity: AzureIdentity | None = field(default=None, compare=False)
    #: NMI's per-request log line(s): only the token and /host/token routes write one (§8.12)
    nmi_log: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "status": self.status,
            "headers": dict(sorted(self.headers.items())),
            "body": self.body,
            "servedBy": self.served_by,
            "identity": self.identity,
            "waitSeconds": json_number(self.wait_seconds),
            "explanation": list(self.explanation),
        }


def json_number(value: float) -> int | float:
    """Integral seconds print as integers (80, not 80.0)."""
    return int(value) if float(value).is_integer() else round(value, 3)


def with_framing(headers: Mapping[str, str], body: str) -> dict[str, str]:
    """The body framing Go's ``net/http`` adds when the handler returns (``server.go``
    ``chunkWriter.writeHeader``): a handler that set no Content-Length gets one when its whole body fit in
    the 2048-byte buffer (even ``0``), else ``Transfer-Encoding: chunked``. ``Date`` is also added at serve
    time; nmisim leaves it out to stay deterministic."""
    out = dict(headers)
    if "Content-Length" in out or "Transfer-Encoding" in out:
        return out
    size = len(body.encode("utf-8", "surrogateescape"))
    if size <= GO_BUFFER_BEFORE_CHUNKING:
        out["Content-Length"] = str(size)
    else:
        out["Transfer-Encoding"] = "chunked"
    return out


class Explanation:
    """The steps of one simulated request in plain words, the time NMI kept the caller waiting and NMI's
    log line(s), from which the request's :class:`RequestResult` is built."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.wait = 0.0
        self.log: tuple[str, ...] = ()

    def add(self, step: str) -> None:
        self.steps.append(step)

    def result(
        self,
        route: str,
        status: int,
        headers: Mapping[str, str],
        body: str,
        served_by: str | None,
        *,
        identity: str | None = None,
        error: str | None = None,
        azure_identity: AzureIdentity | None = None,
        framed: bool = True,
    ) -> RequestResult:
        return RequestResult(
            route,
            status,
            with_framing(headers, body) if framed else dict(headers),
            body,
            served_by,
            identity,
            self.wait,
            tuple(self.steps),
            error,
            azure_identity,
            self.log,
        )

    def http_error(
        self,
        route: str,
        status: int,
        message: str,
        extra: Mapping[str, str] | None = None,
        served_by: str = SERVED_BY_NMI,
    ) -> RequestResult:
        """Go ``http.Error``: plain-text body = message + newline."""
        headers = {"Content-Type": TEXT_CT, "X-Content-Type-Options": "nosniff", **(extra or {})}
        return self.result(route, status, headers, message + "\n", served_by, error=message)
