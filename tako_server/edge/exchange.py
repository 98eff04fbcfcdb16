"""One request/response exchange on a client connection: decide, then answer or proxy.

Rules:

- Decisions come from the pure modules (:mod:`.policy`, :mod:`.static`, the route
  table); this module only moves bytes. Order of checks: framing/limits (400/413),
  ACME challenge, HTTPS redirect, ``tako.internal/status``, route (404), static file,
  then the app (cold start if needed, least-connections backend, pooled connection).
- Bodies stream both ways with backpressure and are never collected whole: request
  bytes wait in a small buffer only while the upstream is not connected yet (the client
  is paused past ``buffer_limit``), response bytes go straight to the client socket
  (the upstream is paused while the client's buffer is full).
- The client sees generic 502/503/504 bodies; the details go to the app log.
- An exchange is finished when both its response was written and its request was read
  to the end; the connection then moves on to the next (pipelined) request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tako_common.hosts import (
    acme_challenge_token,
    is_acme_challenge_path,
    is_internal_status_request,
)

from . import policy
from .policy import Rejected, RequestHead, simple_response
from .snapshot import AppState, Backend
from .staticsend import StaticStream, serve_static

if TYPE_CHECKING:
    from .protocol import ClientProtocol
    from .upstream import UpstreamConnection

RETRY_AFTER = (("Retry-After", "1"),)
STATUS_BODY = b'{"status":"ok"}'


class ColdStartError(Exception):
    """A cold start that did not give backends; ``kind`` is rejected, failed or timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def cold_start_answer(kind: str) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Status and extra headers for a cold-start failure (pure)."""
    if kind == "rejected":
        return 503, RETRY_AFTER
    if kind == "timeout":
        return 504, ()
    return 502, ()


class Exchange:
    """A request parsed from the client and the work of answering it."""

    __slots__ = (
        "client",
        "rt",
        "method",
        "target",
        "head",
        "rejected",
        "keep_alive",
        "http11",
        "is_head",
        "path",
        "query",
        "key",
        "backend",
        "conn",
        "pending",
        "pending_size",
        "request_done",
        "body_size",
        "response_started",
        "response_done",
        "chunked",
        "close",
        "no_body",
        "until_close",
        "finished",
        "sent_all",
        "upgrade_rest",
        "stream",
    )

    def __init__(
        self,
        client: ClientProtocol,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http11: bool,
    ) -> None:
        self.client = client
        self.rt = client.rt
        self.method = method
        self.target = target
        self.keep_alive = keep_alive and not self.rt.draining
        self.http11 = http11
        self.is_head = method == b"HEAD"
        self.head: RequestHead | None = None
        self.rejected: Rejected | None = None
        self.path = "/"
        self.query = b""
        self.key: str | None = None
        self.backend: Backend | None = None
        self.conn: UpstreamConnection | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.request_done = False
        self.body_size = 0
        self.response_started = self.response_done = self.finished = False
        self.chunked = self.close = self.no_body = self.until_close = False
        self.sent_all = False
        self.upgrade_rest = b""
        self.stream: StaticStream | None = None
        try:
            self.head = policy.inspect_request(headers, http11)
            self.path, self.query = policy.split_target(target, self.head.host)
            if method == b"CONNECT":
                raise Rejected(405, "CONNECT is not supported")
        except Rejected as exc:
            self.rejected = exc
            self.keep_alive = False
            return

    def __repr__(self) -> str:
        return f"Exchange({self.method.decode()} {self.target[:80]!r}, key={self.key})"

    # --- request side -------------------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size > self.rt.config.max_body:
            self._body_too_large()
            return
        if self.response_done:
            return  # answered already: the rest of the body is discarded
        if self.head is not None and self.head.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self.conn is not None:
            self.conn.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > self.rt.config.buffer_limit:
            self.client.block_reading(2)

    def feed_end(self) -> None:
        self.request_done = True
        if self.head is not None and self.head.chunked and not self.response_done:
            if self.conn is not None:
                self.conn.write(b"0\r\n\r\n")
            else:
                self.pending.append(b"0\r\n\r\n")
        if self.conn is not None:
            self.sent_all = True
        if self.response_done:
            self._finish()

    def feed_upgrade(self, rest: bytes) -> None:
        """Bytes after an upgrade request head (early frames) wait for the 101."""
        self.upgrade_rest += rest

    def _body_too_large(self) -> None:
        self.keep_alive = False
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if not self.response_started:
            self.respond(simple_response(413, close=True))
        self.client.abort_after_write()

    # --- decision -----------------------------------------------------------------------
    def start(self) -> None:
        """Called when this exchange becomes the active one on its connection."""
        if self.rejected is not None:
            self.respond(simple_response(self.rejected.status, close=True))
            return
        head = self.head
        assert head is not None
        host, path, rt = head.host, self.path, self.rt
        if is_acme_challenge_path(path):
            self._serve_challenge(path)
            return
        if policy.should_redirect(self.client.is_tls, host, path):
            location = policy.redirect_location(host, path, self.query, rt.config.https_port)
            self.respond(
                policy.redirect_response(
                    location, head_only=self.is_head, close=not self.keep_alive
                )
            )
            return
        if is_internal_status_request(host, path):
            self.respond(self._simple(200, STATUS_BODY, content_type="application/json"))
            return
        found = rt.state.route(host, path)
        if found is None:
            self.respond(self._simple(404))
            return
        match, app = found
        self.key = app.key
        if app.public_dir is not None and (self.method in (b"GET", b"HEAD")):
            try:
                if serve_static(self, app.public_dir, path, match.prefix):
                    rt.activity.touch(app.key)
                    return
            except Rejected as exc:
                self.respond(self._simple(exc.status))
                return
        self._proxy(app)

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

    def _serve_challenge(self, path: str) -> None:
        token = acme_challenge_token(path)
        if token is None:
            self.respond(self._simple(404, b"challenge token not found\n"))
            return
        self.rt.spawn(self._answer_challenge(token), name=f"edge-acme-{token[:16]}")

    async def _answer_challenge(self, token: str) -> None:
        try:
            answer = await self.rt.hooks.challenge(token)
        except Exception:
            answer = None
        if answer is None:
            self.respond(self._simple(404, b"challenge token not found\n"))
        else:
            self.respond(self._simple(200, answer.encode("ascii")))

    # --- proxying -----------------------------------------------------------------------
    def _proxy(self, app: AppState) -> None:
        if app.backends:
            self._dispatch(app.key, app.backends)
        elif app.cold_start:
            self.client.set_deadline(0.0)
            self.rt.spawn(self._cold_start(app.key), name=f"edge-cold-start-{app.key}")
        else:
            self.rt.app_log(app.key, f"edge: 503 for {self.path}: no healthy instance")
            self.respond(self._simple(503, extra=RETRY_AFTER))

    async def _cold_start(self, key: str) -> None:
        try:
            backends = await self.rt.hooks.cold_start(key)
        except ColdStartError as exc:
            status, extra = cold_start_answer(exc.kind)
            self.rt.app_log(key, f"edge: {status} for {self.path}: cold start: {exc}")
            self.respond(self._simple(status, extra=extra))
            return
        except Exception as exc:  # the main process went away or answered garbage
            self.rt.app_log(key, f"edge: 502 for {self.path}: cold start: {exc!r}")
            self.respond(self._simple(502))
            return
        if self.client.closed:
            return
        if not backends:
            self.respond(self._simple(503, extra=RETRY_AFTER))
            return
        self._dispatch(key, tuple(backends))

    def _dispatch(self, key: str, backends: tuple[Backend, ...]) -> None:
        rt = self.rt
        activity = rt.activity
        rt.turn += 1
        backend = policy.choose_backend(backends, activity.in_flight(key), rt.turn)
        self.backend = backend
        activity.begin(key, backend.instance_id)
        rt.activity_changed()
        self.client.set_deadline(rt.now + rt.config.response_timeout)
        conn = rt.pool.take((backend.host, backend.port))
        if conn is not None:
            self._send(conn)
        else:
            rt.spawn(self._connect(), name=f"edge-connect-{backend.host}:{backend.port}")

    async def _connect(self) -> None:
        backend = self.backend
        assert backend is not None
        try:
            conn = await self.rt.pool.connect((backend.host, backend.port))
        except (OSError, TimeoutError) as exc:
            self._fail(
                502,
                f"cannot connect to instance {backend.instance_id} "
                f"({backend.host}:{backend.port}): {exc!r}",
            )
            return
        if self.client.closed or self.response_done:
            self.rt.pool.put(conn)
            return
        self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        head = self.head
        assert head is not None
        self.conn = conn
        origin_form = self.path.encode("latin-1") + self.query
        request = policy.upstream_request(
            self.method, origin_form, head, self.client.peer_ip, self.client.proto
        )
        conn.start(self, request, self.is_head)
        if self.pending:
            for chunk in self.pending:
                conn.write(chunk)
            self.pending = []
            if self.pending_size > self.rt.config.buffer_limit:
                self.client.unblock_reading(2)
            self.pending_size = 0
        if self.request_done:
            self.sent_all = True

    def _fail(self, status: int, detail: str) -> None:
        """The upstream side failed: generic answer to the client, details to the app log."""
        if self.key is not None:
            self.rt.app_log(
                self.key, f"edge: {status} for {self.method.decode()} {self.path}: {detail}"
            )
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if self.response_started:
            self.client.abort()
            self._end_activity()
            return
        self.keep_alive = False
        self.respond(self._simple(status))

    # --- upstream events ------------------------------------------------------------------
    def upstream_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if self.http11 and status == 100:
            self.client.write(policy.upgrade_response(status, reason, []))

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.client.set_deadline(0.0)
        self.response_started = True
        if status == 101:
            self.client.write(policy.upgrade_response(status, reason, headers))
            return
        if self.head is not None and self.head.websocket:
            self.keep_alive = False  # the client expected a switch; do not reuse
        framing = policy.client_response(
            status,
            reason,
            headers,
            head_request=self.is_head,
            client_http11=self.http11,
            keep_alive=self.keep_alive,
        )
        self.chunked, self.no_body = framing.chunked, framing.no_body
        self.until_close = framing.until_close
        if framing.close:
            self.keep_alive = False
        self.client.write(framing.head)

    def upstream_body(self, data: bytes) -> None:
        if self.no_body:
            return
        if self.chunked:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def upstream_complete(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        if self.chunked:
            self.client.write(b"0\r\n\r\n")
        self.conn = None
        if keep_alive and self.sent_all:
            self.rt.pool.put(conn)
        else:
            conn.close()
        self._end_activity()
        self.response_done = True
        if not self.request_done:
            self.keep_alive = False
        self._maybe_finish()

    def upstream_spliced(self, rest: bytes) -> None:
        """The upstream switched protocols: splice raw bytes both ways from now on."""
        conn = self.conn
        assert conn is not None
        if rest:
            self.client.write(rest)
        self.client.start_splice(conn, self.upgrade_rest)
        self.upgrade_rest = b""

    def upstream_failed(self, conn: UpstreamConnection, detail: str) -> None:
        self._fail(502, detail)

    def upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        """The instance closed the connection before the response ended."""
        if self.client.splice is not None:
            self._end_activity()
            self.client.abort_after_write()
            return
        if self.until_close and self.response_started:
            self.upstream_complete(conn, False)  # a close-delimited body ends here
            return
        if conn.reused and not conn.got_bytes and not self.response_started and not self.body_size:
            self.conn = None
            self.rt.spawn(self._connect(), name="edge-reconnect")  # stale pooled connection
            return
        self.conn = None
        self._fail(502, f"instance closed the connection early ({exc!r})")

    def upstream_timeout(self) -> None:
        self._fail(504, f"no response within {self.rt.config.response_timeout:.0f}s")

    def on_client_writable(self, writable: bool) -> None:
        if self.conn is not None:
            self.conn.set_reading(writable)
        elif writable and self.stream is not None:
            self.stream.pump()

    # --- completion ---------------------------------------------------------------------
    def respond(self, data: bytes) -> None:
        """Write a complete edge-generated response."""
        if self.response_done or self.client.closed:
            return
        self.response_started = True
        self.client.set_deadline(0.0)
        self.client.write(data)
        self._end_activity()
        self.respond_done()

    def respond_done(self) -> None:
        """The last byte of the response was written (also for streamed static files)."""
        self.response_done = True
        self.stream = None
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if not self.request_done:
            head = self.head
            left = (head.content_length or 0) - self.body_size if head is not None else 0
            if head is None or head.chunked or left > self.rt.config.buffer_limit:
                self.keep_alive = False  # do not read a large unwanted body: close instead
            else:  # a small rest may still come, but not forever (slowloris on bodies)
                self.client.set_deadline(self.rt.now + self.rt.config.header_timeout)
            if self.pending_size > self.rt.config.buffer_limit:
                self.client.unblock_reading(2)
            self.pending, self.pending_size = [], 0
        if self.request_done or not self.keep_alive:
            self._finish()

    def has_unread_body(self) -> bool:
        """Whether request body bytes may still arrive on the connection."""
        if self.request_done:
            return False
        head = self.head
        if head is None or head.chunked:
            return True
        return (head.content_length or 0) > self.body_size

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.pending = []
        self.client.exchange_done(self)

    def _end_activity(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None and self.key is not None:
            self.rt.activity.end(self.key, backend.instance_id)
            self.rt.activity_changed()

    def abandon(self) -> None:
        """The client went away: drop the upstream side."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        self._end_activity()
        self.finished = True
