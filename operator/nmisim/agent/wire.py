"""HTTP/1.x on the wire as NMI's Go server (``net/http``, Go 1.20 era) reads and writes it.

The engine decides what NMI answers; this module is what ``net/http`` does around it, so that a client
sees the bytes a Go server would send:

* :func:`parse_head` reads a request head (``http.ReadRequest`` + ``(*conn).readRequest``) and raises
  :class:`WireError` for what Go answers itself before any handler: ``400 Bad Request`` (malformed
  request line, method, version, URI or header line, ``: missing required Host header``, ``: malformed
  Host header``, ``: invalid header name``/``value``, ``: unsupported protocol version``), ``501`` for an
  unsupported ``Transfer-Encoding``, and (in the server) ``431`` for a head over ``MaxHeaderBytes``.
  Those answers are written raw (no ``Date``), with ``Connection: close``, and the connection closed.
* :func:`render_response` writes a handler's answer: status line, the handler's headers, ``Date``, the
  framing ``net/http`` adds (``Connection``, chunked bodies), no body for ``HEAD``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

#: ``http.DefaultMaxHeaderBytes`` plus the 4096 bytes of slack of ``initialReadLimitSize``
MAX_HEADER_BYTES: Final = (1 << 20) + 4096
#: ``maxPostHandlerReadBytes``: unread request body Go discards to keep a connection alive
MAX_POST_HANDLER_READ: Final = 256 << 10

_ERROR_HEADERS: Final = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HOST_CHARS: Final = frozenset(
    "!$%&'()*+,-.:;=[]_~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_SCHEME_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CL_RE: Final = re.compile(r"^[0-9]+$")


class WireError(Exception):
    """A response ``net/http`` writes itself (no handler ran), after which it closes the connection."""

    def __init__(self, status: int, detail: str = "", body: str | None = None) -> None:
        self.status = status
        self.detail = detail
        public = f"{status} {status_text(status)}" + (f": {detail}" if detail else "")
        self.status_line = public if body is None else f"{status} {status_text(status)}"
        self.body = public if body is None else body
        super().__init__(self.body)

    def render(self) -> bytes:
        if self.status == 417:
            # (*response).sendExpectationFailed: a normal response, Connection: close, empty body
            return (
                f"HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nDate: {_DATE.now()}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        # server.go (*conn).serve: fmt.Fprintf(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
        return f"HTTP/1.1 {self.status_line}{_ERROR_HEADERS}{self.body}".encode("utf-8", "surrogateescape")


def header_too_large() -> WireError:
    return WireError(431)


def status_text(code: int) -> str:
    """Go's ``http.StatusText`` for the codes NMI uses (Python's phrases are the same ones)."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"status code {code}"


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A request head as ``net/http`` hands it to the handler."""

    method: str
    target: str
    proto: tuple[int, int]
    #: header lines as sent (name as sent, value trimmed), in order, ``Host`` included
    headers: tuple[tuple[str, str], ...]
    #: the path of the request target in its escaped form (``URL.EscapedPath`` input), and the raw query
    path: str
    raw_query: str
    #: ``req.Close``: the client asked to close after this response
    close: bool
    #: body framing: ``Content-Length`` (0 when absent) or chunked
    content_length: int
    chunked: bool
    expect_continue: bool

    def header(self, name: str) -> str:
        want = name.lower()
        for k, v in self.headers:
            if k.lower() == want:
                return v
        return ""

    @property
    def http11(self) -> bool:
        return self.proto >= (1, 1)

    @property
    def is_options_star(self) -> bool:
        return self.method == "OPTIONS" and self.target == "*"


def _lines(head: bytes) -> list[str]:
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _parse_version(vers: str) -> tuple[int, int] | None:
    """``http.ParseHTTPVersion``."""
    if vers == "HTTP/1.1":
        return (1, 1)
    if vers == "HTTP/1.0":
        return (1, 0)
    if not vers.startswith("HTTP/") or len(vers) != len("HTTP/X.Y") or vers[6] != ".":
        return None
    if not (vers[5].isdigit() and vers[7].isdigit()) or not (vers[5].isascii() and vers[7].isascii()):
        return None
    return (int(vers[5]), int(vers[7]))


def _has_ctl(s: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)


def parse_request_uri(target: str, method: str) -> tuple[str, str]:
    """``url.ParseRequestURI`` as ``http.ReadRequest`` calls it: (escaped path, raw query); ValueError for
    what Go refuses. The path is not decoded here (the engine decodes it as Go's ``setPath`` does)."""
    if _has_ctl(target):
        raise ValueError("net/url: invalid control character in URL")
    raw = target
    if method == "CONNECT" and not raw.startswith("/"):
        raw = "http://" + raw
    if raw == "*":
        return "*", ""
    scheme = ""
    rest = raw
    m = _SCHEME_RE.match(raw)
    if m:
        scheme = m.group(1)
        rest = raw[m.end() :]
    elif raw.startswith(":"):
        raise ValueError("missing protocol scheme")
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return "", query  # opaque URL: Path is empty
        raise ValueError("invalid URI for request")
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if any(c in authority for c in ' <>"{}|\\^`'):
            raise ValueError("invalid host")
        rest = slash + path
    return rest, query


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",") if t.strip()}


def parse_head(head: bytes) -> WireRequest:
    """Parse a request head (request line and header lines, up to the empty line; ``\\r\\n`` or ``\\n``)."""
    lines = _lines(head)
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise WireError(400)
    method, sp1, rest = lines[0].partition(" ")
    target, sp2, proto_text = rest.partition(" ")
    if not sp1 or not sp2:
        raise WireError(400)  # badStringError("malformed HTTP request")
    if not method or any(c not in _TOKEN_CHARS for c in method):
        raise WireError(400)  # badStringError("invalid method")
    proto = _parse_version(proto_text)
    if proto is None:
        raise WireError(400)  # badStringError("malformed HTTP version")
    if proto[0] != 1 and not (proto == (2, 0) and method == "PRI" and target == "*"):
        raise WireError(400, "unsupported protocol version")
    try:
        path, raw_query = parse_request_uri(target, method)
    except ValueError:
        raise WireError(400) from None
    headers: list[tuple[str, str]] = []
    for i, line in enumerate(lines[1:]):
        if line[:1] in (" ", "\t"):
            if i == 0:
                raise WireError(400)  # malformed MIME header initial line
            k, v = headers[-1]
            headers[-1] = (k, (v + " " + line.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or any(c not in _TOKEN_CHARS for c in name):
            raise WireError(400)  # malformed MIME header line
        headers.append((name, value.strip(" \t")))
    by_name: dict[str, list[str]] = {}
    for k, v in headers:
        by_name.setdefault(k.lower(), []).append(v)
    hosts = by_name.get("host", [])
    if len(hosts) > 1:
        raise WireError(400)  # "too many Host headers"
    if proto >= (1, 1) and not hosts and method != "CONNECT":
        raise WireError(400, "missing required Host header")
    if len(hosts) == 1 and any(c not in _HOST_CHARS for c in hosts[0]):
        raise WireError(400, "malformed Host header")
    for _, v in headers:
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in v):
            raise WireError(400, "invalid header value")
    conn = _tokens(",".join(by_name.get("connection", [])))
    close = "close" in conn if proto >= (1, 1) else "keep-alive" not in conn
    chunked = False
    te = by_name.get("transfer-encoding", [])
    if te and proto >= (1, 1):
        if len(te) > 1 or te[0].lower() != "chunked":
            raise WireError(501, body="Unsupported transfer encoding")
        chunked = True
    length = 0
    cls = by_name.get("content-length", [])
    if not chunked and cls:
        first = cls[0].strip()
        if any(c.strip() != first for c in cls):
            raise WireError(400)  # "http: message cannot contain multiple Content-Length headers"
        if not _CL_RE.match(first):
            raise WireError(400)  # badStringError("bad Content-Length")
        length = int(first)
    expect = by_name.get("expect", [""])[0]
    expect_continue = expect.lower() == "100-continue"
    if expect and not expect_continue and proto >= (1, 1):
        raise WireError(417)
    return WireRequest(
        method=method,
        target=target,
        proto=proto,
        headers=tuple(headers),
        path=path,
        raw_query=raw_query,
        close=close,
        content_length=length,
        chunked=chunked,
        expect_continue=expect_continue,
    )


class _DateCache:
    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        t = int(time.time())
        if t != self._second:
            self._second = t
            self._value = formatdate(t, usegmt=True)
        return self._value


_DATE = _DateCache()
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection", "date"})


def render_response(
    req: WireRequest,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    close: bool,
    date: str | None = None,
) -> tuple[bytes, bool]:
    """The bytes ``net/http`` writes for a handler's answer, and whether the connection closes after it.

    ``headers`` are the handler's (the engine's, with its ``Content-Length`` when the body fit Go's
    buffer, else ``Transfer-Encoding: chunked``). Go sorts the handler's headers by name, then adds
    ``Date``, ``Content-Length``, ``Connection`` and ``Transfer-Encoding`` (``extraHeader.Write``).
    """
    head_only = req.method == "HEAD"
    cl = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    chunked = cl is None and any(
        k.lower() == "transfer-encoding" and v == "chunked" for k, v in headers.items()
    )
    if cl is None and not chunked:
        cl = str(len(body))
    if chunked and not req.http11:
        chunked, close = False, True  # HTTP/1.0 cannot chunk: the body ends when the connection does
    keep_alive_10 = not req.http11 and not req.close and not close and cl is not None
    if not req.http11 and not keep_alive_10:
        close = True
    out = [f"HTTP/1.{1 if req.http11 else 0} {status} {status_text(status)}\r\n"]
    for k in sorted(headers):
        if k.lower() not in _FRAMING:
            out.append(f"{k}: {headers[k]}\r\n")
    out.append(f"Date: {date or _DATE.now()}\r\n")
    if cl is not None:
        out.append(f"Content-Length: {cl}\r\n")
    if close and req.http11:
        out.append("Connection: close\r\n")
    elif keep_alive_10:
        out.append("Connection: keep-alive\r\n")
    if chunked:
        out.append("Transfer-Encoding: chunked\r\n")
    out.append("\r\n")
    data = "".join(out).encode("utf-8", "surrogateescape")
    if not head_only and body:
        data += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
    elif chunked and not head_only:
        data += b"0\r\n\r\n"
    return data, close
