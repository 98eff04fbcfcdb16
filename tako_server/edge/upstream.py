"""Keep-alive HTTP/1.1 connections from the edge to app instances.

Rules:

- :class:`UpstreamPool` keeps idle connections per backend ``(host, port)`` (LIFO, at
  most ``max_idle`` each, closed after :data:`IDLE_TIMEOUT` unused, so the pool grows
  to a burst's concurrency and shrinks back after it) and closes idle ones to backends
  that left the snapshot; a busy connection finishes its request first (drain).
- At most :data:`MAX_CONNECTING` connects are under way to one backend at once: a burst
  of thousands of new requests does not open thousands of connections in the same
  instant (the app's listen queue overflows, connects time out, 502s); a request over
  the bound waits in line (first come, first served: a finished connect hands its slot,
  and a released connection goes, to the oldest waiting request) for whichever comes
  first.
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
import time
from collections import deque

import httptools

from .links import ExchangeLink, Pause, Sink

Address = tuple[str, int]
MAX_CONNECTING = 64  # connects under way to one backend at once (more requests wait)
IDLE_TIMEOUT = 30.0  # an idle upstream connection unused this long is closed
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


def _reused(conn: UpstreamConnection) -> UpstreamConnection:
    """``conn`` serves another request (a failure on it may be a stale connection)."""
    conn.reused = True
    return conn


class UpstreamPool:
    """Idle keep-alive connections per backend, and the connects under way to each."""

    def __init__(
        self,
        connect_timeout: float,
        max_idle: int,
        *,
        max_connecting: int = MAX_CONNECTING,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.max_connecting = max_connecting
        self.idle_timeout = idle_timeout
        # per address, oldest first (a dict as an ordered set: O(1) forget)
        self._idle: dict[Address, dict[UpstreamConnection, float]] = {}
        self._connecting: dict[Address, int] = {}
        self._waiters: dict[Address, deque[asyncio.Future[UpstreamConnection | None]]] = {}
        self._live: set[Address] | None = None

    def __repr__(self) -> str:
        idle = sum(len(v) for v in self._idle.values())
        return f"UpstreamPool(idle={idle}, connecting={sum(self._connecting.values())})"

    def take(self, addr: Address) -> UpstreamConnection | None:
        """The most recently used idle connection to ``addr``, or None."""
        idle = self._idle.get(addr)
        while idle:
            conn, _ = idle.popitem()
            if not conn.closed:
                return _reused(conn)
        return None

    async def connect(self, addr: Address) -> UpstreamConnection:
        """A connection for a request that found none idle (raises ``OSError`` or
        ``TimeoutError``): a new one while fewer than ``max_connecting`` are being opened
        to ``addr``; over that, the request waits in line (first come, first served) for
        the first connection another request releases or the next free connect slot. All
        of it within ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            if self._connecting.get(addr, 0) >= self.max_connecting or addr in self._waiters:
                conn = await self._wait(loop, addr)
                if conn is not None:
                    return conn
                # else a finished connect passed its slot on to this request
            else:
                self._connecting[addr] = self._connecting.get(addr, 0) + 1
            try:
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, addr), *addr
                )
            finally:
                self._connect_done(addr)
        return conn

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, addr: Address
    ) -> UpstreamConnection | None:
        """Wait in line for a released connection (returned) or a connect slot (None:
        the slot is this request's, already counted)."""
        waiter: asyncio.Future[UpstreamConnection | None] = loop.create_future()
        self._waiters.setdefault(addr, deque()).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # timed out (or abandoned) just as it was served: pass on what it was given
            if waiter.done() and not waiter.cancelled():
                given = waiter.result()
                if given is not None:
                    self.put(given)
                else:
                    self._connect_done(addr)
            raise

    def connecting(self, addr: Address) -> int:
        """Connects under way to ``addr``."""
        return self._connecting.get(addr, 0)

    def idle(self, addr: Address) -> int:
        """Idle connections kept for ``addr``."""
        return len(self._idle.get(addr, ()))

    def _connect_done(self, addr: Address) -> None:
        """A connect ended: its slot goes to the first request in line, else is freed."""
        if self._wake(addr, None):
            return
        left = self._connecting[addr] - 1
        if left:
            self._connecting[addr] = left
        else:
            del self._connecting[addr]

    def _wake(self, addr: Address, conn: UpstreamConnection | None) -> bool:
        """Give ``conn`` (or a connect slot: None) to the oldest live waiter for ``addr``."""
        waiters = self._waiters.get(addr)
        if waiters is None:
            return False
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                if not waiters:
                    del self._waiters[addr]
                return True
        del self._waiters[addr]
        return False

    def put(self, conn: UpstreamConnection) -> None:
        """Return a connection that finished a clean keep-alive exchange: to a request
        waiting for one, else idle (at most ``max_idle`` per address), else closed."""
        conn.ex = conn.out = None
        if conn.closed:
            return
        if conn.paused:
            conn.set_reading(True)
        addr = conn.addr
        if self._live is not None and addr not in self._live:
            conn.close()
            return
        if addr in self._waiters and self._wake(addr, _reused(conn)):
            return
        idle = self._idle.setdefault(addr, {})
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle[conn] = time.monotonic()

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.addr)
        if idle:
            idle.pop(conn, None)

    def expire(self, now: float) -> int:
        """Close connections idle for ``idle_timeout`` (the pool shrinks back after a
        burst); ``now`` is ``time.monotonic()``. Returns how many it closed."""
        cutoff, closed = now - self.idle_timeout, 0
        for idle in self._idle.values():
            while idle:
                conn, since = next(iter(idle.items()))
                if since > cutoff:
                    break
                del idle[conn]
                conn.close()
                closed += 1
        return closed

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
