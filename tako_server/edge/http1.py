"""The client side of the edge: one ``asyncio.Protocol`` per accepted connection.

Modelled on uvicorn's ``httptools_impl``: ``httptools.HttpRequestParser`` callbacks build
an :class:`~.exchange.Exchange` per request; the exchange decides and answers. This
module owns the socket, the parser, the order of exchanges and the read pauses; what an
exchange leaves behind (keep alive, close, linger) comes from its state's ``next_step``.

Rules:

- Keep-alive and pipelining: requests are answered strictly in order; a pipelined
  request waits (its body buffered up to ``buffer_limit``, then reading pauses) until
  the one before it is finished.
- Flow control: reading pauses while any :class:`~.links.Pause` reason holds (upstream
  buffer full, request body buffered past the limit, too many pipelined requests, the
  client not reading its answers); the upstream is paused while this socket's write
  buffer is full. Others reach this connection only through its methods
  (:class:`~.links.ClientLink`, :class:`~.links.Sink`).
- Deadlines (checked by the runtime's sweeper): headers must be complete
  ``header_timeout`` after the first byte of a request (or after accept), an idle
  keep-alive connection closes after ``keepalive_timeout``, an exchange waiting for its
  upstream answers 504 after ``response_timeout``.
- Unparseable requests get 400 and the connection closes. A connection that closes while
  its client is still sending lingers (reading and discarding) for a moment so the
  client sees the response instead of a reset.
- After a ``101`` the connection is spliced: raw bytes both ways, no more parsing.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import TYPE_CHECKING

import httptools

from .exchange import Exchange
from .lifecycle import KEEP_ALIVE
from .lifecycle import LINGER as LINGER_STEP
from .links import Pause, UpstreamLink
from .policy import simple_response

if TYPE_CHECKING:
    from .runtime import EdgeRuntime

MAX_PIPELINE = 32
_WAIT_WRITABLE = Pause.CLIENT_NOT_READING.value
_PIPELINE_FULL = Pause.PIPELINE_FULL.value
LINGER = 2.0
MAX_URL_BYTES = 16 * 1024
MAX_HEAD_BYTES = 64 * 1024  # request line + headers (+ trailers) of one request
MAX_HEADERS = 200
_BAD_REQUEST = simple_response(400, close=True)
_URI_TOO_LONG = simple_response(414, close=True)
_HEADERS_TOO_LARGE = simple_response(431, close=True)


class _TooLarge(Exception):
    """Raised from a parser callback; the parser error it becomes carries no answer."""


_TIMEOUT = simple_response(408, close=True)
# WebSocket close frames with status 1001 (going away): unmasked from the server; to the
# app masked with a fresh random key (RFC 6455 5.3), see ws_close_to_upstream(). Written
# at a splice boundary: a frame in the middle of its payload at that moment is cut (the
# budget's end is a last resort, like the app's own SIGTERM would be).
WS_CLOSE_TO_CLIENT = b"\x88\x02\x03\xe9"
_CLOSE_1001 = b"\x03\xe9"


def ws_close_to_upstream() -> bytes:
    key = os.urandom(4)
    return b"\x88\x82" + key + bytes(b ^ key[i] for i, b in enumerate(_CLOSE_1001))


class ClientProtocol(asyncio.Protocol):
    """One client connection (plain or TLS)."""

    __slots__ = (
        "rt",
        "is_tls",
        "proto",
        "transport",
        "parser",
        "peer_ip",
        "url",
        "headers",
        "active",
        "queue",
        "receiving",
        "deadline",
        "closed",
        "write_paused",
        "_blocked",
        "splice",
        "upgrading",
        "lingering",
        "in_headers",
        "head_bytes",
        "raw_head_bytes",
        "reject_with",
        "requests",
        "_corked",
        "_out",
        "over_limit",
        "_send_deadline",
        "_saved_deadline",
    )

    def __init__(self, rt: EdgeRuntime, is_tls: bool) -> None:
        self.rt = rt
        self.is_tls = is_tls
        self.proto = b"https" if is_tls else b"http"
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.receiving: Exchange | None = None
        self.deadline = 0.0
        self.closed = False
        self.write_paused = False
        self._blocked = 0
        self.splice: UpstreamLink | None = None
        self.upgrading = False
        self.lingering = False
        self.in_headers = False
        self.head_bytes = 0  # parsed header bytes of the request being read
        self.raw_head_bytes = 0  # raw bytes received while its headers are incomplete
        self.reject_with = _BAD_REQUEST  # the answer when the parser gives up
        self.requests = 0
        self._corked = False
        self._out: list[bytes] = []
        self.over_limit = False  # its address has too many connections: 429, then close
        self._send_deadline = 0.0  # the deadline pause_writing set (0: none)
        self._saved_deadline = 0.0  # the deadline it replaced

    def __repr__(self) -> str:
        return (
            f"ClientProtocol(peer={self.peer_ip.decode()}, tls={self.is_tls}, "
            f"active={self.active!r}, queued={len(self.queue)})"
        )

    # --- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.peer_ip:  # else set from a PROXY header (proxyproto)
            peer = transport.get_extra_info("peername")
            self.peer_ip = (peer[0] if peer else "").encode("ascii")
        self.over_limit = not self.rt.connection_opened(self, self.peer_ip)
        self.deadline = self.rt.now + self.rt.config.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.rt.connection_closed(self, self.peer_ip)
        if self.splice is not None:
            self.splice.close()
        for ex in (self.active, *self.queue):
            if ex is not None:
                ex.abandon()
        self.active = None
        self.queue.clear()

    def close_if_idle(self, fresh: bool = False) -> None:
        """Close a kept-alive connection between requests (drain). A fresh connection that
        has not sent its first request yet (or is still sending a head) stays unless
        ``fresh``: it was accepted, so it gets a moment to ask (the drain's linger)."""
        if self.active is not None or self.splice is not None or self.closed:
            return
        if fresh or (not self.in_headers and self.requests):
            self.close()

    def in_flight(self) -> bool:
        """Whether a request is being answered here (what a drain waits for); closed,
        idle and half-closed connections never count. Upgraded ones have their own budget."""
        if self.closed:
            return self.flushing()
        return self.active is not None and self.splice is None

    def upgraded_to(self) -> tuple[str, int] | None:
        """The backend address of a spliced (upgraded) connection, else None."""
        splice = self.splice
        return None if splice is None or self.closed else splice.address()

    def end_upgraded(self) -> None:
        """The upgraded connection's budget is over: a WebSocket close frame (1001, going
        away) to both sides, then close."""
        splice = self.splice
        if splice is None or self.closed:
            return
        splice.write(ws_close_to_upstream())
        splice.close()  # after the queued bytes; its exchange hears nothing more
        self.splice = None
        if self.active is not None:
            self.active.upgrade_ended()
            self.active = None
        self.write(WS_CLOSE_TO_CLIENT)
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.flush()
            self.closed = True
            self.transport.close()
            if self.flushing():  # the rest goes out while the client reads, within bounds
                self.deadline = self.rt.now + self.rt.config.send_timeout

    def flushing(self) -> bool:
        """Closed, with response bytes still queued for the client (a drain waits)."""
        if not self.closed or self.lingering or self.transport is None:
            return False
        try:
            return self.transport.get_write_buffer_size() > 0
        except (AttributeError, RuntimeError):
            return False

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def abort_after_write(self) -> None:
        """Stop parsing; close once the queued output is written (lingering)."""
        self._linger()

    def set_deadline(self, when: float) -> None:
        self.deadline = when

    def on_deadline(self) -> None:
        self.deadline = 0.0
        if self.lingering or self.closed:  # closed: its last bytes were not taken in time
            self.abort()
        elif self.splice is not None:
            self.end_upgraded()
        elif self.active is not None and not self.active.response_started:
            self.active.upstream_timeout()
        elif self.in_headers:
            self.write(_TIMEOUT)
            self._linger()
        elif self.write_paused:  # the client stopped reading: nothing more can be sent
            self.abort()
        else:  # idle keep-alive, or answered while its request body stalled
            self.close()

    # --- writing and flow control ---------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._corked:
            self._out.append(data)
        elif not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def cork(self) -> None:
        """Collect writes until :meth:`flush` (one TLS record/syscall per upstream read)."""
        self._corked = True

    def flush(self) -> None:
        """Write what was collected since :meth:`cork` in one call."""
        self._corked = False
        out = self._out
        if out:
            self._out = []
            if not self.closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.splice is not None:
            self.splice.set_reading(False)
        elif self.active is not None:
            self.active.on_client_writable(False)
            if self.active.response_started:  # the send timeout: a client must keep reading
                send = self.rt.now + self.rt.config.send_timeout
                self._saved_deadline = self.deadline
                if not self.deadline or send < self.deadline:  # never later than one set
                    self.deadline = send
                self._send_deadline = self.deadline

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._send_deadline:  # undo only what pause_writing set (not a body deadline)
            if self.deadline == self._send_deadline:
                self.deadline = self._saved_deadline
            self._send_deadline = 0.0
        if self.splice is not None:
            self.splice.set_reading(True)
        elif self.active is not None:
            self.active.on_client_writable(True)
        elif self._blocked & _WAIT_WRITABLE:
            self.unblock_reading(_WAIT_WRITABLE)
            self._start_next()

    def block_reading(self, reason: int) -> None:
        if not self._blocked and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._blocked |= reason

    def unblock_reading(self, reason: int) -> None:
        if not self._blocked & reason:
            return
        self._blocked &= ~reason
        if not self._blocked and not self.closed:
            self.transport.resume_reading()  # type: ignore[union-attr]

    # --- parsing ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.write(data)
            return
        if self.lingering:
            return
        if self.upgrading:
            if self.receiving is not None:
                self.receiving.feed_upgrade(data)
            return
        if self.in_headers:
            # httptools buffers a header value until it ends: bound the raw bytes too
            self.raw_head_bytes += len(data)
            if self.raw_head_bytes > MAX_HEAD_BYTES:
                self._bad_request(_HEADERS_TOO_LARGE)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError:
            answer, self.reject_with = self.reject_with, _BAD_REQUEST
            self._bad_request(answer)

    def _bad_request(self, answer: bytes = _BAD_REQUEST) -> None:
        ex = self.receiving
        if ex is not None and not ex.request_done and ex.response_started:
            self.abort()  # mid-body garbage while answering: nothing sane to send
            return
        self.queue.clear()
        if self.active is None or self.active is ex:
            if ex is not None:
                ex.abandon()
            self.active = None
            self.write(answer)
        self._linger()

    def _on_upgrade(self, rest: bytes) -> None:
        self.upgrading = True
        ex = self.receiving
        if ex is None:
            return
        if ex.head is not None and ex.head.websocket:
            ex.feed_upgrade(rest)
        else:
            ex.refuse_upgrade()  # an upgrade we do not pass on: answer, then close

    def on_message_begin(self) -> None:
        self.in_headers = True
        self.requests += 1
        self.url = b""
        self.headers = []
        self.head_bytes = self.raw_head_bytes = 0
        if self.active is None:
            self.deadline = self.rt.now + self.rt.config.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL_BYTES:
            self.reject_with = _URI_TOO_LONG
            raise _TooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_bytes += len(name) + len(value)
        if len(self.headers) > MAX_HEADERS or self.head_bytes > MAX_HEAD_BYTES:
            self.reject_with = _HEADERS_TOO_LARGE
            raise _TooLarge

    def on_headers_complete(self) -> None:
        self.in_headers = False
        parser = self.parser
        ex = Exchange(
            self.rt,
            self,
            parser.get_method(),
            self.url,
            self.headers,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.1",
        )
        self.receiving = ex
        if self.active is None and not self._blocked & _WAIT_WRITABLE:
            self.active = ex
            self.deadline = 0.0
            ex.start()
        else:
            self.queue.append(ex)
            if len(self.queue) >= MAX_PIPELINE:
                self.block_reading(_PIPELINE_FULL)

    def on_body(self, body: bytes) -> None:
        ex = self.receiving
        if ex is not None and not ex.finished:
            ex.feed_body(body)

    def on_message_complete(self) -> None:
        ex = self.receiving
        if ex is not None and not ex.finished:
            ex.feed_end()

    # --- sequencing -----------------------------------------------------------------------
    def exchange_done(self, ex: Exchange) -> None:
        """``ex`` wrote its response and read its request: start the next or idle."""
        if ex is not self.active:
            return
        self.active = None
        step = ex.next_step(self.rt.draining)
        if step != KEEP_ALIVE:
            self._linger() if step == LINGER_STEP else self.close()
            return
        if self._blocked & _PIPELINE_FULL and len(self.queue) < MAX_PIPELINE:
            self.unblock_reading(_PIPELINE_FULL)
        if self.write_paused and not self.closed:
            # the client does not read what we already wrote: answer nothing more (and
            # read nothing more) until it does, so pipelined requests cannot pile up output
            self.block_reading(_WAIT_WRITABLE)
            self.deadline = self.rt.now + self.rt.config.send_timeout
            return
        self._start_next()

    def _start_next(self) -> None:
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            nxt.start()
        elif self.in_headers:  # a pipelined request is still arriving: its headers are due
            self.deadline = self.rt.now + self.rt.config.header_timeout
        else:
            self.deadline = self.rt.now + self.rt.config.keepalive_timeout

    def start_splice(self, conn: UpstreamLink, early: bytes) -> None:
        """Switch to raw byte forwarding with ``conn`` (after a 101)."""
        self.splice = conn
        self.deadline = 0.0
        if early:
            conn.write(early)
        if self._blocked:
            self._blocked = 0
            if not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def _linger(self) -> None:
        """Close after the pending output; keep discarding input for a moment first."""
        if self.closed or self.lingering:
            return
        self.lingering = True
        self.flush()
        self.queue.clear()
        self.deadline = self.rt.now + LINGER
        transport = self.transport
        assert transport is not None
        if self._blocked:
            self._blocked = 0
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:
            self.rt.loop.call_later(LINGER / 4, self.close)

    def eof_received(self) -> bool | None:
        if self.lingering:
            return False  # close
        return None
