"""The proxy half of an exchange: backend, pooled upstream connection, upstream events,
and the completion steps every answer shares.

Rules:

- :class:`ProxyExchange` is the shell over :class:`~.lifecycle.ExchangeState` for the
  upstream side; :class:`~.exchange.Exchange` extends it with the request side and the
  decision. Both call the state's event methods and never assign its fields.
- The upstream connection is reached through :class:`~.links.UpstreamLink` and sends its
  events back through :class:`~.links.ExchangeLink` (the ``upstream_*`` methods here);
  the client only through :class:`~.links.ClientLink`; the runtime through its methods
  (:meth:`~.runtime.EdgeRuntime.begin_request` picks the backend and counts it).
- Response bytes go straight to the client (re-chunked when the state says so); the
  upstream is paused while the client's buffer is full. Failures answer a generic
  502/504 (or abort a response already started); details go to the app log.
- An upstream connection goes back to the pool only when the state says ``REUSE``; a
  stale pooled connection is replaced once when the state says ``RETRY``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compress import Encoder
from .lifecycle import (
    ABORT,
    COMPLETE,
    FINISH,
    RETRY,
    REUSE,
    SPLICE_END,
    WAIT_REST,
    ExchangeState,
)
from .links import ClientLink, Pause, UpstreamLink
from .policy import simple_response, upgrade_response, upstream_request
from .snapshot import Backend

if TYPE_CHECKING:
    from .runtime import EdgeRuntime

BODY_BUFFERED = Pause.BODY_BUFFERED.value


class ProxyExchange(ExchangeState):
    """The upstream side of one exchange (see the module rules)."""

    __slots__ = (
        "client",
        "rt",
        "method",
        "path",
        "query",
        "key",
        "backend",
        "conn",
        "pending",
        "pending_size",
        "upgrade_rest",
        "request_id",
        "started",
        "status",
        "sent",
        "upstream_at",
        "cold_wait",
        "counted",
        "encoder",
        "client_ip",
        "proto",
    )

    def __init__(self, rt: EdgeRuntime, client: ClientLink, method: bytes) -> None:
        self.client = client
        self.rt = rt
        self.method = method
        self.path = "/"
        self.query = b""
        self.key: str | None = None
        self.backend: Backend | None = None
        self.conn: UpstreamLink | None = None
        self.pending: list[bytes] = []  # request body while no upstream is connected
        self.pending_size = 0
        self.upgrade_rest = b""  # bytes after an upgrade request's head, until the 101
        self.request_id = b""
        self.started = rt.loop.time()  # 0.0 once counted (metrics, access log)
        self.status = 0  # of the response sent (0: none yet)
        self.sent = 0  # response body bytes
        self.upstream_at = 0.0  # when the app's response head arrived
        self.cold_wait = -1.0  # seconds waited for a cold start (-1: none)
        self.counted = False  # in the client's concurrent-request count
        self.encoder: Encoder | None = None  # compresses the response body
        self.client_ip = client.peer_ip  # the client as the app sees it (clientaddr)
        self.proto = client.proto

    # --- answers ------------------------------------------------------------------------
    def _simple(
        self,
        status: int,
        body: bytes = b"",
        *,
        extra: tuple[tuple[str, str], ...] = (),
        content_type: str = "text/plain; charset=utf-8",
    ) -> bytes:
        return simple_response(
            status,
            body,
            close=not self.keep_alive,
            extra=extra,
            content_type=content_type,
            head_only=self.is_head,
        )

    # --- proxying -----------------------------------------------------------------------
    def _dispatch(self, key: str, backends: tuple[Backend, ...]) -> None:
        rt = self.rt
        backend = self.backend = rt.begin_request(key, backends)
        self.client.set_deadline(rt.now + rt.config.response_timeout)
        addr = (backend.host, backend.port)
        conn = rt.pool.take(addr)
        if conn is not None:
            self._send(conn)
        else:
            rt.pool.wait(addr, self)  # upstream_ready or upstream_unavailable follows

    # --- the pool's answers (links.PoolWaiter) --------------------------------------------
    def upstream_ready(self, conn: UpstreamLink) -> bool:
        """A connection for this request, which waited in line; False when the request
        no longer wants one (answered, or its client left): the pool passes it on."""
        if self.backend is None or self.client.closed or self.response_done or self.finished:
            return False
        self._send(conn)
        return True

    def upstream_unavailable(self, exc: Exception) -> None:
        """No connection: a connect failed, or none came within the connect timeout."""
        backend = self.backend
        if backend is None or self.client.closed or self.response_done or self.finished:
            return
        self.rt.meter.count("upstream_connect_errors", self.key)
        self._fail(
            502,
            f"cannot connect to instance {backend.instance_id} "
            f"({backend.host}:{backend.port}): {exc!r}",
        )

    def _send(self, conn: UpstreamLink) -> None:
        head = self.head
        assert head is not None
        self.conn = conn
        client = self.client
        origin_form = self.path.encode("latin-1") + self.query
        request = upstream_request(
            self.method,
            origin_form,
            head,
            self.client_ip,
            self.proto,
            self.request_id,
        )
        conn.start(self, client, request, self.is_head)
        if self.pending:
            for chunk in self.pending:
                conn.write(chunk)
            self.pending = []
            if self.pending_size > self.rt.config.buffer_limit:
                client.unblock_reading(BODY_BUFFERED)
            self.pending_size = 0

    def _fail(self, status: int, detail: str) -> None:
        """The upstream side failed: generic answer to the client, details to the app log."""
        if self.key is not None:
            self.rt.app_log(
                self.key, f"edge: {status} for {self.method.decode()} {self.path}: {detail}"
            )
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if self.failed() == ABORT:
            self.client.abort()
            self._end_activity()
            return
        self.respond(self._simple(status))

    # --- upstream events (links.ExchangeLink) ---------------------------------------------
    def upstream_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if self.forwards_interim(status):
            self.client.write(upgrade_response(status, reason, []))

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.upstream_at = self.rt.loop.time()
        if self.rt.draining and self.keep_alive:
            self.close_after()  # Connection: close, so the client asks the next edge
        self.client.set_deadline(0.0)
        self.client.write(self.response_head(status, reason, headers))
        if self.encoding:
            self.encoder = Encoder(self.encoding)

    def upstream_body(self, data: bytes) -> None:
        if self.no_body:
            return
        if self.encoder is not None:
            data = self.encoder.chunk(data)
            if not data:
                return
        self.sent += len(data)
        if self.chunked:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def upstream_complete(self, conn: UpstreamLink, keep_alive: bool) -> None:
        encoder = self.encoder
        if encoder is not None:
            self.encoder = None
            tail = encoder.finish()
            if tail:
                self.sent += len(tail)
                self.client.write(b"%x\r\n%b\r\n" % (len(tail), tail) if self.chunked else tail)
        if self.chunked:
            self.client.write(b"0\r\n\r\n")
        self.conn = None
        act = self.response_complete(keep_alive, self.rt.config.buffer_limit)
        if act & REUSE:
            conn.release()
        else:
            conn.close()
        self._end_activity()
        self._settle(act)

    def upstream_spliced(self, rest: bytes) -> None:
        """The upstream switched protocols: splice raw bytes both ways from now on."""
        conn = self.conn
        assert conn is not None
        self.spliced()
        if rest:
            self.client.write(rest)
        self.client.start_splice(conn, self.upgrade_rest)
        self.upgrade_rest = b""

    def upstream_failed(self, conn: UpstreamLink, detail: str) -> None:
        self._fail(502, detail)

    def upstream_lost(self, conn: UpstreamLink, exc: Exception | None) -> None:
        """The instance closed the connection before the response ended."""
        act = self.upstream_closed(conn.reused, conn.got_bytes)
        if act == SPLICE_END:
            self._end_activity()
            self.client.abort_after_write()
        elif act == COMPLETE:
            self.upstream_complete(conn, False)  # a close-delimited body ends here
        elif act == RETRY:
            self.conn = None
            head = self.head
            if self.request_done and head is not None and head.chunked:
                # the body was empty (or there is no retry), so its end marker is all of it:
                # the stale connection took it, the new one needs it again
                self.pending = [b"0\r\n\r\n"]
            backend = self.backend  # a stale pooled connection: a fresh or released one
            if backend is not None:
                self.rt.pool.wait((backend.host, backend.port), self)
        else:
            self.conn = None
            self._fail(502, f"instance closed the connection early ({exc!r})")

    def upgrade_ended(self) -> None:
        """The edge closed this upgraded (spliced) exchange itself (its drain budget)."""
        self.conn = None
        self._end_activity()
        self.client_lost()

    def upstream_timeout(self) -> None:
        self._fail(504, f"no response within {self.rt.config.response_timeout:.0f}s")

    # --- completion ---------------------------------------------------------------------
    def respond(self, data: bytes) -> None:
        """Write a complete edge-generated response."""
        if self.response_done or self.client.closed:
            return
        self.response_begin()
        self.status = int(data[9:12])
        self.sent += len(data) - data.find(b"\r\n\r\n") - 4
        self.client.set_deadline(0.0)
        self.client.write(data)
        self._end_activity()
        self.respond_done()

    def respond_done(self) -> None:
        """The last byte of the response was written (also for streamed static files)."""
        self._settle(self.response_end(self.rt.config.buffer_limit))

    def _settle(self, act: int) -> None:
        """Carry out ``WAIT_REST`` and ``FINISH`` after the response or the request ended."""
        client = self.client
        if act & WAIT_REST:
            client.set_deadline(self.rt.now + self.rt.config.header_timeout)
        if not self.request_done:  # the unread rest of the body is not forwarded
            if self.pending_size > self.rt.config.buffer_limit:
                client.unblock_reading(BODY_BUFFERED)
            self.pending, self.pending_size = [], 0
        if act & FINISH:
            self.pending = []
            client.exchange_done(self)

    def _end_activity(self) -> None:
        """The exchange is over for the app: in-flight, metrics and access log (once)."""
        backend, self.backend = self.backend, None
        rt = self.rt
        if backend is not None and self.key is not None:
            rt.end_request(self.key, backend.instance_id)
        if self.counted:
            self.counted = False
            rt.client_request_done(self.client.peer_ip)
        if self.started:
            rt.finished(self, backend.instance_id if backend is not None else -1)
            self.started = 0.0
