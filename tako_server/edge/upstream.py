"""Keep-alive HTTP/1.1 connections from the edge to app instances.

Rules:

- :class:`UpstreamPool` keeps idle connections per backend ``(host, port)`` (LIFO, at
  most ``max_idle`` each) and closes idle ones to backends that left the snapshot; a
  busy connection finishes its request first (drain).
- :class:`UpstreamConnection` parses responses with ``httptools.HttpResponseParser`` and
  hands every event to the exchange it serves (:class:`~.links.ExchangeLink`); it never
  buffers a body. The exchange also names the client's :class:`~.links.Sink`: writes are
  batched per upstream read (``cork``/``flush``), spliced bytes go there, and nothing
  here touches the client's transport or fields. Flow control is symmetric: when this
  socket's write buffer is full the client stops reading (``Pause.UPSTREAM_FULL``), and
  the exchange pauses this socket when the client's buffer is full.
- A connection goes back to the pool only when the response ended cleanly, the
  upstream allowed keep-alive and the whole request was sent. Responses to ``HEAD``
  end at their head (a fresh parser is used for the next response).
- After a ``101`` the connection is spliced to the client and never pooled again.
"""

from __future__ import annotations

import asyncio

import httptools

from .links import ExchangeLink, Pause, Sink

Address = tuple[str, int]
_UPSTREAM_FULL = Pause.UPSTREAM_FULL.value


class _EndOfHead(Exception):
    """Raised inside the parser to stop after a ``HEAD`` response's head."""


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to an instance; serves one exchange at a time."""

    __slots__ = (
        "pool",
        "addr",
        "transport",
        "parser",
        "ex",
        "out",
        "closed",
        "reused",
        "got_bytes",
        "status",
        "reason",
        "headers",
        "head_request",
        "splice",
        "paused",
    )

    def __init__(self, pool: UpstreamPool, addr: Address) -> None:
        self.pool = pool
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: ExchangeLink | None = None
        self.out: Sink | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_request = False
        self.splice = False
        self.paused = False

    def __repr__(self) -> str:
        return f"UpstreamConnection({self.addr[0]}:{self.addr[1]}, busy={self.ex is not None})"

    # --- lifecycle -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.ex
        if ex is not None:
            self.ex = None
            ex.upstream_lost(self, exc)

    def start(self, ex: ExchangeLink, out: Sink, head: bytes, head_request: bool) -> None:
        """Send ``head`` for ``ex``; the response events go to ``ex``, its bytes to ``out``."""
        self.ex = ex
        self.out = out
        self.got_bytes = False
        self.headers = []
        self.head_request = head_request
        self.transport.write(head)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def address(self) -> Address:
        return self.addr

    def release(self) -> None:
        """The exchange is done with this connection: back to the pool (or closed)."""
        self.pool.put(self)

    def close(self) -> None:
        self.ex = self.out = None
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.ex = self.out = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def set_reading(self, on: bool) -> None:
        if self.transport is None or self.closed or self.paused is (not on):
            return
        self.paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # --- flow control from our write buffer ---------------------------------------------
    def pause_writing(self) -> None:
        if self.out is not None:
            self.out.block_reading(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.out is not None:
            self.out.unblock_reading(_UPSTREAM_FULL)

    # --- response parsing ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            self.abort()  # bytes on an idle connection: protocol violation
            return
        client = self.out
        assert client is not None
        if self.splice:
            client.write(data)
            return
        self.got_bytes = True
        client.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            ex.upstream_spliced(data[exc.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _EndOfHead):
                self.parser = httptools.HttpResponseParser(self)
            elif self.ex is not None:
                self.ex.upstream_failed(self, f"response handling failed: {exc.__context__!r}")
        except httptools.HttpParserError as exc:
            if self.ex is not None:
                self.ex.upstream_failed(self, f"invalid HTTP response from the app: {exc}")
        finally:
            client.flush()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, reason = self.headers, self.reason
        self.headers, self.reason = [], b""
        ex = self.ex
        if ex is None:
            return
        if status == 101:
            self.splice = True
            ex.upstream_head(status, reason, headers)
            return
        if 100 <= status < 200:
            ex.upstream_interim(status, reason, headers)
            self.status = status
            return
        self.status = status
        ex.upstream_head(status, reason, headers)
        if self.head_request:
            keep = self.parser.should_keep_alive()
            ex.upstream_complete(self, keep)
            raise _EndOfHead()

    def on_body(self, body: bytes) -> None:
        if self.ex is not None:
            self.ex.upstream_body(body)

    def on_message_complete(self) -> None:
        ex = self.ex
        if ex is None or self.splice:
            return
        if 100 <= self.status < 200:  # end of an interim response
            self.status = 0
            return
        ex.upstream_complete(self, self.parser.should_keep_alive())


class UpstreamPool:
    """Idle keep-alive connections per backend address."""

    def __init__(self, connect_timeout: float, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: dict[Address, list[UpstreamConnection]] = {}
        self._live: set[Address] | None = None

    def __repr__(self) -> str:
        idle = sum(len(v) for v in self._idle.values())
        return f"UpstreamPool(idle={idle}, backends={len(self._idle)})"

    def take(self, addr: Address) -> UpstreamConnection | None:
        """An idle connection to ``addr``, or None."""
        idle = self._idle.get(addr)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, addr: Address) -> UpstreamConnection:
        """A new connection (raises ``OSError``/``TimeoutError``)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(lambda: UpstreamConnection(self, addr), *addr)
        return conn

    def put(self, conn: UpstreamConnection) -> None:
        """Return a connection that finished a clean keep-alive exchange."""
        conn.ex = conn.out = None
        if conn.closed:
            return
        if conn.paused:
            conn.set_reading(True)
        idle = self._idle.setdefault(conn.addr, [])
        if len(idle) >= self.max_idle or (self._live is not None and conn.addr not in self._live):
            conn.close()
            return
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.addr)
        if idle and conn in idle:
            idle.remove(conn)

    def prune(self, live: set[Address]) -> None:
        """Close idle connections to addresses not in ``live``; refuse them from now on."""
        self._live = live
        for addr in [a for a in self._idle if a not in live]:
            for conn in self._idle.pop(addr):
                conn.close()

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
