"""Keep-alive HTTP/1.1 connections from the edge to app instances.

Rules:

- :class:`UpstreamPool` keeps idle connections per backend ``(host, port)`` (LIFO, at
  most ``max_idle`` each, closed after :data:`IDLE_TIMEOUT` unused, so the pool grows
  to a burst's concurrency and shrinks back after it) and closes idle ones to backends
  that left the snapshot; a busy connection finishes its request first (drain).
- A request that finds no idle connection waits in line (:meth:`UpstreamPool.wait`,
  first come, first served) for the next connection to its backend that is released or
  opened, whichever comes first, within ``connect_timeout``. The pool opens connections
  while requests wait, at most :data:`MAX_CONNECTING` at once per backend (a burst of
  thousands of requests does not open thousands of connections in the same instant: the
  app's listen queue would overflow, connects time out, 502s); a refused or failed
  connect fails the oldest waiting request (a backend that is down answers each request
  502 at once); a connect that times out fails nobody: requests in line are failed only
  by their own deadline (``expire``, run by the runtime's sweep), because under load a
  loopback connect can take the loop seconds to see through while released connections
  still serve the line (73 of 126,000 requests got 502 at HTTPS c5000 before).
- Handing a connection to a waiting request is a plain call (:class:`~.links.PoolWaiter`),
  never a future or a task: under load uvloop runs ready callbacks only after the whole
  batch of I/O events (libuv polls again while ``epoll`` returns a full batch, up to 48
  times), so at 2,500 connections per worker a handed-over connection sat unused for up
  to 1.4 s and requests waited seconds (HTTP c5000 p99 2.7 s, nginx 0.33 s). A connection
  released while its response is being parsed is handed over after the parse
  (``_release_after_feed``), so the next request never starts inside the previous one's
  parser callback.
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
import logging
import time
from collections import deque

import httptools

from tako_common.tasks import spawn

from .links import ExchangeLink, Pause, PoolWaiter, Sink

log = logging.getLogger(__name__)

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
        "feeding",
        "release_after_feed",
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
        self.feeding = False  # inside the parser (a release waits until it returns)
        self.release_after_feed = False

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
        """The exchange is done with this connection: back to the pool (or closed), once
        the response being parsed has been parsed."""
        if self.feeding:
            self.ex = self.out = None  # whatever the parser still finds is not the exchange's
            self.release_after_feed = True
        else:
            self.pool.put(self)

    def _stray(self) -> None:
        """Bytes after the response that ended (the app broke its own framing, e.g. more
        body than its Content-Length): they reach no exchange, and the connection is
        never reused (the next request would read them as its response)."""
        self.release_after_feed = False
        if not self.closed:
            self.abort()

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
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.ex is ex:
                ex.upstream_spliced(data[exc.args[0] :])
            else:
                self._stray()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _EndOfHead):
                self.parser = httptools.HttpResponseParser(self)
            elif self.ex is not None:
                self.ex.upstream_failed(self, f"response handling failed: {exc.__context__!r}")
            else:
                self._stray()
        except httptools.HttpParserError as exc:
            if self.ex is not None:
                self.ex.upstream_failed(self, f"invalid HTTP response from the app: {exc}")
            else:
                self._stray()
        finally:
            self.feeding = False
            client.flush()
            if self.release_after_feed:
                self.release_after_feed = False
                self.pool.put(self)

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
            self._stray()
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
        else:
            self._stray()

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


class _Waiting:
    """One request in line: who to call back, and until when (``time.monotonic()``)."""

    __slots__ = ("who", "deadline")

    def __init__(self, who: PoolWaiter, deadline: float) -> None:
        self.who = who
        self.deadline = deadline


class UpstreamPool:
    """Idle keep-alive connections per backend, the requests waiting for one, and the
    connects under way (see the module rules)."""

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
        self._waiters: dict[Address, deque[_Waiting]] = {}  # oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: set[Address] | None = None

    def __repr__(self) -> str:
        idle = sum(len(v) for v in self._idle.values())
        waiting = sum(len(v) for v in self._waiters.values())
        return (
            f"UpstreamPool(idle={idle}, connecting={sum(self._connecting.values())}, "
            f"waiting={waiting})"
        )

    def take(self, addr: Address) -> UpstreamConnection | None:
        """The most recently used idle connection to ``addr``, or None."""
        idle = self._idle.get(addr)
        while idle:
            conn, _ = idle.popitem()
            if not conn.closed:
                return _reused(conn)
        return None

    def wait(self, addr: Address, who: PoolWaiter) -> None:
        """Put ``who`` in line for a connection to ``addr`` (it found none idle, or its
        pooled one was stale): ``who.upstream_ready(conn)`` gets the next connection
        released or opened, first come first served; ``who.upstream_unavailable(exc)``
        is called when a connect for it fails or ``connect_timeout`` passes first."""
        queue = self._waiters.get(addr)
        if queue is None:
            queue = self._waiters[addr] = deque()
        queue.append(_Waiting(who, time.monotonic() + self.connect_timeout))
        self._open_more(addr)

    def connecting(self, addr: Address) -> int:
        """Connects under way to ``addr``."""
        return self._connecting.get(addr, 0)

    def waiting(self, addr: Address) -> int:
        """Requests in line for a connection to ``addr``."""
        return len(self._waiters.get(addr, ()))

    def idle(self, addr: Address) -> int:
        """Idle connections kept for ``addr``."""
        return len(self._idle.get(addr, ()))

    def _open_more(self, addr: Address) -> None:
        """Start connects while requests wait: one per waiting request, at most
        ``max_connecting`` under way."""
        want = len(self._waiters.get(addr, ()))
        opening = self._connecting.get(addr, 0)
        if opening >= want or opening >= self.max_connecting:
            return
        while opening < want and opening < self.max_connecting:
            opening += 1
            task = spawn(self._open(addr), name=f"edge-connect-{addr[0]}:{addr[1]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._connecting[addr] = opening

    async def _open(self, addr: Address) -> None:
        loop = asyncio.get_running_loop()
        conn: UpstreamConnection | None = None
        error: Exception | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, addr), *addr
                )
        except TimeoutError:
            # slow, not refused: under load the loop itself may take that long to see a
            # loopback connect through. The requests in line keep their own deadlines
            # (expire), so none is failed for it.
            pass
        except OSError as exc:
            error = exc
        finally:
            left = self._connecting.get(addr, 0) - 1
            if left > 0:
                self._connecting[addr] = left
            else:
                self._connecting.pop(addr, None)
        if conn is not None and conn.closed:  # the app closed it before we could use it
            conn, error = None, ConnectionResetError("the instance closed the new connection")
        if conn is not None:
            if not self._give(addr, conn):
                self._keep(addr, conn)
        elif error is not None:
            self._fail_first(addr, error)
        self._open_more(addr)

    def _give(self, addr: Address, conn: UpstreamConnection) -> bool:
        """Hand ``conn`` to the oldest waiting request that still wants one."""
        queue = self._waiters.get(addr)
        if queue is None:
            return False
        try:
            while queue:
                who = queue.popleft().who
                try:
                    if who.upstream_ready(conn):
                        return True
                except Exception:  # a broken exchange must not break the one releasing
                    log.exception("edge: handing %r to %r failed; closing it", conn, who)
                    conn.abort()
                    return True
            return False
        finally:
            if not queue and self._waiters.get(addr) is queue:
                del self._waiters[addr]

    def _fail_first(self, addr: Address, exc: Exception) -> None:
        """A connect failed: the oldest waiting request gets the error (so a backend
        that is down answers each request at once instead of at its timeout)."""
        queue = self._waiters.get(addr)
        if not queue:
            return
        who = queue.popleft().who
        if not queue:
            del self._waiters[addr]
        try:
            who.upstream_unavailable(exc)
        except Exception:  # a broken exchange must not stop the connects for the others
            log.exception("edge: failing %r after a failed connect failed", who)

    def _keep(self, addr: Address, conn: UpstreamConnection) -> None:
        """Keep ``conn`` idle (at most ``max_idle`` per address, live addresses only)."""
        if self._live is not None and addr not in self._live:
            conn.close()
            return
        idle = self._idle.setdefault(addr, {})
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle[conn] = time.monotonic()

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
        if addr in self._waiters and self._give(addr, _reused(conn)):
            return
        self._keep(addr, conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.addr)
        if idle:
            idle.pop(conn, None)

    def expire(self, now: float) -> int:
        """Close connections idle for ``idle_timeout`` (the pool shrinks back after a
        burst) and fail requests that waited ``connect_timeout`` for one; ``now`` is
        ``time.monotonic()``. Returns how many connections it closed."""
        cutoff, closed = now - self.idle_timeout, 0
        for idle in self._idle.values():
            while idle:
                conn, since = next(iter(idle.items()))
                if since > cutoff:
                    break
                del idle[conn]
                conn.close()
                closed += 1
        for addr in [a for a, q in self._waiters.items() if q[0].deadline <= now]:
            late = TimeoutError(f"no connection within {self.connect_timeout:g}s")
            queue = self._waiters[addr]
            while queue and queue[0].deadline <= now:  # oldest first: deadlines in order
                who = queue.popleft().who
                try:
                    who.upstream_unavailable(late)
                except Exception:  # one broken exchange must not stop the others' timeouts
                    log.exception("edge: failing %r after its wait failed", who)
            if not queue and self._waiters.get(addr) is queue:
                del self._waiters[addr]
        return closed

    def prune(self, live: set[Address]) -> None:
        """Close idle connections to addresses not in ``live``; refuse them from now on."""
        self._live = live
        for addr in [a for a in self._idle if a not in live]:
            for conn in self._idle.pop(addr):
                conn.close()

    def close_all(self) -> None:
        """Stop: connects under way are cancelled, waiting requests forgotten (their
        clients are being closed), idle connections closed."""
        for task in list(self._tasks):
            task.cancel()
        self._waiters.clear()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
