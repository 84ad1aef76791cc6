"""What Go does to a request path before NMI's routes see it (nmi-semantics §8.1).

* Go's ``net/url`` (``url.ParseRequestURI`` -> ``setPath`` -> ``unescape(s, encodePath)``) decodes the
  request target's path into ``URL.Path``; a malformed ``%`` escape makes ``net/http`` answer
  ``400 Bad Request`` itself (``server.go`` ``(*conn).serve``), before any handler.
* gorilla/mux v1.8.0 ``Router.ServeHTTP`` cleans ``URL.Path`` with ``cleanPath`` (``path.Clean`` plus the
  trailing slash put back) and, when that changes it, answers **301** with ``Location`` = the cleaned
  path, escaped as ``url.URL.String`` does, plus the original query. NMI builds a plain
  ``mux.NewRouter()`` (``pkg/nmi/server/server.go`` ``Run``), so cleaning is on and the decoded path
  (not the escaped one) is what is cleaned and matched.

Each function is a direct transcription of the Go function it names.
"""

from __future__ import annotations

from typing import Final

_HEX: Final = "0123456789abcdefABCDEF"


#: ``net/url``'s encoding modes that :func:`unescape` tells apart
ENCODE_PATH: Final = "path"
ENCODE_QUERY_COMPONENT: Final = "queryComponent"


def unescape(s: str, mode: str) -> str | None:
    """``net/url`` ``unescape(s, mode)`` for the two modes NMI's requests go through: ``%XX`` becomes the
    byte XX; ``+`` becomes a space in :data:`ENCODE_QUERY_COMPONENT` and stays ``+`` in
    :data:`ENCODE_PATH`; a ``%`` not followed by two hex digits is an error (None). Bytes that are not
    UTF-8 survive as surrogates."""
    plus = 0x20 if mode == ENCODE_QUERY_COMPONENT else 0x2B
    data = s.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25:  # '%'
            if i + 2 >= len(data) or chr(data[i + 1]) not in _HEX or chr(data[i + 2]) not in _HEX:
                return None
            out.append(int(chr(data[i + 1]) + chr(data[i + 2]), 16))
            i += 3
            continue
        out.append(plus if c == 0x2B else c)
        i += 1
    return out.decode("utf-8", "surrogateescape")


def go_unescape_path(raw: str) -> str | None:
    """What ``setPath`` stores in ``URL.Path``: ``unescape(raw, encodePath)``."""
    return unescape(raw, ENCODE_PATH)


def go_path_clean(p: str) -> str:
    """Go ``path.Clean``: the shortest path lexically equivalent to ``p``."""
    if p == "":
        return "."
    rooted = p[0] == "/"
    n = len(p)
    out: list[str] = []
    r = 0
    dotdot = 0
    if rooted:
        out.append("/")
        r, dotdot = 1, 1
    while r < n:
        if p[r] == "/":
            r += 1  # empty path element
        elif p[r] == "." and (r + 1 == n or p[r + 1] == "/"):
            r += 1  # . element
        elif p[r] == "." and p[r + 1] == "." and (r + 2 == n or p[r + 2] == "/"):
            r += 2  # .. element: remove to last /
            if len(out) > dotdot:
                # out.w--; for out.w > dotdot && out.index(out.w) != '/' { out.w-- }
                dropped = out.pop()
                while len(out) > dotdot and dropped != "/":
                    dropped = out.pop()
            elif not rooted:
                if out:
                    out.append("/")
                out += [".", "."]
                dotdot = len(out)
        else:
            if (rooted and len(out) != 1) or (not rooted and len(out) != 0):
                out.append("/")
            while r < n and p[r] != "/":
                out.append(p[r])
                r += 1
    if not out:
        return "."
    return "".join(out)


def mux_clean_path(p: str) -> str:
    """gorilla/mux v1.8.0 ``cleanPath``: ``path.Clean``, rooted, with a trailing ``/`` kept."""
    if p == "":
        return "/"
    if p[0] != "/":
        p = "/" + p
    np = go_path_clean(p)
    if p[-1] == "/" and np != "/":
        np += "/"
    return np


def _should_escape_path(c: int) -> bool:
    """``net/url`` ``shouldEscape(c, encodePath)``."""
    if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39:
        return False
    if chr(c) in "-_.~":
        return False
    if chr(c) in "$&+,/:;=?@":
        return chr(c) == "?"
    return True


def go_escape_path(p: str) -> str:
    """``net/url`` ``escape(s, encodePath)``, which ``URL.EscapedPath`` uses for a path it changed."""
    out = []
    for c in p.encode("utf-8", "surrogateescape"):
        out.append(f"%{c:02X}" if _should_escape_path(c) else chr(c))
    return "".join(out)


def mux_redirect_location(url_path: str, raw_query: str) -> str | None:
    """The ``Location`` of mux's 301, or None when ``url_path`` is already clean (no redirect).

    ``url := *req.URL; url.Path = cleanPath(path); url.String()``: a server request's URL has no scheme
    or host, so this is the escaped cleaned path, then ``?`` and the raw query when there is one.
    """
    cleaned = mux_clean_path(url_path)
    if cleaned == url_path:
        return None
    return go_escape_path(cleaned) + (f"?{raw_query}" if raw_query else "")


def go_query_unescape(s: str) -> str | None:
    """``net/url`` ``QueryUnescape``: ``unescape(s, encodeQueryComponent)``."""
    return unescape(s, ENCODE_QUERY_COMPONENT)


def go_parse_query(raw: str) -> tuple[tuple[str, str], ...]:
    """What ``r.URL.Query()`` holds for the raw query string (``net/url`` ``parseQuery``, Go >= 1.17):
    pairs split on ``&`` only; a pair containing ``;`` is dropped, as is an empty one or one whose key or
    value has a malformed escape; ``key`` without ``=`` has the value ``""``. Order and repeats are kept."""
    out: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if ";" in part or not part:
            continue
        key, _, value = part.partition("=")
        k = go_query_unescape(key)
        v = go_query_unescape(value)
        if k is None or v is None:
            continue
        out.append((k, v))
    return tuple(out)
