"""An HTTP/1.x server at the asyncio protocol level, with ``net/http``'s wire behaviour (:mod:`.wire`).

Why not aiohttp's server: it adds a ``Server`` header, answers malformed requests, long header lines
(8 KiB) and bad escapes with its own texts, normalises request paths (yarl), and cannot be told to write
Go's raw error answers; NMI's clients must see exactly what Go's server sends. This server does only
what NMI's needs: keep-alive and pipelining, ``Content-Length`` and chunked request bodies (discarded, as
NMI's handlers never read them, up to ``maxPostHandlerReadBytes`` before closing), ``HEAD``, ``OPTIONS
*``, ``Expect``, Go's 400/431/501 answers, and a handler per request in its own task so that one caller's
wait never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from nmisim.agent.wire import (
    MAX_HEADER_BYTES,
    MAX_POST_HANDLER_READ,
    WireError,
    WireRequest,
    header_too_large,
    parse_head,
    render_response,
    status_text,
)

log = logging.getLogger(__name__)

_END_OF_HEAD: Final = re.compile(rb"\n\r?\n")
#: bytes held for a pipelined request while one is being answered, before reading pauses
_PIPELINE_BUFFER: Final = 64 << 10
#: request heads parsed once and kept (clients send the same head again and again); small heads only,
#: so the cache stays under HEAD_CACHE_SIZE * HEAD_CACHE_MAX_BYTES (4 MiB)
HEAD_CACHE_SIZE: Final = 1024
HEAD_CACHE_MAX_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer. ``raw``: ``net/http`` writes it itself (exact headers, no Date), then closes."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    raw: bool = False


@dataclass(slots=True)
class Peer:
    """The connection a request came on: the client's address and whether it has gone away."""

    ip: str
    port: int
    gone: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[WireRequest, Peer], Awaitable[Reply]]


class _Body:
    """Counts (and drops) a request body: ``Content-Length`` bytes or chunked framing."""

    def __init__(self, length: int, chunked: bool) -> None:
        self.remaining = length
        self.chunked = chunked
        self.done = not chunked and length == 0
        self.broken = False
        self.seen = 0
        self._line = bytearray()
        self._chunk_left = 0
        self._state = "size"  # size | data | crlf | trailer

    def feed(self, data: bytearray) -> int:
        """Consume body bytes from ``data``; return how many were used."""
        if self.done or self.broken:
            return 0
        if not self.chunked:
            n = min(len(data), self.remaining)
            self.remaining -= n
            self.seen += n
            self.done = self.remaining == 0
            return n
        used = 0
        while used < len(data) and not self.done and not self.broken:
            if self._state == "data":
                n = min(len(data) - used, self._chunk_left)
                self._chunk_left -= n
                self.seen += n
                used += n
                if self._chunk_left == 0:
                    self._state = "crlf"
                continue
            nl = data.find(b"\n", used)
            if nl < 0:
                self._line += data[used:]
                used = len(data)
                if len(self._line) > 4096:
                    self.broken = True
                break
            self._line += data[used:nl]
            used = nl + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            if self._state == "size":
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    self.broken = True
                    break
                if size == 0:
                    self._state = "trailer"
                else:
                    self._chunk_left = size
                    self._state = "data"
            elif self._state == "crlf":
                if line:
                    self.broken = True
                self._state = "size"
            elif not line:  # trailer ends with an empty line
                self.done = True
        return used


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._scanned = 0
        self._busy = False
        self._body: _Body | None = None
        self._closing = False
        self._peer = Peer("", 0)
        self._paused = False

    # ------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        name = transport.get_extra_info("peername")
        if isinstance(name, tuple) and len(name) >= 2:
            self._peer = Peer(str(name[0]), int(name[1]))
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._peer.gone.set()
        self._server.connections.discard(self)

    def eof_received(self) -> bool:
        # the client will send nothing more: a request being answered counts as cancelled (Go cancels the
        # request's context on a read EOF); otherwise close.
        self._peer.gone.set()
        return self._busy

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        self._advance()

    # ------------------------------------------------------------- parsing
    def _advance(self) -> None:
        while not self._closing:
            if self._body is not None and not self._body.done and not self._body.broken:
                used = self._body.feed(self._buf)
                del self._buf[:used]
                self._scanned = 0
                if not self._body.done:
                    return
            if self._busy:
                if len(self._buf) > _PIPELINE_BUFFER and not self._paused and self._transport is not None:
                    self._transport.pause_reading()
                    self._paused = True
                return
            if not self._buf:
                return
            m = _END_OF_HEAD.search(self._buf, max(self._scanned - 3, 0))
            if m is None:
                self._scanned = len(self._buf)
                if len(self._buf) > MAX_HEADER_BYTES:
                    self._write_error(header_too_large())
                return
            end = m.end()
            if end > MAX_HEADER_BYTES:
                self._write_error(header_too_large())
                return
            head = bytes(self._buf[:end])
            del self._buf[:end]
            self._scanned = 0
            try:
                req = self._server.parse(head)
            except WireError as err:
                self._write_error(err)
                return
            self._start(req)

    def _start(self, req: WireRequest) -> None:
        self._body = _Body(req.content_length, req.chunked) if not req.expect_continue else None
        self._busy = True
        immediate = getattr(self._server.handler, "immediate", None)
        if immediate is not None and self._body is not None and self._body.done and not req.is_options_star:
            # No body and an answer the handler has at once (no wait): written now, without a task; the
            # caller (_advance's loop) goes on with any pipelined request.
            try:
                reply = immediate(req, self._peer)
            except Exception:
                log.exception("handler failed for %s %s", req.method, req.target)
                self._close()
                return
            if reply is not None:
                self._send(req, reply, self._server.closing)
                return
        task = asyncio.get_running_loop().create_task(self._respond(req))
        self._server.tasks.add(task)
        task.add_done_callback(self._server.tasks.discard)

    async def _respond(self, req: WireRequest) -> None:
        try:
            if req.is_options_star:
                # serverHandler.ServeHTTP: globalOptionsHandler, before the router
                reply = Reply(200, {"Content-Length": "0"}, b"")
            else:
                reply = await self._server.handler(req, self._peer)
        except asyncio.CancelledError:
            self._close()
            raise
        except Exception:
            log.exception("handler failed for %s %s", req.method, req.target)
            self._close()
            return
        if self._closing or self._transport is None:
            return
        # net/http: discard at most maxPostHandlerReadBytes of an unread body before answering; more
        # than that, a broken chunked body, or an Expect: 100-continue body never asked for -> close.
        close = self._server.closing
        body = self._body
        if reply.raw:
            pass
        elif req.expect_continue and req.content_length:
            close = True
        elif body is not None and not body.done:
            if (
                body.broken
                or body.seen + len(self._buf) > MAX_POST_HANDLER_READ
                or (not body.chunked and body.remaining > MAX_POST_HANDLER_READ)
            ):
                close = True
            else:
                waited = await self._wait_body(body)
                close = close or not waited
        self._send(req, reply, close)
        if not self._closing and not self._busy:
            self._advance()

    def _send(self, req: WireRequest, reply: Reply, close: bool) -> None:
        """Write the answer; then either close or make the connection ready for its next request."""
        if self._closing or self._transport is None:
            return
        if reply.raw:
            self._transport.write(_raw_bytes(reply))
            self._close()
            return
        close = close or req.close or self._peer.gone.is_set()
        data, close = render_response(req, reply.status, reply.headers, reply.body, close=close)
        self._transport.write(data)
        if close:
            self._close()
            return
        self._body = None
        self._busy = False
        if self._paused:
            self._transport.resume_reading()
            self._paused = False

    async def _wait_body(self, body: _Body) -> bool:
        """Wait (briefly) for the rest of a small body the client is still sending."""
        for _ in range(200):
            self._advance()
            if body.done:
                return True
            if body.broken or self._closing:
                return False
            await asyncio.sleep(0.01)
        return False

    def _write_error(self, err: WireError) -> None:
        if self._transport is not None:
            self._transport.write(err.render())
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


def _raw_bytes(reply: Reply) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {status_text(reply.status)}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in reply.headers.items()]
    return ("".join(lines) + "\r\n").encode("utf-8", "surrogateescape") + reply.body


class HttpServer:
    """One listening socket and its connections; ``handler`` answers each request."""

    def __init__(self, handler: Handler, host: str, port: int, name: str = "http") -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.name = name
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._heads: dict[bytes, WireRequest] = {}

    def parse(self, head: bytes) -> WireRequest:
        """:func:`parse_head`, once per distinct small head (a WireRequest is immutable)."""
        req = self._heads.get(head)
        if req is None:
            req = parse_head(head)  # raises WireError: never cached
            if len(head) <= HEAD_CACHE_MAX_BYTES:
                if len(self._heads) >= HEAD_CACHE_SIZE:
                    self._heads.clear()
                self._heads[head] = req
        return req

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host or None, self.port, reuse_address=True, backlog=1024
        )
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("%s listening on %s:%d", self.name, self.host or "0.0.0.0", self.port)

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
