"""One request/response exchange on a client connection: the I/O shell over the decision
(:func:`.decide.decide`) and the state (:class:`.lifecycle.ExchangeState`).

Rules:

- This module only moves bytes: where a request goes comes from :func:`.decide.decide`,
  keep-alive/finish/retry/close from the :class:`~.lifecycle.ExchangeState` that
  :class:`Exchange` extends through :class:`~.proxy.ProxyExchange` (subclasses, so the
  hot path pays no extra object or attribute hop). It calls the state's event methods
  and never assigns the state's fields.
- Here: the request side (head, body, end, early upgrade bytes), carrying out the
  decision (edge answers, ACME challenges, static files, cold starts); the upstream side
  is :mod:`.proxy`. Other shells are reached only through :mod:`.links` and the
  runtime's methods.
- Request bytes wait in a small buffer only while the upstream is not connected yet;
  the client is paused (``Pause.BODY_BUFFERED``) past ``buffer_limit``.
- Static files: small ones in one write, large ones pumped while the client can take
  them (:mod:`.staticsend`). Cold-start failures answer 503 (queue full, with
  ``Retry-After``), 504 (not ready in time) or 502.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clientaddr import AUTO, resolve
from .decide import (
    CHALLENGE,
    COLD_START,
    IMAGE,
    MAINTENANCE,
    NOT_FOUND,
    PROXY,
    REDIRECT,
    STATIC,
    STATUS,
    Route,
    app_route,
    decide,
)
from .hooks import ColdStartError, ColdStartKind
from .images import serve_image
from .lifecycle import TOO_LARGE, ExchangeState
from .links import ClientLink
from .maintenance import serve_maintenance
from .policy import (
    Rejected,
    RequestHead,
    inspect_request,
    redirect_response,
    simple_response,
    split_target,
)
from .proxy import BODY_BUFFERED, ProxyExchange
from .snapshot import RoutedApp
from .static import precompressed, resolve_static
from .staticsend import StaticStream, static_response

if TYPE_CHECKING:
    from .runtime import EdgeRuntime

RETRY_AFTER = (("Retry-After", "1"),)
_REFUSED_METHODS = frozenset({b"CONNECT", b"TRACE", b"TRACK"})  # 405: never forwarded
ALLOW = (("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),)
STATUS_BODY = b'{"status":"ok"}'


def cold_start_answer(kind: ColdStartKind) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Status and extra headers for a cold-start failure (pure)."""
    if kind is ColdStartKind.REJECTED:
        return 503, RETRY_AFTER
    if kind is ColdStartKind.TIMEOUT:
        return 504, ()
    return 502, ()


class Exchange(ProxyExchange):
    """A request parsed from the client and the work of answering it."""

    __slots__ = ("target", "rejected", "stream")

    def __init__(
        self,
        rt: EdgeRuntime,
        client: ClientLink,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http11: bool,
    ) -> None:
        ProxyExchange.__init__(self, rt, client, method)
        self.target = target
        self.rejected: Rejected | None = None
        self.stream: StaticStream | None = None
        head = None
        try:
            head = inspect_request(headers, http11)
            self.path, self.query = split_target(target, head.host)
            if method in _REFUSED_METHODS:
                raise Rejected(405, f"{method.decode('latin-1')} is not supported")
        except Rejected as exc:
            self.rejected = exc
        rejected = self.rejected is not None
        self.request_id = (head.request_id if head is not None else b"") or rt.request_id()
        keep_alive = keep_alive and not rt.draining
        ExchangeState.__init__(self, head, rejected, keep_alive, http11, method == b"HEAD")

    def __repr__(self) -> str:
        return f"Exchange({self.method.decode()} {self.target[:80]!r}, key={self.key})"

    # --- request side -------------------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        act = self.body(len(data), self.rt.config.max_body)
        if act:
            if act == TOO_LARGE:
                self._body_too_large()
            return  # DISCARD: answered already, the rest of the body is dropped
        head = self.head
        if head is not None and head.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self.conn is not None:
            self.conn.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > self.rt.config.buffer_limit:
            self.client.block_reading(BODY_BUFFERED)

    def feed_end(self) -> None:
        head = self.head
        if head is not None and head.chunked and not self.response_done:
            if self.conn is not None:
                self.conn.write(b"0\r\n\r\n")
            else:
                self.pending.append(b"0\r\n\r\n")
        act = self.end()
        if act:
            self._settle(act)

    def feed_upgrade(self, rest: bytes) -> None:
        """Bytes after an upgrade request head (early frames) wait for the 101."""
        self.upgrade_rest += rest

    def _body_too_large(self) -> None:
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
            status = self.rejected.status
            self.respond(simple_response(status, close=True, extra=ALLOW if status == 405 else ()))
            return
        rt, head = self.rt, self.head
        assert head is not None
        if self.client.over_limit or not rt.client_request(self.client.peer_ip):
            self._limited()
            return
        self.counted = True
        tls, port = self.client.proto == b"https", rt.config.https_port
        if head.xff is not None or head.xfp is not None or head.cf_ip is not None:
            tls = self._resolve_client(head) or tls
        kind, detail = decide(self.method, head, self.path, self.query, tls, rt.state, port)
        if kind is PROXY:
            app = detail[1]
            self.key = app.key
            self._dispatch(app.key, app.backends)
        elif kind is REDIRECT:
            self.respond(
                redirect_response(detail, head_only=self.is_head, close=not self.keep_alive)
            )
        elif kind is CHALLENGE:
            self._serve_challenge(detail)
        elif kind is STATUS:
            self.respond(self._simple(200, STATUS_BODY, content_type="application/json"))
        elif kind is NOT_FOUND:
            self.respond(self._simple(404))
        elif kind is MAINTENANCE:
            self.key = detail[1].key
            serve_maintenance(self, detail)
        elif kind is IMAGE:
            self.key = detail[1].key
            serve_image(self, detail)
        else:
            match, app = detail
            self.key = app.key
            if kind is STATIC:
                if self._serve_static(app, match.prefix):
                    return
                kind = app_route(app)
            self._reach(kind, app)

    def _resolve_client(self, head: RequestHead) -> bool:
        """The client address and scheme by the app's ``source_ip`` (only for requests
        that carry forwarding headers); True when a believed proxy says HTTPS."""
        rt, client = self.rt, self.client
        found = rt.state.route(head.host, self.path)
        mode = found[1].source_ip if found is not None else AUTO
        ip, proto = resolve(
            mode, client.peer_ip, head.xff, head.xfp, head.cf_ip, rt.trusted, rt.cloudflare
        )
        self.client_ip = ip
        if proto is None:
            return False
        self.proto = proto
        return proto == b"https"

    def _limited(self) -> None:
        """429 for a client over its per-address cap (connections: then close)."""
        if self.client.over_limit:
            self.close_after()
        self.rt.meter.count("limited", None)
        self.respond(self._simple(429, b"too many requests from this address\n", extra=RETRY_AFTER))

    def _serve_challenge(self, token: str | None) -> None:
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

    # --- static files -------------------------------------------------------------------
    def _serve_static(self, app: RoutedApp, prefix: str) -> bool:
        """Answer from the app's ``public/`` if a file matches; False: ask the app."""
        assert app.public_dir is not None and self.head is not None
        try:
            found = resolve_static(app.public_dir, self.path, prefix)
        except Rejected as exc:
            self.respond(self._simple(exc.status))
            return True
        if found is None:
            return False
        found = precompressed(found, self.head.accept)
        answer = static_response(
            found, self.head.if_none_match, close=not self.keep_alive, head_only=self.is_head
        )
        if answer is None:
            return False
        data, stream = answer
        if stream is None:
            self.respond(data)
        else:
            self.status, self.sent = 200, found.size
            self.response_begin()
            self.client.set_deadline(0.0)
            self.client.write(data)
            self.stream = stream
            self._pump(stream)
        self.rt.touch(app.key)
        return True

    def _pump(self, stream: StaticStream) -> None:
        done = stream.pump(self.client)
        if done > 0:
            self.stream = None
            self._end_activity()
            self.respond_done()
        elif done < 0:
            self.client.abort()  # the file shrank: its announced length cannot be kept

    # --- proxying -----------------------------------------------------------------------
    def _reach(self, kind: Route, app: RoutedApp) -> None:
        if kind is PROXY:
            self._dispatch(app.key, app.backends)
        elif kind is COLD_START:
            self.client.set_deadline(0.0)
            self.rt.spawn(self._cold_start(app.key), name=f"edge-cold-start-{app.key}")
        else:
            self.rt.app_log(app.key, f"edge: 503 for {self.path}: no healthy instance")
            self.respond(self._simple(503, extra=RETRY_AFTER))

    async def _cold_start(self, key: str) -> None:
        began = self.rt.loop.time()
        try:
            backends = await self.rt.hooks.cold_start(key)
        except ColdStartError as exc:
            self.cold_wait = self.rt.loop.time() - began
            status, extra = cold_start_answer(exc.kind)
            self.rt.app_log(key, f"edge: {status} for {self.path}: cold start: {exc}")
            self.respond(self._simple(status, extra=extra))
            return
        except Exception as exc:  # the main process went away or answered garbage
            self.cold_wait = self.rt.loop.time() - began
            self.rt.app_log(key, f"edge: 502 for {self.path}: cold start: {exc!r}")
            self.respond(self._simple(502))
            return
        self.cold_wait = self.rt.loop.time() - began
        if self.client.closed:
            return
        if not backends:
            self.respond(self._simple(503, extra=RETRY_AFTER))
            return
        self._dispatch(key, tuple(backends))

    def on_client_writable(self, writable: bool) -> None:
        if self.conn is not None:
            self.conn.set_reading(writable)
        elif writable and self.stream is not None:
            self._pump(self.stream)

    def abandon(self) -> None:
        """The client went away: drop the upstream side."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        self._end_activity()
        self.client_lost()
